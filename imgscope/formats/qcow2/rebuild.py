"""A fresh qcow2 refcount structure (reftable + refblocks) for a computed set of references.

Used by the repair planner (:mod:`.repair`).  Like qemu's
``rebuild_refcount_structure`` (QEMU_CHECK.md b.2) refblocks are placed first
fit, in refblock order, then the reftable, repeating until the structure covers
its own clusters, in the clusters qemu would choose.  A cluster is used only when
nothing references it in the new state and it is not part of the old refcount
structure, which stays intact until the header switch: a crash before it leaves
the old structure and everything it describes untouched.  (A leaked cluster —
an on-disk refcount but no reference — is garbage in both states, so like qemu
the rebuild may reuse it.)
"""
from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from ... import native
from ...arrays import unique
from ...errors import RepairError
from ...limits import enforce
from . import layout as L

_U = np.uint64
#: header bytes switched in one write: refcount_table_offset (u64 at 48), refcount_table_clusters (u32 at 56)
SWITCH_OFFSET = 48


def old_structure(img: Any, used: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The old reftable and refblock clusters below ``used``: (every one of them, ascending; those the
    check counted a reference for; how many each)."""
    t, h = img.tables, img.meta.header
    cs, cb = t.cs, t.cb
    start, length = h.refcount_table_offset, h.refcount_table_clusters * cs
    first, last = start >> cb, (start + length - 1) >> cb
    table = np.arange(first, min(last + 1, used), dtype=np.int64) if length else np.zeros(0, np.int64)
    rt = t.reftable()
    off = rt & _U(L.REFT_OFFSET_MASK)
    c = (off >> _U(cb)).astype(np.int64)
    blk = (off != 0) & (c < used)
    ok = blk & ((rt & _U(L.REFT_RESERVED_MASK)) == 0) & (off % _U(cs) == 0)
    counted = [c[ok]]
    if length and start + length - min(start + length, img.src.size) < cs:  # the check's past-EOF rule
        counted.append(table)
    idx, n = unique_counts(np.concatenate(counted))
    return unique(np.concatenate([table, c[blk]])), idx, n


def unique_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``a`` (ascending) and how often each occurs."""
    a = np.sort(a)
    starts = np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1]))) if len(a) else np.zeros(0, np.int64)
    return a[starts], np.diff(np.append(starts, len(a)))


class _Space:
    """First-fit allocator over clusters free in the new state (not in the old structure), then past the end."""

    def __init__(self, free: np.ndarray, end: int) -> None:
        self.free = free  # owned (marked used as clusters are taken)
        self.end = end
        self.low = 0  # no free cluster below this one

    def take(self, n: int, start: int = 0) -> int:
        """First cluster of ``n`` contiguous free clusters at or after ``start`` (marked used).

        As qemu's alloc_clusters_imrt: without such a run inside the file, a free run
        reaching the end of the file is continued past it."""
        f = self.free
        if start < len(f):
            g = f[start:]
            if n == 1:
                lo = max(self.low - start, 0)
                i = lo + int(np.argmax(g[lo:])) if lo < len(g) else len(g)
                if i < len(g) and g[i]:
                    f[start + i] = False
                    if start <= self.low:
                        self.low = start + i + 1
                    return start + i
                if start <= self.low:
                    self.low = len(f)
            elif len(g) >= n:
                run = np.convolve(g.astype(np.int64), np.ones(n, np.int64), "valid")
                hit = np.flatnonzero(run == n)
                if len(hit):
                    first = start + int(hit[0])
                    f[first:first + n] = False
                    return first
            if len(f) == self.end and n > 1:  # a free tail of the file grows past its end
                used = np.flatnonzero(~g)
                tail = len(g) - (int(used[-1]) + 1 if len(used) else 0)
                if tail:
                    first = len(f) - tail
                    f[first:] = False
                    self.end = first + n
                    return first
        first = max(self.end, start)
        self.end = first + n
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
    old, oc_idx, oc_n = old_structure(img, used)
    # the new counts, with room for the new structure past the end (np.zeros: untouched pages cost nothing)
    refs = np.zeros(used + 2 * (-(-used // per_block)) + 64, _U)
    refs[:used] = computed
    if (refs[oc_idx] < oc_n.astype(_U)).any():
        raise RepairError("planner error: old refcount structure references were not counted as expected")
    refs[oc_idx] -= oc_n.astype(_U)
    nfile = -(-img.src.size // cs)
    free = refs[:used] == 0  # qemu's IMRT: leaked clusters (on-disk count, no reference) too
    free[old] = False
    free[:1] = False       # the header cluster
    free[nfile:] = False   # past the end of the file: allocated from space.end instead
    space = _Space(free, max(used, nfile))
    cnt = _Counts(refs, used)
    blocks: dict[int, int] = {}
    rt_first, rt_n = 0, 0
    # qemu's order (rebuild_refcounts_write_refblocks): refblocks in ascending block order,
    # each in the first free cluster of its own range or later ("don't allocate a cluster in
    # a refblock already written"), blocks created by those allocations included; then the
    # reftable, first fit; then refblocks for the reftable's clusters; until nothing changes
    _place_refblocks(cnt, space, blocks, cnt.nonzero_blocks(per_block), per_block)
    while True:
        want = -(-(max(blocks) + 1) * 8 // cs)
        if want <= rt_n:
            break
        if rt_n:
            space.give(rt_first, rt_n)
            cnt.buf[rt_first:rt_first + rt_n] -= _U(1)
        rt_first, rt_n = space.take(want), want
        cnt.bump(rt_first, rt_n)
        _place_refblocks(cnt, space, blocks, sorted({c // per_block for c in range(rt_first, rt_first + rt_n)}),
                         per_block)
    counts = cnt.array()
    enforce("max_reftable_bytes", rt_n * cs, "rebuilt qcow2 refcount table", rt_first << cb)
    maxval = (1 << (1 << order)) - 1
    if int(counts.max()) > maxval:
        raise RepairError(f"a cluster needs {int(counts.max())} references, more than {1 << order}-bit refcounts hold; "
                          "widen them first (qemu-img amend -o refcount_bits=...)")
    return _encode(blocks, counts, per_block, order, cs, cb, rt_first, rt_n), counts


def _place_refblocks(cnt: "_Counts", space: _Space, blocks: dict[int, int], todo: list[int], per_block: int) -> None:
    """Place a refblock for each block of ``todo`` (ascending) and for every block its placements reach."""
    heap = list(todo)
    heapq.heapify(heap)
    floor = 0  # qemu's first_free_cluster: only grows within one pass
    while heap:
        bi = heapq.heappop(heap)
        if bi in blocks:
            continue
        floor = max(floor, bi * per_block)
        blocks[bi] = c = floor = space.take(1, floor)
        cnt.bump(c, 1)
        if c // per_block not in blocks:
            heapq.heappush(heap, c // per_block)


class _Counts:
    """The new refcounts while the structure is placed: clusters [0, n) of a buffer that grows geometrically
    (allocations past the end of the file extend it one cluster at a time)."""

    def __init__(self, counts: np.ndarray, n: int | None = None) -> None:
        self.buf = counts
        self.n = len(counts) if n is None else n

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
