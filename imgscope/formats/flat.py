"""Guest ranges stored verbatim in a host file (VMDK FLAT extents, fixed VHDs).

qemu reports such ranges as ``DATA | OFFSET_VALID`` with ``BDRV_BLOCK_RECURSE``:
the block layer then asks the host file, and ranges the file holds as holes
(or that lie past its end) gain ``ZERO`` while keeping ``DATA``.  This module
reproduces that answer from ``SEEK_DATA``/``SEEK_HOLE``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..extents import DATA, OFFSET_VALID, ZERO
from ..io import Source


def recurse_pieces(src: Source, host_start: int, length: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """(relative start, length, status, host offset) pieces for ``length`` bytes at ``host_start``."""
    starts: list[int] = []
    lens: list[int] = []
    stats: list[int] = []
    offs: list[int] = []
    end = host_start + length
    pos = host_start
    for lo, hi in src.data_ranges():
        if hi <= pos or lo >= end:
            continue
        lo, hi = max(lo, pos), min(hi, end)
        if lo > pos:
            _piece(starts, lens, stats, offs, pos - host_start, lo - pos, DATA | ZERO | OFFSET_VALID, pos)
        _piece(starts, lens, stats, offs, lo - host_start, hi - lo, DATA | OFFSET_VALID, lo)
        pos = hi
    if pos < end:
        _piece(starts, lens, stats, offs, pos - host_start, end - pos, DATA | ZERO | OFFSET_VALID, pos)
    return starts, lens, stats, offs


def _piece(starts: list[int], lens: list[int], stats: list[int], offs: list[int], s: int, n: int, st: int,
           off: int) -> None:
    starts.append(s)
    lens.append(n)
    stats.append(st)
    offs.append(off)


def concat_pieces(pieces: list[tuple[Any, Any, Any, Any]], size: int) -> Any:
    """Join per-extent piece arrays (already shifted to guest offsets) into one :class:`Extents`."""
    from ..extents import Extents
    if not pieces:
        return Extents.single(size, 0)
    start, length, status, offset = (np.concatenate([np.asarray(p[i], dt) for p in pieces])
                                     for i, dt in enumerate((np.int64, np.int64, np.uint8, np.uint64)))
    keep = length > 0
    return Extents(start[keep], length[keep], status[keep], offset[keep], size)
