"""Bulk qcow2 tables: L1, L2 and refcount structures decoded into numpy arrays.

Each distinct L2 table is read and decoded once, however many layers (active
L1 and snapshot L1s) point at it; layers then index into the shared store.
Reads past EOF return zeros, as qemu's block layer does.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ... import native
from ...arrays import unique
from ...io import Source
from ...limits import LIMITS, enforce
from ...model import GuestMap
from . import layout as L
from .metadata import Qcow2Metadata

_U = np.uint64
#: L2 entries decoded at once by streamed walks (map, guest map, check): bounds their memory
CHUNK_ENTRIES = 1 << 16


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
        self._slot_off = np.zeros(1, _U)  # slot -> L2 offset; slot 0 is the empty table
        self._reg_off = np.zeros(0, _U)   # registered offsets, sorted, and their slots
        self._reg_slot = np.zeros(0, np.int64)
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
            return self.read_l1(h.l1_table_offset, h.l1_size, "qcow2 active L1 table"), m.virtual_size, "active"
        sn = m.snapshots[int(layer)]
        return (self.read_l1(sn.l1_table_offset, sn.l1_size, f"qcow2 snapshot {sn.id} L1 table"),
                sn.disk_size if sn.disk_size is not None else m.virtual_size, f"snapshot:{sn.id}")

    # ------------------------------------------------------------------ L2 store
    def _empty_table(self) -> native.L2Entries:
        n = self.l2e
        return native.L2Entries(np.zeros(n, np.uint8), np.zeros(n, _U), np.zeros(n, _U), np.zeros(n, np.uint8),
                                np.zeros(n, np.uint32), np.zeros(n, np.uint32))

    def slots(self, l2_offsets: np.ndarray) -> np.ndarray:
        """Slot of each L2 offset (0 = none), registering offsets not seen yet.

        Registering reads nothing: tables are decoded when :attr:`store` is used,
        or streamed with :meth:`decode_tables` by walks that need no store.
        """
        l2_offsets = np.asarray(l2_offsets, dtype=_U)
        new = unique(l2_offsets[l2_offsets != 0])
        if len(self._reg_off):
            known = self._reg_off[np.minimum(np.searchsorted(self._reg_off, new), len(self._reg_off) - 1)] == new
            new = new[~known]
        if len(new):
            first = len(self._slot_off)
            self._slot_off = np.concatenate([self._slot_off, new])
            off = np.concatenate([self._reg_off, new])
            slot = np.concatenate([self._reg_slot, np.arange(first, first + len(new), dtype=np.int64)])
            order = np.argsort(off, kind="stable")
            self._reg_off, self._reg_slot = off[order], slot[order]
            self._store = None
        if not len(self._reg_off):
            return np.zeros(len(l2_offsets), np.int64)
        pos = np.minimum(np.searchsorted(self._reg_off, l2_offsets), len(self._reg_off) - 1)
        return np.where(l2_offsets != 0, self._reg_slot[pos], 0)

    def slots_many(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """``[self.slots(a) for a in arrays]`` (the same slots, registered in the same order) in a few
        vectorised steps: 1,000 snapshot L1 tables cost one registration, not 1,000."""
        arrays = [np.asarray(a, dtype=_U) for a in arrays]
        if not arrays:
            return []
        allo = np.concatenate(arrays)
        pidx = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
        nz = allo != 0
        cand, cpath = allo[nz], pidx[nz]
        if len(self._reg_off) and len(cand):
            known = self._reg_off[np.minimum(np.searchsorted(self._reg_off, cand), len(self._reg_off) - 1)] == cand
            cand, cpath = cand[~known], cpath[~known]
        if len(cand):
            order = np.lexsort((cpath, cand))  # by offset, then by the first array holding it
            so, sp = cand[order], cpath[order]
            first = np.ones(len(so), bool)
            first[1:] = so[1:] != so[:-1]
            uo, up = so[first], sp[first]
            new = uo[np.lexsort((uo, up))]  # per array, its new offsets sorted: slots()' order
            base = len(self._slot_off)
            self._slot_off = np.concatenate([self._slot_off, new])
            off = np.concatenate([self._reg_off, new])
            slot = np.concatenate([self._reg_slot, np.arange(base, base + len(new), dtype=np.int64)])
            o = np.argsort(off, kind="stable")
            self._reg_off, self._reg_slot = off[o], slot[o]
            self._store = None
        if not len(self._reg_off):
            return [np.zeros(len(a), np.int64) for a in arrays]
        pos = np.minimum(np.searchsorted(self._reg_off, allo), len(self._reg_off) - 1)
        out = np.where(allo != 0, self._reg_slot[pos], 0)
        return np.split(out, np.cumsum([len(a) for a in arrays])[:-1])

    @property
    def slot_offsets(self) -> np.ndarray:
        """Host offset of the L2 table in each slot (slot 0: none)."""
        return self._slot_off

    def decode_tables(self, offsets: np.ndarray, structure: str = "qcow2 L2 tables") -> native.L2Entries:
        """Read and decode the L2 tables at ``offsets`` in that order (adjacent ones with one pread)."""
        n = len(offsets)
        self._decoded_bytes += n * self.l2_bytes
        if self._decoded_bytes > LIMITS["max_metadata_bytes"]:
            enforce("max_metadata_bytes", self._decoded_bytes, structure, int(offsets[0]))
        buf = bytearray(n * self.l2_bytes)
        view = memoryview(buf)
        groups = _runs(offsets, self.l2_bytes)  # adjacent tables are read with one pread
        for _, count, start in groups:
            self.src.advise_willneed(start, count * self.l2_bytes)
        for first, count, start in groups:
            self.src.readinto(view[first * self.l2_bytes:(first + count) * self.l2_bytes], start)
        return native.l2_decode(buf, n * self.l2e, self.cb, self.meta.extended_l2, self.meta.has_data_file,
                                structure, int(offsets[0]) if n else None)

    def table_chunks(self, offsets: np.ndarray, max_entries: int | None = CHUNK_ENTRIES
                     ) -> Iterator[tuple[slice, native.L2Entries]]:
        """Decode the tables at ``offsets`` a chunk at a time: (slice of ``offsets``, their entries).

        ``max_entries`` None decodes them all at once."""
        per = max(1, max_entries // self.l2e if max_entries else len(offsets))
        for a in range(0, len(offsets), per):
            sl = slice(a, min(a + per, len(offsets)))
            yield sl, self.decode_tables(offsets[sl])

    @property
    def store(self) -> native.L2Entries:
        """Every registered table decoded, slot k at rows [k * l2e, (k + 1) * l2e)."""
        if self._store is None:
            done = sum(len(c.kind) for c in self._chunks) // self.l2e
            if done < len(self._slot_off):
                self._chunks.append(self.decode_tables(self._slot_off[done:]))
            if len(self._chunks) > 1:
                self._chunks = [native.L2Entries(*(np.concatenate(col) for col in zip(*self._chunks)))]
            self._store = self._chunks[0]
        return self._store

    def l2_offsets(self, l1: np.ndarray) -> np.ndarray:
        return l1 & _U(L.L1E_OFFSET_MASK)

    # ------------------------------------------------------------------ one layer, streamed
    def layer_windows(self, l1: np.ndarray, nclusters: int) -> Iterator[tuple[int, int, native.L2Entries | None]]:
        """A layer's L2 tables in guest order: (first L1 index, tables, entries or None when all are empty).

        Runs of empty L1 entries come as one window; tables are decoded a chunk at a
        time, so walking a layer holds O(chunk) decoded entries whatever its size.
        """
        need_l1 = min(len(l1), -(-nclusters // self.l2e))
        offs = self.l2_offsets(l1[:need_l1])
        present = offs != 0
        brk = np.flatnonzero(np.diff(present.astype(np.int8))) + 1
        bounds = np.concatenate([[0], brk, [need_l1]]).astype(np.int64).tolist()
        per = max(1, CHUNK_ENTRIES // self.l2e)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a == b:
                continue
            if not present[a]:
                yield a, b - a, None
                continue
            for c in range(a, b, per):
                d = min(c + per, b)
                yield c, d - c, self.decode_tables(offs[c:d], "qcow2 L2 tables")

    # ------------------------------------------------------------------ guest map
    def guest_map(self, layer: str | int | None = "active") -> GuestMap:
        """One layer's guest map, built a chunk of tables at a time (14 bytes per guest cluster)."""
        l1, vsize, label = self.layer_l1(layer)
        nclusters = -(-vsize // self.cs)
        enforce("max_guest_clusters", nclusters, f"qcow2 {label} layer of {vsize} bytes",
                24 if label == "active" else None)
        rows = -(-nclusters // self.l2e)
        ext = self.meta.extended_l2
        n = rows * self.l2e
        cols = {"kind": np.zeros(n, np.uint8), "host": np.zeros(n, _U), "length": np.zeros(n, np.uint32),
                "flags": np.zeros(n, np.uint8)}
        if ext:
            cols.update(alloc=np.zeros(n, np.uint32), zero=np.zeros(n, np.uint32))
        for first, count, ent in self.layer_windows(l1, nclusters):
            if ent is not None:
                for name, arr in cols.items():
                    arr[first * self.l2e:(first + count) * self.l2e] = getattr(ent, name)
        need_l1 = min(len(l1), rows)
        return GuestMap(
            layer=label, cluster_size=self.cs, virtual_size=vsize,
            kind=cols["kind"][:nclusters], host=cols["host"][:nclusters], length=cols["length"][:nclusters],
            flags=cols["flags"][:nclusters],
            alloc=cols["alloc"][:nclusters] if ext else None, zero=cols["zero"][:nclusters] if ext else None,
            table=self.l2_offsets(l1[:need_l1]) if need_l1 else np.zeros(0, _U),
            subclusters=32 if ext else 1,
        )

    # ------------------------------------------------------------------ refcounts
    def reftable(self) -> np.ndarray:
        h = self.meta.header
        n = h.refcount_table_clusters * self.cs // 8
        return self.read_l1(h.refcount_table_offset, n, "qcow2 refcount table") if n else np.zeros(0, _U)

    def refcount_blocks(self, nclusters: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first cluster, decoded counters) of each refcount block covering clusters [0, nclusters).

        Blocks that are absent or start past EOF are left out (they read as zeros);
        others are read as qemu reads them (zeros past EOF, unaligned offsets as is).
        """
        order = self.meta.refcount_order
        per_block = self.cs * 8 >> order
        if nclusters is None:
            nclusters = -(-self.src.size // self.cs)
        rt = self.reftable()
        nblocks = min(len(rt), -(-nclusters // per_block)) if nclusters else 0
        offs = rt[:nblocks] & _U(L.REFT_OFFSET_MASK)
        buf = bytearray(self.cs)
        for i in np.flatnonzero(offs).tolist():
            off = int(offs[i])
            if off >= self.src.size:
                continue
            self.src.readinto(memoryview(buf), off)
            yield i * per_block, native.refblock_decode(buf, order, per_block, f"qcow2 refcount block {i}", off)

    def refcounts(self, nclusters: int | None = None, dtype: type | None = None) -> np.ndarray:
        """On-disk refcount of every host cluster covered by the refcount table.

        ``nclusters`` limits the result (default: every cluster of the file); ``dtype``
        defaults to uint64 (:meth:`counter_dtype` is the narrowest exact one).
        """
        if nclusters is None:
            nclusters = -(-self.src.size // self.cs)
        out = np.zeros(nclusters, dtype or _U)
        for first, vals in self.refcount_blocks(nclusters):
            end = min(first + len(vals), nclusters)
            out[first:end] = vals[:end - first]
        return out

    def counter_dtype(self) -> type:
        """The narrowest unsigned dtype that holds every refcount of this image's width."""
        bits = 1 << self.meta.refcount_order
        return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else _U

    def count_nonzero_refcounts(self) -> int:
        """Number of clusters of the file whose on-disk refcount is not zero (streamed)."""
        n = -(-self.src.size // self.cs)
        return sum(int(np.count_nonzero(v[:max(0, n - first)])) for first, v in self.refcount_blocks(n))
