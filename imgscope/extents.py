"""Guest extents and backing-chain resolution, the way ``qemu-img map`` reports them.

Each layer of a chain describes its guest space as extents with a block-status
word (qemu's BDRV_BLOCK_* bits, reduced to the four that map prints).  An extent
that is neither DATA nor ZERO is read from the next layer down; past the end of
the backing file, or without one, it reads as zeros (qemu's rule in
``bdrv_co_block_status``).  Adjacent results merge when everything but their
position agrees and host offsets are contiguous (``entry_mergeable``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import native
from .arrays import unique

DATA, ZERO, OFFSET_VALID, ALLOCATED = 1, 2, 4, 8


@dataclass
class Extents:
    """Sorted, non-overlapping extents covering ``[0, size)`` of one layer."""

    start: np.ndarray   # int64
    length: np.ndarray  # int64
    status: np.ndarray  # uint8, DATA|ZERO|OFFSET_VALID|ALLOCATED
    offset: np.ndarray  # uint64 host offset (valid where OFFSET_VALID)
    size: int

    @classmethod
    def from_units(cls, unit: int, status: np.ndarray, offset: np.ndarray, size: int) -> Extents:
        """Merge per-unit (cluster or subcluster) status into extents."""
        n = len(status)
        status = np.ascontiguousarray(status, np.uint8)
        code = status | np.where(status & OFFSET_VALID, np.uint8(native.OFFSET_VALID), np.uint8(0)).astype(np.uint8)
        starts = native.run_starts(code, offset, np.full(n, unit, np.uint64))
        begin = starts * unit
        end = np.append(begin[1:], size)
        end = np.minimum(end, size)
        return cls(begin.astype(np.int64), (end - begin).astype(np.int64), status[starts],
                   np.asarray(offset, np.uint64)[starts], size)

    @classmethod
    def single(cls, size: int, status: int, offset: int | None = None) -> Extents:
        return cls(np.array([0], np.int64), np.array([size], np.int64), np.array([status], np.uint8),
                   np.array([offset or 0], np.uint64), size)


def split_by_host_data(ext: Extents, data_ranges: list[tuple[int, int]]) -> Extents:
    """qemu's BDRV_BLOCK_RECURSE for metadata-preallocated images: the host file decides.

    Each DATA|OFFSET_VALID extent (not already ZERO) is cut at the host file's
    data/hole boundaries (SEEK_DATA/SEEK_HOLE); pieces in a hole or past EOF get ZERO.
    """
    cand = ext.status == (DATA | OFFSET_VALID)
    if not cand.any():
        return ext
    ds = np.array([r[0] for r in data_ranges], np.uint64)
    de = np.array([r[1] for r in data_ranges], np.uint64)
    bounds = unique(np.concatenate([ds, de]))
    o = ext.offset[cand]
    e = o + ext.length[cand].astype(np.uint64)
    lo = np.searchsorted(bounds, o, side="right")
    hi = np.searchsorted(bounds, e, side="left")
    k = (hi - lo).astype(np.int64) + 1  # pieces per candidate
    rel = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    first = np.repeat(lo, k) + rel - 1  # index into bounds of each piece's start (-1: the extent's start)
    piece_off = np.where(rel == 0, np.repeat(o, k), bounds[np.clip(first, 0, max(len(bounds) - 1, 0))]
                         if len(bounds) else np.repeat(o, k))
    piece_end = np.append(piece_off[1:], 0)
    last = np.cumsum(k) - 1
    piece_end[last] = e
    j = np.searchsorted(ds, piece_off, side="right").astype(np.int64) - 1
    in_data = (j >= 0) & (piece_off < de[np.maximum(j, 0)]) if len(ds) else np.zeros(len(piece_off), bool)
    piece_st = np.where(in_data, np.uint8(DATA | OFFSET_VALID), np.uint8(DATA | OFFSET_VALID | ZERO))
    piece_start = np.repeat(ext.start[cand], k) + (piece_off - np.repeat(o, k)).astype(np.int64)
    keep = ~cand
    start = np.concatenate([ext.start[keep], piece_start])
    order = np.argsort(start, kind="stable")
    length = np.concatenate([ext.length[keep], (piece_end - piece_off).astype(np.int64)])[order]
    status = np.concatenate([ext.status[keep], piece_st])[order].astype(np.uint8)
    offset = np.concatenate([ext.offset[keep], piece_off])[order]
    start = start[order]
    m = _merge_starts(status.astype(np.int64), offset, length, status)
    return Extents(start[m], np.add.reduceat(length, m), status[m], offset[m], ext.size)


def resolve(chain: list[Extents]) -> tuple[np.ndarray, ...]:
    """Resolve a chain (top first) into (start, length, depth, status, offset) arrays, merged."""
    top = chain[0]
    if top.size <= 0:  # qemu-img map still prints its (empty) current entry: one of length 0
        return (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint8),
                np.zeros(1, np.uint64))
    if len(chain) == 1 and len(top.start) and top.start[0] == 0:
        cuts = top.start[top.start < top.size]  # one layer: its starts are already sorted and distinct
    else:
        cuts = np.sort(np.concatenate([e.start[e.start < top.size] for e in chain]
                                      + [np.array([e.size for e in chain if e.size < top.size], np.int64),
                                         np.array([0], np.int64)]))
        cuts = cuts[np.append(True, cuts[1:] != cuts[:-1]) & (cuts < top.size)]
    n = len(cuts)
    depth = np.full(n, -1, np.int64)
    status = np.zeros(n, np.uint8)
    offset = np.zeros(n, np.uint64)
    todo = np.ones(n, bool)
    for d, layer in enumerate(chain):
        if not len(layer.start):  # an empty layer (a 0-byte backing file): the one above reads zeros
            continue
        inside = todo & (cuts < layer.size)
        idx = np.searchsorted(layer.start, cuts, side="right") - 1
        idx = np.clip(idx, 0, len(layer.start) - 1)
        st = layer.status[idx]
        hit = inside & ((st & (DATA | ZERO)) != 0)
        depth[hit] = d
        status[hit] = st[hit] | ALLOCATED
        off = layer.offset[idx] + (cuts - layer.start[idx]).astype(np.uint64)
        offset[hit] = np.where(st[hit] & OFFSET_VALID, off[hit], 0)
        todo &= ~hit
        # a layer whose extent is unallocated and which has no (more) backing, or
        # whose backing ends before this point, reads zeros at this depth
        last = d == len(chain) - 1
        below_end = chain[d + 1].size if not last else 0
        zero_here = todo & (cuts < layer.size) & (last | (cuts >= below_end))
        depth[zero_here] = d
        status[zero_here] = ZERO | (st[zero_here] & OFFSET_VALID)
        offset[zero_here] = np.where(st[zero_here] & OFFSET_VALID, off[zero_here], 0)
        todo &= ~zero_here
    length = np.diff(np.append(cuts, top.size))
    # merge equal neighbours with contiguous offsets
    code = status | np.where(status & OFFSET_VALID, np.uint8(native.OFFSET_VALID), np.uint8(0)).astype(np.uint8)
    key = code.astype(np.int64) * 1024 + depth  # depth < 1024 (chain depth limit)
    starts = _merge_starts(key, offset, length, status)
    mlen = np.add.reduceat(length, starts) if n else length
    return cuts[starts], mlen, depth[starts], status[starts], offset[starts]


def clip(ext: tuple[np.ndarray, ...], lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """The part of resolved extents (:func:`resolve`) inside guest bytes [lo, hi), as ``qemu-img map
    --start-offset lo --max-length (hi - lo)`` prints it; nothing inside gives qemu's one empty entry
    at ``lo``."""
    start, length, depth, status, offset = ext
    end = start + length
    keep = (end > lo) & (start < hi) & (length > 0)
    if not keep.any():
        return (np.array([lo], np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint8),
                np.zeros(1, np.uint64))
    start, end, depth, status, offset = start[keep], end[keep], depth[keep], status[keep], offset[keep]
    new = np.maximum(start, lo)
    offset = np.where(status & OFFSET_VALID, offset + (new - start).astype(np.uint64), offset)
    return new, np.minimum(end, hi) - new, depth, status, offset


def _merge_starts(key: np.ndarray, offset: np.ndarray, length: np.ndarray, status: np.ndarray) -> np.ndarray:
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64)
    brk = np.ones(n, bool)
    contiguous = offset[1:] == offset[:-1] + length[:-1].astype(np.uint64)
    brk[1:] = (key[1:] != key[:-1]) | (((status[1:] & OFFSET_VALID) != 0) & ~contiguous)
    return np.flatnonzero(brk)


def to_qemu_json(start: np.ndarray, length: np.ndarray, depth: np.ndarray, status: np.ndarray,
                 offset: np.ndarray) -> list[dict]:
    """The list ``qemu-img map --output=json`` prints."""
    out = []
    for s, ln, d, st, off in zip(start.tolist(), length.tolist(), depth.tolist(), status.tolist(), offset.tolist()):
        e = {"start": s, "length": ln, "depth": d, "present": bool(st & ALLOCATED), "zero": bool(st & ZERO),
             "data": bool(st & DATA)}
        if st & OFFSET_VALID:
            e["offset"] = off
        out.append(e)
    return out


_FLAGS_TEXT = [f'"present": {"true" if st & ALLOCATED else "false"}, "zero": {"true" if st & ZERO else "false"}, '
               f'"data": {"true" if st & DATA else "false"}' for st in range(16)]


def to_qemu_text(start: np.ndarray, length: np.ndarray, depth: np.ndarray, status: np.ndarray,
                 offset: np.ndarray) -> str:
    """What ``qemu-img map --output=json`` prints, byte for byte (the same objects as :func:`to_qemu_json`).

    Built as text without a dict per extent: an image can have millions of extents.
    """
    flags = [_FLAGS_TEXT[st & 15] for st in status.tolist()]
    valid = ((status & OFFSET_VALID) != 0).tolist()
    lines = [f'{{ "start": {s}, "length": {ln}, "depth": {d}, {fl}, "offset": {off}}}' if v else
             f'{{ "start": {s}, "length": {ln}, "depth": {d}, {fl}}}'
             for s, ln, d, fl, v, off in zip(start.tolist(), length.tolist(), depth.tolist(), flags, valid,
                                             offset.tolist())]
    return "[" + ",\n".join(lines) + "]\n"
