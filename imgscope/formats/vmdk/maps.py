"""VMDK grains: per-extent grain classification, the guest map, qemu block status, host references.

Host offsets are offsets *in the extent's own file*; for a disk split over
several files :meth:`Grains.extent_index` tells which extent (and so which
file, see ``extension_rows``) each guest slot belongs to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import model
from ...extents import DATA, OFFSET_VALID, ZERO, Extents
from ...limits import enforce
from ...model import GuestMap
from ...refrows import RefRows, ranges
from ..flat import concat_pieces, recurse_pieces
from . import layout as L
from .extent import Extent

_U = np.uint64
MAX_UNIT = 64 << 20


@dataclass
class ExtentGrains:
    """Decoded grain table entries of one sparse extent."""

    gte: np.ndarray      # uint32 raw entries
    kind: np.ndarray     # uint8 model kinds
    host: np.ndarray     # uint64 byte offsets (0 where none)
    length: np.ndarray   # uint64 host bytes referenced
    table: np.ndarray    # uint64 offset of the entry's grain table slot


def classify(ext: Extent, gte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, host, length) of grain table entries, as qemu's ``get_cluster_offset`` reads them."""
    zeroed = (gte == L.GTE_ZEROED) if ext.zero_grain else np.zeros(len(gte), bool)
    alloc = (gte != 0) & ~zeroed
    host = np.where(alloc, gte.astype(_U) * _U(L.SECTOR), _U(0))
    kind = np.full(len(gte), model.UNALLOCATED, np.uint8)
    kind[zeroed] = model.ZERO
    kind[alloc] = model.COMPRESSED if ext.compressed else model.DATA
    length = np.where(alloc, _U(ext.grain), _U(0))
    if ext.compressed and alloc.any():
        idx = np.flatnonzero(alloc)
        length[idx] = (ext.markers(host[idx])[1] + _U(L.GRAIN_MARKER_SIZE) if ext.has_markers
                       else np.full(len(idx), _U(2 * ext.grain)))
    return kind, host, length


class Grains:
    """Cached grain decoding of every sparse extent of an image."""

    def __init__(self, img: Any) -> None:
        self.img = img
        self._cache: dict[int, ExtentGrains] = {}

    def of(self, i: int) -> ExtentGrains:
        if i not in self._cache:
            ext = self.img.extents_list[i]
            gte = ext.grain_entries()
            kind, host, length = classify(ext, gte)
            self._cache[i] = ExtentGrains(gte, kind, host, length, ext.table_offsets())
        return self._cache[i]

    def unit(self) -> int:
        """Slot size of the guest map: the largest power of two dividing every extent and grain size."""
        exts = self.img.extents_list
        g = math.gcd(*[e.length for e in exts], *[e.grain for e in exts if not e.flat])
        return max(L.SECTOR, min(g & -g, MAX_UNIT)) if g else L.SECTOR

    def guest_map(self) -> GuestMap:
        unit = self.unit()
        img = self.img
        enforce("max_guest_clusters", -(-img.virtual_size // unit), "vmdk guest map")
        cols: list[list[np.ndarray]] = [[], [], [], []]
        for i, ext in enumerate(img.extents_list):
            n = -(-ext.length // unit)
            if ext.flat:
                host = _U(ext.flat_offset) + np.arange(n, dtype=_U) * _U(unit)
                parts = (np.full(n, model.DATA, np.uint8), host, np.full(n, _U(unit)), np.zeros(n, _U))
            else:
                parts = self._per_unit(self.of(i), ext.grain // unit, n, unit)
            for c, p in zip(cols, parts):
                c.append(p)
        kind, host, length, table = (np.concatenate(c) for c in cols)
        return GuestMap("active", unit, img.virtual_size, kind, host, length, np.zeros(len(kind), np.uint8),
                        None, None, table)

    @staticmethod
    def _per_unit(g: ExtentGrains, k: int, n: int, unit: int) -> tuple[np.ndarray, ...]:
        if k <= 1:
            return g.kind[:n], g.host[:n], g.length[:n], g.table[:n]
        sub = np.tile(np.arange(k, dtype=_U) * _U(unit), len(g.kind))
        host = np.repeat(g.host, k)
        data = np.repeat(g.kind == model.DATA, k)
        # a data grain's units lie one after the other; every unit of a compressed grain names the whole
        # stream (marker offset and length), as a compressed cluster does
        host = np.where(data & (host != 0), host + sub, host)
        length = np.where(data, _U(unit), np.repeat(g.length, k))
        return np.repeat(g.kind, k)[:n], host[:n], length[:n], np.repeat(g.table, k)[:n]

    def extent_index(self) -> np.ndarray:
        """Index into ``extents_list`` of every guest-map slot."""
        unit = self.unit()
        return np.concatenate([np.full(-(-e.length // unit), i, np.int32)
                               for i, e in enumerate(self.img.extents_list)])


def block_status(img: Any) -> Extents:
    """qemu's ``vmdk_co_block_status`` over the whole disk (FLAT extents recurse into their file)."""
    pieces = []
    table = np.array([0, DATA | OFFSET_VALID, ZERO, ZERO | OFFSET_VALID, DATA], np.uint8)
    for i, ext in enumerate(img.extents_list):
        if ext.flat:
            s, n, st, off = recurse_pieces(ext.src, ext.flat_offset, ext.length)
            pieces.append((np.asarray(s, np.int64) + ext.start, n, st, off))
            continue
        g = img.grains.of(i)
        e = Extents.from_units(ext.grain, table[g.kind], np.where(g.kind == model.DATA, g.host, _U(0)), ext.length)
        pieces.append((e.start + ext.start, e.length, e.status, e.offset))
    return concat_pieces(pieces, img.virtual_size)


def reference_rows(img: Any) -> RefRows:
    """Byte ranges of the image's own file (extents stored in other files are not listed).

    A descriptor file (split or flat disk) is one "header" range: see docs/formats/vmdk.md.
    """
    own = [(i, e) for i, e in enumerate(img.extents_list) if e.src is img.src]
    parts: list[tuple] = [] if own else [ranges(0, img.src.size, "header")]  # a descriptor file: all text
    for i, ext in own:
        parts += _sparse_rows(img, i, ext)
    return RefRows.join(parts)


def _sparse_rows(img: Any, i: int, ext: Extent) -> list[tuple]:
    # sector fields * 512 may pass 2^64: ranges() clamps them (past EOF, then dropped)
    h = ext.header
    parts = [ranges(0, ext.header_size, "header")]
    if ext.header_offset:
        parts.append(ranges(ext.header_offset - L.SECTOR, L.STREAM_FOOTER_SIZE, "header"))
    if h.descriptor_offset:
        parts.append(ranges(h.descriptor_offset * L.SECTOR, h.descriptor_size * L.SECTOR, "header"))
    for d in (ext.gd, ext.rgd):
        if d is None:
            continue
        at = (h.gd_offset if d is ext.gd else h.rgd_offset) * L.SECTOR
        parts.append(ranges(at, len(d) * ext.entry_size, "l1"))
        parts.append(ranges(d[d != 0].astype(_U) * _U(L.SECTOR), ext.table_bytes, "l2"))
    g = img.grains.of(i)
    for kind, role in ((model.DATA, "data"), (model.COMPRESSED, "compressed")):
        sel = g.kind == kind
        parts.append(ranges(g.host[sel], g.length[sel], role, 0))
    return parts
