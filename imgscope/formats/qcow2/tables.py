"""Bulk qcow2 tables: L1, L2 and refcount structures decoded into numpy arrays.

Each distinct L2 table is read and decoded once, however many layers (active
L1 and snapshot L1s) point at it; layers then index into the shared store.
Reads past EOF return zeros, as qemu's block layer does.
"""
from __future__ import annotations

import numpy as np

from ... import native
from ...io import Source
from ...limits import LIMITS, enforce
from ...model import GuestMap
from . import layout as L
from .metadata import Qcow2Metadata

_U = np.uint64


def _runs(sorted_offsets: np.ndarray, step: int) -> list[tuple[int, int, int]]:
    """Group sorted offsets into (first index, count, start offset) runs of adjacent tables."""
    if not len(sorted_offsets):
        return []
    brk = np.ones(len(sorted_offsets), bool)
    brk[1:] = np.diff(sorted_offsets.astype(np.int64)) != step
    starts = np.flatnonzero(brk)
    counts = np.diff(np.append(starts, len(sorted_offsets)))
    return [(int(s), int(c), int(sorted_offsets[s])) for s, c in zip(starts, counts)]


class Qcow2Tables:
    """Decoded lookup and refcount tables of one qcow2 file."""

    def __init__(self, src: Source, meta: Qcow2Metadata) -> None:
        self.src = src
        self.meta = meta
        self.cb = meta.cluster_bits
        self.cs = meta.cluster_size
        self.l2e = meta.l2_entries
        self.l2_bytes = self.l2e * (16 if meta.extended_l2 else 8)
        # the L2 store: slot 0 is an all-unallocated table for empty L1 entries
        self._slot: dict[int, int] = {}
        self._chunks: list[native.L2Entries] = [self._empty_table()]
        self._store: native.L2Entries | None = None
        self._decoded_bytes = 0

    # ------------------------------------------------------------------ L1
    def read_l1(self, offset: int, size: int, structure: str) -> np.ndarray:
        enforce("max_l1_bytes", size * 8, structure, offset)
        buf = self.src.read(offset, size * 8, structure, zero_fill=True)
        return native.be64(buf, size, structure, offset)

    def layer_l1(self, layer: str | int | None) -> tuple[np.ndarray, int, str]:
        """(L1 entries, virtual size, layer label) for 'active' or a snapshot (index into the table)."""
        m = self.meta
        if layer is None or layer == "active":
            h = m.header
            return self.read_l1(h.l1_table_offset, h.l1_size, "qcow2 active L1 table"), h.size, "active"
        sn = m.snapshots[int(layer)]
        return (self.read_l1(sn.l1_table_offset, sn.l1_size, f"qcow2 snapshot {sn.id} L1 table"),
                sn.disk_size if sn.disk_size is not None else m.header.size, f"snapshot:{sn.id}")

    # ------------------------------------------------------------------ L2 store
    def _empty_table(self) -> native.L2Entries:
        n = self.l2e
        return native.L2Entries(np.zeros(n, np.uint8), np.zeros(n, _U), np.zeros(n, _U), np.zeros(n, np.uint8),
                                np.zeros(n, np.uint32), np.zeros(n, np.uint32))

    def slots(self, l2_offsets: np.ndarray) -> np.ndarray:
        """Slot in the store of each L2 offset (0 = none); loads tables not seen yet."""
        l2_offsets = np.asarray(l2_offsets, dtype=_U)
        new = np.unique(l2_offsets[l2_offsets != 0])
        new = np.array([o for o in new.tolist() if o not in self._slot], dtype=_U)
        if len(new):
            self._load(new)
        lookup = self._slot
        return np.fromiter((lookup.get(o, 0) for o in l2_offsets.tolist()), dtype=np.int64, count=len(l2_offsets))

    def _load(self, offsets: np.ndarray) -> None:
        n = len(offsets)
        self._decoded_bytes += n * self.l2_bytes
        if self._decoded_bytes > LIMITS["max_metadata_bytes"]:
            enforce("max_metadata_bytes", self._decoded_bytes, "qcow2 L2 tables", int(offsets[0]))
        buf = bytearray(n * self.l2_bytes)
        view = memoryview(buf)
        groups = _runs(offsets, self.l2_bytes)  # adjacent tables are read with one pread
        for _, count, start in groups:
            self.src.advise_willneed(start, count * self.l2_bytes)
        for first, count, start in groups:
            self.src.readinto(view[first * self.l2_bytes:(first + count) * self.l2_bytes], start)
        dec = native.l2_decode(buf, n * self.l2e, self.cb, self.meta.extended_l2, self.meta.has_data_file,
                               "qcow2 L2 tables", int(offsets[0]))
        base = sum(len(c.kind) for c in self._chunks) // self.l2e
        for i, o in enumerate(offsets.tolist()):
            self._slot[o] = base + i
        self._chunks.append(dec)
        self._store = None

    @property
    def store(self) -> native.L2Entries:
        if self._store is None:
            if len(self._chunks) > 1:
                self._chunks = [native.L2Entries(*(np.concatenate(col) for col in zip(*self._chunks)))]
            self._store = self._chunks[0]
        return self._store

    def l2_offsets(self, l1: np.ndarray) -> np.ndarray:
        return l1 & _U(L.L1E_OFFSET_MASK)

    # ------------------------------------------------------------------ guest map
    def guest_map(self, layer: str | int | None = "active") -> GuestMap:
        l1, vsize, label = self.layer_l1(layer)
        nclusters = -(-vsize // self.cs)
        need_l1 = min(len(l1), -(-nclusters // self.l2e))
        slots = self.slots(self.l2_offsets(l1[:need_l1]))
        gc = np.arange(nclusters, dtype=np.int64)
        l1i = gc // self.l2e
        valid = l1i < need_l1
        idx = np.where(valid, slots[np.minimum(l1i, max(need_l1 - 1, 0))] if need_l1 else 0, 0) * self.l2e \
            + gc % self.l2e
        st = self.store
        return GuestMap(
            layer=label, cluster_size=self.cs, virtual_size=vsize,
            kind=st.kind[idx], host=st.host[idx], length=st.length[idx], flags=st.flags[idx],
            alloc=st.alloc[idx] if self.meta.extended_l2 else None,
            zero=st.zero[idx] if self.meta.extended_l2 else None,
            table=self.l2_offsets(l1[:need_l1]) if need_l1 else np.zeros(0, _U),
            subclusters=32 if self.meta.extended_l2 else 1,
        )

    # ------------------------------------------------------------------ refcounts
    def reftable(self) -> np.ndarray:
        h = self.meta.header
        n = h.refcount_table_clusters * self.cs // 8
        return self.read_l1(h.refcount_table_offset, n, "qcow2 refcount table") if n else np.zeros(0, _U)

    def refcounts(self, nclusters: int | None = None) -> np.ndarray:
        """On-disk refcount of every host cluster covered by the refcount table (uint64).

        Blocks past EOF or unaligned read as qemu reads them (zeros past EOF).
        ``nclusters`` limits the result (default: every cluster of the file).
        """
        order = self.meta.refcount_order
        per_block = self.cs * 8 >> order
        if nclusters is None:
            nclusters = -(-self.src.size // self.cs)
        rt = self.reftable()
        nblocks = min(len(rt), -(-nclusters // per_block)) if nclusters else 0
        out = np.zeros(nblocks * per_block, _U)
        offs = rt[:nblocks] & _U(L.REFT_OFFSET_MASK)
        buf = bytearray(self.cs)
        for i in np.flatnonzero(offs).tolist():
            off = int(offs[i])
            if off >= self.src.size:
                continue
            self.src.readinto(memoryview(buf), off)
            out[i * per_block:(i + 1) * per_block] = native.refblock_decode(buf, order, per_block,
                                                                            f"qcow2 refcount block {i}", off)
        if len(out) < nclusters:
            out = np.concatenate([out, np.zeros(nclusters - len(out), _U)])
        return out[:nclusters]
