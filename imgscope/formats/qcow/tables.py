"""qcow v1 L1/L2 tables decoded into the neutral model: guest map, block status, references.

qemu uses table entries as they are (``get_cluster_offset`` masks nothing off
an uncompressed entry and validates no offset), so imgscope maps them the
same way and leaves judging them to :mod:`.check`.  Compressed clusters and
every cluster of an AES-encrypted image are DATA without a host offset in
``qemu-img map``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...extents import Extents
from ...limits import enforce
from ...model import COMPRESSED, DATA, UNALLOCATED, GuestMap
from ...refrows import RefRows, ranges
from ..qcow2.status import unit_status
from ..twolevel import guest_entries, load_l2
from . import layout as L

_U = np.uint64


def classify(raw: np.ndarray, cluster_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kind, host offset, host length, flags) of raw L2 entries."""
    cs = 1 << cluster_bits
    comp = (raw & _U(L.OFLAG_COMPRESSED)) != 0
    data = (raw != 0) & ~comp
    kind = np.full(len(raw), UNALLOCATED, np.uint8)
    kind[data] = DATA
    kind[comp] = COMPRESSED
    shift = 63 - cluster_bits
    host = np.where(comp, raw & _U((1 << shift) - 1), np.where(data, raw, _U(0)))
    length = np.where(comp, (raw >> _U(shift)) & _U(cs - 1), np.where(data, _U(cs), _U(0)))
    flags = np.zeros(len(raw), np.uint8)
    flags[data & ((raw & _U(cs - 1)) != 0)] |= native.F_UNALIGNED
    return kind, host, length, flags


class QcowTables:
    """The decoded L1 table and every L2 table it names."""

    def __init__(self, img: Any) -> None:
        self.img = img
        h = img.h
        self.cb = h.cluster_bits
        self.cs = 1 << self.cb
        self.nelems = 1 << h.l2_bits
        self.table_bytes = self.nelems * 8
        self.l1_offset = h.l1_table_offset
        n = img.l1_size
        #: qemu writes the L1 table in whole sectors: the padding belongs to it
        self.l1_bytes = -(-n * 8 // 512) * 512
        self.l1 = native.be64(img.src.read(self.l1_offset, n * 8, "qcow L1 table", zero_fill=True), n,
                              "qcow L1 table", self.l1_offset)
        self.store = load_l2(img.src, self.l1, self.l1 != 0, self.nelems, self.table_bytes, native.be64,
                             "qcow L2 table")

    def guest_map(self) -> GuestMap:
        vsize = self.img.virtual_size
        nclusters = enforce("max_guest_clusters", -(-vsize // self.cs), "qcow guest map")
        raw, _ = guest_entries(self.store, self.nelems, nclusters)
        kind, host, length, flags = classify(raw, self.cb)
        need = min(len(self.l1), -(-nclusters // self.nelems))
        return GuestMap(layer="active", cluster_size=self.cs, virtual_size=vsize, kind=kind, host=host,
                        length=length, flags=flags, alloc=None, zero=None, table=self.l1[:need].copy())

    def extents(self) -> Extents:
        """Block status as qemu's qcow_co_block_status reports it."""
        gm = self.guest_map()
        unit, status, offset = unit_status(gm, self.img.encrypted)
        return Extents.from_units(unit, status, offset, gm.virtual_size)

    def table_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every entry of every L2 table, once per L1 entry naming the table:
        (L1 index, entry index, raw entry, L2 table offset)."""
        used = np.flatnonzero(self.l1)
        n = self.nelems
        l1i = np.repeat(used, n)
        j = np.tile(np.arange(n, dtype=np.int64), len(used))
        raw = self.store.tables[self.store.slot[used]].reshape(-1) if len(used) else np.zeros(0, _U)
        return l1i, j, raw, self.l1[l1i]

    def reference_rows(self) -> RefRows:
        """Header (and backing name), the L1 table, every L2 table and every data or compressed cluster."""
        h = self.img.h
        parts: list[tuple] = [ranges(0, L.HEADER_SIZE, "header"), ranges(self.l1_offset, self.l1_bytes, "l1", 0)]
        if h.backing_file_offset:
            parts.append(ranges(h.backing_file_offset, h.backing_file_size, "header"))
        parts.append(ranges(self.l1[self.l1 != 0], self.table_bytes, "l2", 0))
        _, _, raw, _ = self.table_entries()
        kind, host, length, _ = classify(raw, self.cb)
        for k, role in ((DATA, "data"), (COMPRESSED, "compressed")):
            sel = kind == k
            parts.append(ranges(host[sel], length[sel], role, 0))
        return RefRows.join(parts)
