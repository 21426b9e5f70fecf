"""QED L1/L2 tables decoded into the neutral model: guest map, block status, references.

Offsets are validated the way qemu validates them before use
(``qed_check_cluster_offset`` / ``qed_check_table_offset``): cluster aligned,
past the header clusters, and before the file size rounded down to a whole
cluster.  An L1 entry that fails leaves its guest range unmapped (flag
F_RESERVED); an L2 entry that fails keeps its kind "data" and gets
F_RESERVED (plus F_UNALIGNED when that is the reason).  ``qemu-img map``
fails on such entries, and so does :meth:`QedTables.extents`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...errors import FormatError
from ...extents import Extents
from ...limits import enforce
from ...model import DATA, UNALLOCATED, ZERO, GuestMap
from ...refrows import RefRows, ranges
from ..qcow2.status import unit_status
from ..twolevel import L2Store, guest_entries, le64, load_l2
from . import layout as L

_U = np.uint64


class QedTables:
    """The decoded L1 table and every valid L2 table of one QED file."""

    def __init__(self, img: Any) -> None:
        self.img = img
        h = img.meta.header
        self.cs = h.cluster_size
        self.ts = h.table_size
        self.nelems = img.meta.nelems
        self.header_bytes = h.header_size * self.cs
        self.file_size = img.meta.file_size
        self.l1_offset = h.l1_table_offset
        self.table_bytes = self.ts * self.cs
        self.l1 = le64(img.src.read(self.l1_offset, self.table_bytes, "qed L1 table", zero_fill=True),
                       self.nelems, "qed L1 table", self.l1_offset)
        self.l1_valid = self.table_ok(self.l1)
        self.store: L2Store = load_l2(img.src, self.l1, (self.l1 != 0) & self.l1_valid, self.nelems,
                                      self.table_bytes, le64, "qed L2 table")

    # ------------------------------------------------------------------ offset tests
    def cluster_ok(self, off: np.ndarray) -> np.ndarray:
        """qed_check_cluster_offset: aligned, after the header clusters, inside the (rounded) file."""
        off = np.asarray(off, _U)
        return ((off & _U(self.cs - 1)) == 0) & (off >= _U(self.header_bytes)) & (off < _U(self.file_size))

    def table_ok(self, off: np.ndarray, qemu: bool = False) -> np.ndarray:
        """Whole table inside the file.  ``qemu=True`` adds qemu's test ``end <= offset``,
        which also rejects every table of a one-cluster table_size."""
        off = np.asarray(off, _U)
        end = off + _U((self.ts - 1) * self.cs)
        ok = self.cluster_ok(off) & self.cluster_ok(end) & (end >= off)
        return ok & (end > off) if qemu else ok

    # ------------------------------------------------------------------ guest map
    def guest_map(self) -> GuestMap:
        cs = self.cs
        nclusters = enforce("max_guest_clusters", -(-self.img.virtual_size // cs), "qed guest map")
        raw, l1i = guest_entries(self.store, self.nelems, nclusters)
        kind = np.full(nclusters, UNALLOCATED, np.uint8)
        kind[raw == L.ENTRY_ZERO] = ZERO
        data = raw > L.ENTRY_ZERO
        kind[data] = DATA
        flags = np.zeros(nclusters, np.uint8)
        flags[data & ((raw & _U(cs - 1)) != 0)] |= native.F_UNALIGNED
        flags[data & ~self.cluster_ok(raw)] |= native.F_RESERVED
        bad_l1 = (self.l1 != 0) & ~self.l1_valid
        flags[bad_l1[np.minimum(l1i, self.nelems - 1)] & (l1i < self.nelems)] |= native.F_RESERVED
        need = min(self.nelems, -(-nclusters // self.nelems))
        return GuestMap(layer="active", cluster_size=cs, virtual_size=self.img.virtual_size, kind=kind,
                        host=np.where(data, raw, _U(0)), length=np.where(data, _U(cs), _U(0)), flags=flags,
                        alloc=None, zero=None, table=np.where(self.l1_valid[:need], self.l1[:need], _U(0)))

    def extents(self) -> Extents:
        """Block status as qemu's bdrv_qed_co_block_status reports it (which fails on invalid offsets)."""
        gm = self.guest_map()
        bad = np.flatnonzero(gm.flags & native.F_RESERVED)
        if len(bad):
            g = int(bad[0])
            l1i = g // self.nelems
            if self.l1[l1i] and not self.l1_valid[l1i]:
                raise FormatError(f"qed L1[{l1i}]", self.l1_offset + 8 * l1i,
                                  f"L2 table offset {int(self.l1[l1i]):#x} is invalid (qemu-img map fails too)")
            raise FormatError(f"qed L2 entry of guest cluster {g}", int(self.l1[l1i]) + 8 * (g % self.nelems),
                              f"cluster offset {int(gm.host[g]):#x} is invalid (qemu-img map fails too)")
        unit, status, offset = unit_status(gm, False)
        return Extents.from_units(unit, status, offset, gm.virtual_size)

    # ------------------------------------------------------------------ references
    def reference_rows(self) -> RefRows:
        """Header clusters, the L1 table, every L2 table (once per L1 entry) and every data cluster."""
        parts: list[tuple] = [ranges(0, self.header_bytes, "header"), ranges(self.l1_offset, self.table_bytes, "l1", 0)]
        used = (self.l1 != 0) & self.l1_valid
        parts.append(ranges(self.l1[used], self.table_bytes, "l2", 0))
        weight = np.bincount(self.store.slot[used], minlength=len(self.store.offsets)).astype(np.uint32)
        if len(weight):
            ent = self.store.tables
            data = ent > L.ENTRY_ZERO
            parts.append(ranges(ent[data], self.cs, "data", 0, np.broadcast_to(weight[:, None], ent.shape)[data]))
        return RefRows.join(parts)
