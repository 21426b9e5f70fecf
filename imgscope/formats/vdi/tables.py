"""The VDI block map decoded into the neutral model: guest map, block status, references.

Block status follows qemu's ``vdi_co_block_status``: an allocated block is
DATA at its host offset; an unallocated (0xFFFFFFFF) or discarded
(0xFFFFFFFE) block reads as zeros (kind "zero": qemu reports it ZERO and
present, VDI has no backing file in qemu).  For a static (fixed) image qemu
also asks the host file, so parts of a block lying in a file hole or past
EOF are reported as data *and* zero — :func:`mark_host_holes` does that.
In a differencing image an unallocated block reads from the parent: kind
"unallocated".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...arrays import unique
from ...extents import DATA as S_DATA, OFFSET_VALID, ZERO as S_ZERO, Extents
from ...limits import enforce
from ...model import DATA, UNALLOCATED, ZERO, GuestMap
from ...refrows import RefRows, ranges
from ..qcow2.status import unit_status
from . import layout as L

_U = np.uint64


def read_bmap(img: Any) -> np.ndarray:
    n = img.h.blocks_in_image
    buf = img.src.read(img.h.offset_bmap, n * 4, "vdi block map", zero_fill=True)
    return np.frombuffer(buf, "<u4", count=n).astype(np.uint32)


def allocated(entries: np.ndarray) -> np.ndarray:
    """VDI_IS_ALLOCATED: anything below the discarded marker is a block slot."""
    return entries < np.uint32(L.DISCARDED)


def slot_offsets(img: Any, entries: np.ndarray) -> np.ndarray:
    """Host offset of each entry's block (qemu's placement: ``block_extra`` is ignored)."""
    return _U(img.h.offset_data) + entries.astype(_U) * _U(img.slot_size)


def guest_map(img: Any) -> GuestMap:
    bs = img.h.block_size
    n = enforce("max_guest_clusters", -(-img.virtual_size // bs), "vdi guest map")
    e = img.bmap[:n]
    alloc = allocated(e)
    kind = np.full(n, ZERO, np.uint8)
    if img.is_diff:
        kind[e == np.uint32(L.UNALLOCATED)] = UNALLOCATED
    kind[alloc] = DATA
    flags = np.zeros(n, np.uint8)
    flags[alloc & (e >= np.uint32(img.h.blocks_in_image))] |= native.F_RESERVED
    host = np.where(alloc, slot_offsets(img, e), _U(0))
    return GuestMap(layer="active", cluster_size=bs, virtual_size=img.virtual_size, kind=kind, host=host,
                    length=np.where(alloc, _U(bs), _U(0)), flags=flags, alloc=None, zero=None,
                    table=np.array([img.h.offset_bmap], _U))


def extents(img: Any) -> Extents:
    gm = guest_map(img)
    unit, status, offset = unit_status(gm, False)
    ext = Extents.from_units(unit, status, offset, gm.virtual_size)
    if img.h.image_type == L.TYPE_STATIC:
        ext = mark_host_holes(ext, img.src.data_ranges(), img.src.size)
    return ext


def mark_host_holes(ext: Extents, ranges: list[tuple[int, int]], file_size: int) -> Extents:
    """Split DATA|OFFSET_VALID extents at the host file's data/hole boundaries and add ZERO to the
    parts in holes or past EOF (qemu's BDRV_BLOCK_RECURSE into the protocol layer)."""
    starts = np.array([r[0] for r in ranges], np.int64)
    ends = np.array([r[1] for r in ranges], np.int64)
    bounds = unique(np.concatenate([starts, ends, [file_size]]))
    off = ext.offset.astype(np.int64)
    split = ext.status == np.uint8(S_DATA | OFFSET_VALID)
    lo = np.searchsorted(bounds, off, side="right")
    ncut = np.where(split, np.searchsorted(bounds, off + ext.length, side="left") - lo, 0)
    # piece k of extent e starts at off[e] (k = 0) or at bounds[lo[e] + k - 1]
    owner = np.repeat(np.arange(len(off)), ncut + 1)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(ncut + 1) - (ncut + 1), ncut + 1)
    piece_off = np.where(k == 0, off[owner], bounds[np.minimum(lo[owner] + k - 1, len(bounds) - 1)])
    nxt = np.append(piece_off[1:], 0)
    last = np.append(owner[1:] != owner[:-1], True)
    piece_end = np.where(last, off[owner] + ext.length[owner], nxt)
    i = np.searchsorted(starts, piece_off, side="right") - 1
    in_data = (i >= 0) & (piece_off < ends[np.maximum(i, 0)]) if len(starts) else np.zeros(len(owner), bool)
    status = ext.status[owner] | np.where(split[owner] & ~in_data, np.uint8(S_ZERO), np.uint8(0)).astype(np.uint8)
    start = ext.start[owner] + (piece_off - off[owner])
    length = piece_end - piece_off
    gap = piece_off[1:] != piece_off[:-1] + length[:-1]
    keep = np.ones(len(owner), bool)
    keep[1:] = (status[1:] != status[:-1]) | (((status[1:] & OFFSET_VALID) != 0) & gap)
    idx = np.flatnonzero(keep)
    return Extents(start[idx].astype(np.int64), np.add.reduceat(length, idx).astype(np.int64), status[idx],
                   piece_off[idx].astype(_U), ext.size)


def reference_rows(img: Any) -> RefRows:
    """The header sector, the block map (role "l1") and every allocated block slot (role "data")."""
    h = img.h
    e = img.bmap
    alloc = e[allocated(e)]
    return RefRows.join([ranges(0, L.HEADER_SIZE, "header"), ranges(h.offset_bmap, h.blocks_in_image * 4, "l1", 0),
                         ranges(slot_offsets(img, alloc), img.slot_size, "data", 0)])
