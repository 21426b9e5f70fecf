"""VHD guest map (one slot per block), qemu block status and host references."""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import model
from ...extents import DATA, OFFSET_VALID, ZERO, Extents
from ...limits import enforce
from ...model import GuestMap
from ...refrows import RefRows, ranges
from ..flat import concat_pieces, recurse_pieces
from . import layout as L
from .driver import trailing_footer_offset

_U = np.uint64
FIXED_UNIT = 2 << 20  # guest-map slot size of a fixed disk (the default block size)


def block_table(img: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """(block size, allocated mask, host offset of each block's data) over the guest blocks."""
    m = img.meta
    bs = m.block_size
    n = enforce("max_guest_clusters", -(-m.virtual_size // bs), "vhd BAT", m.dyn.table_offset)
    bat = np.full(n, L.BAT_UNUSED, np.uint32)
    k = min(n, len(m.bat))
    bat[:k] = m.bat[:k]
    alloc = bat != L.BAT_UNUSED
    host = np.where(alloc, bat.astype(_U) * _U(L.SECTOR) + _U(m.bitmap_size), _U(0))
    return bs, alloc, host


def guest_map(img: Any) -> GuestMap:
    m = img.meta
    if not m.dynamic:
        n = -(-m.virtual_size // FIXED_UNIT)
        host = np.arange(n, dtype=_U) * _U(FIXED_UNIT)
        length = np.minimum(_U(FIXED_UNIT), _U(m.virtual_size) - host)
        return GuestMap("active", FIXED_UNIT, m.virtual_size, np.full(n, model.DATA, np.uint8), host, length,
                        np.zeros(n, np.uint8), None, None, np.zeros(n, _U))
    bs, alloc, host = block_table(img)
    n = len(alloc)
    return GuestMap("active", bs, m.virtual_size, np.where(alloc, model.DATA, model.UNALLOCATED).astype(np.uint8),
                    host, np.where(alloc, _U(bs), _U(0)), np.zeros(n, np.uint8), None, None,
                    _U(m.dyn.table_offset) + np.arange(n, dtype=_U) * _U(4))


def qemu_extents(img: Any) -> Extents:
    """What qemu's vpc driver answers: fixed disks recurse into the file; dynamic and differencing ones per
    block (an unallocated block reads as zeros, sector bitmaps are not looked at: qemu has no VHD parent)."""
    m = img.meta
    if not m.dynamic:
        return concat_pieces([recurse_pieces(img.src, 0, m.virtual_size)], m.virtual_size)
    bs, alloc, host = block_table(img)
    status = np.where(alloc, DATA | OFFSET_VALID, ZERO).astype(np.uint8)
    return Extents.from_units(bs, status, host, m.virtual_size)


def extents(img: Any) -> Extents:
    """The specification's view: as qemu, but a differencing disk leaves unallocated blocks and sectors
    whose bitmap bit is clear to its parent."""
    if not img.differencing:
        return qemu_extents(img)
    bs, alloc, host = block_table(img)
    status = np.where(alloc, DATA | OFFSET_VALID, 0).astype(np.uint8)
    return _differencing_extents(img, bs, alloc, host, status)


def _differencing_extents(img: Any, bs: int, alloc: np.ndarray, host: np.ndarray, status: np.ndarray) -> Extents:
    """Per-sector status of a differencing disk: a clear bitmap bit reads the parent."""
    m = img.meta
    spb = bs // L.SECTOR
    n = len(alloc)
    enforce("max_guest_clusters", n * spb, "vhd sector bitmaps", m.dyn.table_offset)
    st = np.repeat(status, spb)
    off = np.repeat(host, spb) + np.tile(np.arange(spb, dtype=_U) * _U(L.SECTOR), n)
    for i in np.flatnonzero(alloc).tolist():
        at = int(host[i]) - m.bitmap_size
        raw = img.src.read(at, (spb + 7) // 8, f"vhd sector bitmap {i}", zero_fill=True)
        bits = np.unpackbits(np.frombuffer(raw, np.uint8))[:spb].astype(bool)  # MSB first
        st[i * spb:(i + 1) * spb][~bits] = 0
    off[st == 0] = 0
    return Extents.from_units(L.SECTOR, st, off, m.virtual_size)


def reference_rows(img: Any) -> RefRows:
    """Every byte range the file references: footers, dynamic header, BAT, bitmaps, blocks."""
    m = img.meta
    parts: list[tuple] = []
    if m.dynamic:
        parts.append(ranges(0, L.FOOTER_SIZE, "header"))
        parts.append(ranges(m.footer.data_offset, L.DYN_HEADER_SIZE, "header"))
        parts.append(ranges(m.dyn.table_offset, m.bat_bytes, "l1"))
        for loc in m.dyn.parent_locators:
            if loc.platform_code != b"\0\0\0\0" and loc.platform_data_length:
                parts.append(ranges(loc.platform_data_offset, loc.platform_data_length, "header"))
        _, alloc, host = block_table(img)
        h = host[alloc]
        parts.append(ranges(h - _U(m.bitmap_size), m.bitmap_size, "bitmap_data", 0))
        parts.append(ranges(h, m.block_size, "data", 0))
    else:
        parts.append(ranges(0, m.virtual_size, "data", 0))
    if img.src.size >= L.FOOTER_SIZE:
        parts.append(ranges(trailing_footer_offset(img.src), L.FOOTER_SIZE, "header"))
    return RefRows.join(parts)
