"""A fresh qcow2 refcount structure (reftable + refblocks) for a computed set of references.

Used by the repair planner (:mod:`.repair`).  Like qemu's
``rebuild_refcount_structure`` (QEMU_CHECK.md b.2) refblocks are placed first
fit, in refblock order, then the reftable, repeating until the structure covers
its own clusters.  Unlike qemu, a cluster is only used when it is free in *both*
the old state (on-disk refcount 0, not part of the old refcount structure) and
the new one (no computed reference), or lies past the end of the file: a crash
before the header switch leaves the old structure and everything it describes
untouched.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...errors import RepairError
from ...limits import enforce
from . import layout as L

_U = np.uint64
#: header bytes switched in one write: refcount_table_offset (u64 at 48), refcount_table_clusters (u32 at 56)
SWITCH_OFFSET = 48


def old_structure(img: Any, used: int) -> tuple[np.ndarray, np.ndarray]:
    """(references the check counted for the old reftable and refblocks, mask of every old-structure cluster)."""
    t, h = img.tables, img.meta.header
    cs, cb = t.cs, t.cb
    counted = np.zeros(used, np.int64)
    mask = np.zeros(used, bool)
    start, length = h.refcount_table_offset, h.refcount_table_clusters * cs
    first, last = start >> cb, (start + length - 1) >> cb
    mask[first:min(last + 1, used)] = True
    if length and start + length - min(start + length, img.src.size) < cs:  # the check's past-EOF rule
        counted[first:min(last + 1, used)] += 1
    for e in t.reftable().tolist():
        off = e & L.REFT_OFFSET_MASK
        if not off:
            continue
        c = off >> cb
        if c < used:
            mask[c] = True
            if not (e & L.REFT_RESERVED_MASK) and not off % cs:
                counted[c] += 1
    return counted, mask


class _Space:
    """First-fit allocator over clusters free in both states, then past the end."""

    def __init__(self, free: np.ndarray, end: int) -> None:
        self.free = free.copy()
        self.end = end
        self.low = 0  # no free cluster below this one

    def take(self, n: int) -> int:
        """First cluster of ``n`` contiguous free clusters (marked used)."""
        f = self.free
        if n == 1:
            i = self.low + int(np.argmax(f[self.low:])) if self.low < len(f) else len(f)
            if i < len(f) and f[i]:
                f[i] = False
                self.low = i + 1
                return i
            self.low = len(f)
        elif len(f) >= n:
            run = np.convolve(f.astype(np.int64), np.ones(n, np.int64), "valid")
            hit = np.flatnonzero(run == n)
            if len(hit):
                f[hit[0]:hit[0] + n] = False
                return int(hit[0])
        first = self.end
        self.end += n
        return first

    def give(self, first: int, n: int) -> None:
        if first + n <= len(self.free):
            self.free[first:first + n] = True
            self.low = min(self.low, first)
        elif first + n == self.end:
            self.end = first


def rebuild(img: Any, computed: np.ndarray, ondisk: np.ndarray) -> tuple[list[tuple[int, bytes, str, str]], np.ndarray]:
    """Writes (offset, data, structure, reason) of a new refcount structure, and the refcounts it encodes.

    ``computed``/``ondisk`` are the check's per-cluster references and on-disk
    refcounts of the image as the entry fixes leave it.  The new references of
    the refcount structure itself are included; the old one becomes free.
    """
    t, m = img.tables, img.meta
    cs, cb, order = t.cs, t.cb, m.refcount_order
    per_block = cs * 8 >> order
    used = len(computed)
    old_counted, old_mask = old_structure(img, used)
    refs = computed.astype(np.int64) - old_counted
    if (refs < 0).any():
        raise RepairError("planner error: old refcount structure references were not counted as expected")
    nfile = -(-img.src.size // cs)
    idx = np.arange(used)
    free = (ondisk[:used] == 0) & (refs == 0) & ~old_mask & (idx > 0) & (idx < nfile)
    space = _Space(free, max(used, nfile))
    cnt = _Counts(refs.astype(_U))
    blocks: dict[int, int] = {}
    rt_first, rt_n = 0, 0
    while True:
        changed = False
        for bi in cnt.nonzero_blocks(per_block):
            if bi not in blocks:
                blocks[bi] = c = space.take(1)
                cnt.bump(c, 1)
                changed = True
        want = -(-(max(blocks) + 1) * 8 // cs)
        if want > rt_n:
            if rt_n:
                space.give(rt_first, rt_n)
                cnt.buf[rt_first:rt_first + rt_n] -= _U(1)
            rt_first, rt_n = space.take(want), want
            cnt.bump(rt_first, rt_n)
            changed = True
        if not changed:
            break
    counts = cnt.array()
    enforce("max_reftable_bytes", rt_n * cs, "rebuilt qcow2 refcount table", rt_first << cb)
    maxval = (1 << (1 << order)) - 1
    if int(counts.max()) > maxval:
        raise RepairError(f"a cluster needs {int(counts.max())} references, more than {1 << order}-bit refcounts hold; "
                          "widen them first (qemu-img amend -o refcount_bits=...)")
    return _encode(blocks, counts, per_block, order, cs, cb, rt_first, rt_n), counts


class _Counts:
    """The new refcounts while the structure is placed: clusters [0, n) of a buffer that grows geometrically
    (allocations past the end of the file extend it one cluster at a time)."""

    def __init__(self, counts: np.ndarray) -> None:
        self.buf = counts
        self.n = len(counts)

    def bump(self, first: int, n: int) -> None:
        end = first + n
        if end > len(self.buf):
            buf = np.zeros(max(end, 2 * len(self.buf)), _U)
            buf[:self.n] = self.buf[:self.n]
            self.buf = buf
        self.n = max(self.n, end)
        self.buf[first:end] += _U(1)

    def nonzero_blocks(self, per_block: int) -> list[int]:
        """Refcount blocks holding a non-zero count, ascending."""
        c = self.buf[:self.n]
        if not len(c):
            return []
        return np.flatnonzero(np.maximum.reduceat(c, np.arange(0, len(c), per_block))).tolist()

    def array(self) -> np.ndarray:
        return self.buf[:self.n].copy() if self.n < len(self.buf) else self.buf


def _encode(blocks: dict[int, int], counts: np.ndarray, per_block: int, order: int, cs: int, cb: int,
            rt_first: int, rt_n: int) -> list[tuple[int, bytes, str, str]]:
    out = []
    table = np.zeros(rt_n * cs // 8, _U)
    for bi in sorted(blocks):
        vals = counts[bi * per_block:(bi + 1) * per_block]
        out.append((blocks[bi] << cb, native.refblock_encode(vals, order, cs), f"refcount block {bi} (new)",
                    f"rebuilt refcounts of clusters {bi * per_block}..{(bi + 1) * per_block - 1}"))
        table[bi] = _U(blocks[bi] << cb)
    out.append((rt_first << cb, table.astype(">u8").tobytes(), "refcount table (new)",
                f"new refcount table: {len(blocks)} refcount blocks, {rt_n} cluster(s)"))
    return out


def switch(rt_offset: int, rt_clusters: int) -> bytes:
    """The bytes of header fields refcount_table_offset and refcount_table_clusters (one sector write)."""
    return int(rt_offset).to_bytes(8, "big") + int(rt_clusters).to_bytes(4, "big")
