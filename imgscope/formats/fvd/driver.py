"""FVD (Fast Virtual Disk) translated into the neutral model (FORMATS.md §9.1).

Best effort: FVD was never merged into qemu and no producer exists, so this
driver follows the 2011 patch series as FORMATS.md describes it and is tested
only on images built from :mod:`.layout` (docs/formats/fvd.md).

Where a guest byte lives (the patch's ``fvd_get_block_status``):

* while a base image is in use (``all_data_in_fvd_img`` = 0 and ``base_img``
  named), bytes below ``base_img_size`` whose bitmap bit is 0 are read from the
  base image — kind ``unallocated``;
* everything else is in the FVD image: in a *compact* image through the
  one-level table (chunk → physical chunk at ``data_offset + index × chunk``;
  an empty entry reads as zeros), otherwise at ``data_offset + guest offset``
  (the data area mirrors the virtual disk; holes in the file read as zeros).

Opening is read-only and, like a read-only open of the patch, does not replay
the journal: a dirty image (``clean_shutdown`` = 0) shows its on-disk bitmap
and table; :meth:`FvdImage.journal_records` lists what a writable open would
replay and ``check()`` reports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import gcd
from typing import Any

import numpy as np

from ... import native
from ...errors import FormatError
from ...extents import OFFSET_VALID, Extents
from ...image import Image, implemented_in
from ...io import Source
from ...limits import enforce
from ...model import DATA, UNALLOCATED, ZERO, GuestMap
from ...refrows import RefRows, ranges
from ..header import read_fixed_header
from . import layout as L

_U = np.uint64
#: guest map unit of a non-compact image without a base image (nothing finer exists in the format)
NOMINAL_UNIT = 64 << 10
MAX_UNIT = 1 << 30
#: host offsets stay far from int64 overflow (offset arithmetic in numpy)
MAX_OFFSET = 1 << 62


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _require(cond: bool, field: str, reason: str) -> None:
    if not cond:
        raise FormatError(f"fvd header.{field}", L.field_offset(field), reason)


def read_header(src: Source) -> Any:
    """The validated header: what the patch's ``fvd_open`` rejects, plus every size imgscope allocates for."""
    h = L.Header.parse(read_fixed_header(src, L.HEADER_SIZE, "fvd", L.MAGIC.to_bytes(4, "little")))
    _require(h.version == L.VERSION, "version", f"version {h.version} is not {L.VERSION}")
    vs = h.virtual_disk_size
    _require(vs >= 0 and vs % L.SECTOR == 0, "virtual_disk_size", f"{vs} is not a non-negative multiple of 512")
    for name in ("metadata_size", "base_img_size", "bitmap_offset", "bitmap_size", "table_offset",
                 "journal_offset", "journal_size"):
        _require(h[name] >= 0, name, f"{h[name]} is negative")
    _require(h.metadata_size + vs < MAX_OFFSET, "metadata_size", f"the data area ends past {MAX_OFFSET:#x}")
    if h.compact_image:
        c = h.chunk_size
        _require(0 < c <= MAX_UNIT and c % L.SECTOR == 0, "chunk_size", f"{c} is not a multiple of 512 in (0, 1 GiB]")
        enforce("max_table_bytes", L.table_bytes(vs, c), "fvd table", h.table_offset)
    if _base_in_use(h):
        b = h.block_size
        _require(0 < b <= MAX_UNIT and b % L.SECTOR == 0, "block_size", f"{b} is not a multiple of 512 in (0, 1 GiB]")
        enforce("max_table_bytes", h.bitmap_size, "fvd bitmap", h.bitmap_offset)
    enforce("max_metadata_bytes", h.journal_size, "fvd journal", h.journal_offset)
    return h


def _base_in_use(h: Any) -> bool:
    """The base image is read (``init_bitmap``): not all data copied yet and a base named."""
    return not h.all_data_in_fvd_img and h.base_img[:1] != b"\0"


@dataclass
class JournalRecord:
    """One journal record (``kind`` "bitmap" or "table"), where it was found and what it sets."""

    offset: int       # host offset of the record
    kind: str
    first: int        # bitmap: first sector; table: first chunk
    count: int        # bitmap: sectors; table: entries
    entries: Any = None  # table: uint32 array of the journalled entries (dirty bit still set)


class FvdImage(Image):
    format = "fvd"
    label = "FVD"

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.h = read_header(src)
        self.journal_problems: list[tuple[int, str]] = []

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.h.virtual_disk_size

    @property
    def compact(self) -> bool:
        return bool(self.h.compact_image)

    @property
    def base_in_use(self) -> bool:
        return _base_in_use(self.h)

    @property
    def cluster_size(self) -> int | None:
        return self.h.chunk_size if self.compact else None

    @property
    def dirty(self) -> bool:
        return not self.h.clean_shutdown

    @property
    def data_file(self) -> str | None:
        return _text(self.h.data_file) or None

    @property
    def data_offset(self) -> int:
        """Host offset of the data area (``metadata_size`` in whole sectors; 0 of a separate data file)."""
        return 0 if self.data_file else self.h.metadata_size // L.SECTOR * L.SECTOR

    @property
    def unit(self) -> int:
        """Guest map granularity: the finer of chunk and bitmap block (their gcd)."""
        sizes = ([self.h.chunk_size] if self.compact else []) + ([self.h.block_size] if self.base_in_use else [])
        return gcd(*sizes) if sizes else NOMINAL_UNIT

    def backing(self) -> tuple[str, str | None] | None:
        if not self.base_in_use:
            return None
        return _text(self.h.base_img), (_text(self.h.base_img_fmt) or None)

    # ---------------------------------------------------------------- metadata
    @cached_property
    def table(self) -> np.ndarray:
        """Raw u32 table entries, one per virtual chunk (empty array for a non-compact image)."""
        if not self.compact:
            return np.zeros(0, np.uint32)
        n = L.table_entries(self.virtual_size, self.h.chunk_size)
        out = np.full(n, L.EMPTY_TABLE, np.uint32)  # entries past the end of the file: not allocated
        inside = max(0, min(n, (self.src.size - self.h.table_offset) // 4))
        buf = self.src.read(self.h.table_offset, inside * 4, "fvd table")
        out[:inside] = np.frombuffer(buf, "<u4", count=inside)
        return out

    @cached_property
    def bitmap(self) -> np.ndarray:
        """One bool per base-image block (True = the block is in the FVD image); empty without a base."""
        if not self.base_in_use:
            return np.zeros(0, bool)
        bs = self.h.block_size
        nblocks = -(-min(self.h.base_img_size, self.virtual_size) // bs)  # blocks past the disk are never read
        enforce("max_guest_clusters", nblocks, "fvd bitmap", self.h.bitmap_offset)
        nbytes = min(self.h.bitmap_size, -(-nblocks // 8))
        raw = np.frombuffer(self.src.read(self.h.bitmap_offset, nbytes, "fvd bitmap", zero_fill=True), np.uint8)
        bits = np.unpackbits(raw, bitorder="little").astype(bool)
        out = np.zeros(nblocks, bool)  # a bitmap too short for the base image: the rest reads from the base
        out[:min(nblocks, len(bits))] = bits[:nblocks]
        return out

    def chunk_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(allocated mask, physical chunk index with the dirty bit masked off, as the patch's READ_TABLE)."""
        e = self.table
        alloc = e != np.uint32(L.EMPTY_TABLE)
        return alloc, np.where(alloc, e & np.uint32(~L.DIRTY_TABLE & 0xFFFFFFFF), np.uint32(0))

    def chunk_offsets(self, index: np.ndarray) -> np.ndarray:
        return _U(self.data_offset) + index.astype(_U) * _U(self.h.chunk_size)

    # ---------------------------------------------------------------- records
    def header_fields(self) -> dict[str, Any]:
        h = self.h
        out: dict[str, Any] = {k: v for k, v in h.items() if not k.startswith("_")}
        for k in L.TEXT_FIELDS:
            out[k] = _text(h[k])
        out["magic"] = f"{h.magic:#010x}"
        out["header_size"] = L.HEADER_SIZE
        out["data_offset"] = self.data_offset
        out["table_entries"] = len(self.table)
        out["base_in_use"] = self.base_in_use
        out["journal_records"] = len(self.journal_records())
        out["file_size"] = self.src.size
        return out

    def info_dict(self) -> dict[str, Any]:
        """qemu-img-style keys (there is no qemu oracle for FVD) plus ``format-specific`` FVD facts."""
        out = super().info_dict()
        out["format-specific"] = {"type": "fvd", "data": {
            "compact-image": self.compact, "clean-shutdown": bool(self.h.clean_shutdown),
            "journal-size": self.h.journal_size, "block-size": self.h.block_size,
            "all-data-in-fvd-img": bool(self.h.all_data_in_fvd_img),
            **({"data-file": self.data_file} if self.data_file else {})}}
        return out

    def journal_records(self) -> list[JournalRecord]:
        """Every record of the journal, in file order (malformed ones land in ``journal_problems``)."""
        return self._journal

    @cached_property
    def _journal(self) -> list[JournalRecord]:
        h = self.h
        inside = max(0, min(h.journal_size, self.src.size - h.journal_offset))  # sectors past EOF hold no record
        size = inside // L.SECTOR * L.SECTOR
        if size <= 0:
            return []
        raw = self.src.read(h.journal_offset, size, "fvd journal")
        first = np.frombuffer(raw, "<u4").reshape(-1, L.SECTOR // 4)[:, 0]
        out: list[JournalRecord] = []
        for s in np.flatnonzero(first).tolist():
            self._read_sector(raw[s * L.SECTOR:(s + 1) * L.SECTOR], h.journal_offset + s * L.SECTOR, out)
        return out

    def _read_sector(self, sec: bytes, base: int, out: list[JournalRecord]) -> None:
        pos = 0
        while pos + 4 <= L.SECTOR:
            typ = int.from_bytes(sec[pos:pos + 4], "little")
            if typ == L.EMPTY_JRECORD:
                return
            if typ == L.BITMAP_JRECORD and pos + L.BITMAP_RECORD_SIZE <= L.SECTOR:
                r = L.BitmapRecord.parse(sec[pos:])
                out.append(JournalRecord(base + pos, "bitmap", r.dirty_sector_begin, r.num_dirty_sectors))
                pos += L.BITMAP_RECORD_SIZE
            elif typ == L.TABLE_JRECORD and pos + L.TABLE_RECORD_HEAD <= L.SECTOR:
                count = int.from_bytes(sec[pos + 8:pos + 12], "little")
                if pos + L.TABLE_RECORD_HEAD + 4 * count > L.SECTOR:
                    self.journal_problems.append((base + pos, f"table record of {count} entries runs past its sector"))
                    return
                r = L.TableRecord.parse(sec[pos:])
                out.append(JournalRecord(base + pos, "table", r.first_chunk, r.count, np.array(r.entries, np.uint32)))
                pos += L.TABLE_RECORD_HEAD + 4 * count
            else:
                self.journal_problems.append((base + pos, f"unknown or truncated record type {typ:#010x}"))
                return

    # ---------------------------------------------------------------- mapping
    def guest_map(self, layer: str | int = "active") -> GuestMap:
        self.require_active_layer(layer)
        unit = self.unit
        n = enforce("max_guest_clusters", -(-self.virtual_size // unit), "fvd guest map")
        guest = np.arange(n, dtype=_U) * _U(unit)
        kind, host, flags = self._fvd_units(guest)
        if self.base_in_use:
            in_base = self._in_base(guest)
            kind[in_base] = UNALLOCATED
            host[in_base] = 0
        length = np.where(kind == DATA, _U(unit), _U(0))
        table = np.array([self.h.table_offset] if self.compact else [], _U)
        return GuestMap("active", unit, self.virtual_size, kind, host, length, flags, None, None, table)

    def _in_base(self, guest: np.ndarray) -> np.ndarray:
        """Units (by their first byte) read from the base image."""
        below = guest < _U(self.h.base_img_size)
        block = np.minimum(guest // _U(self.h.block_size), _U(max(len(self.bitmap) - 1, 0))).astype(np.int64)
        return below & ~self.bitmap[block] if len(self.bitmap) else np.zeros(len(guest), bool)

    def _fvd_units(self, guest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kind, host, flags) of units as the FVD image itself stores them (ignoring the base image)."""
        n = len(guest)
        flags = np.zeros(n, np.uint8)
        if not self.compact:
            return np.full(n, DATA, np.uint8), _U(self.data_offset) + guest, flags
        cs = _U(self.h.chunk_size)
        chunk = (guest // cs).astype(np.int64)
        alloc, idx = self.chunk_index()
        a = alloc[chunk]
        kind = np.where(a, np.uint8(DATA), np.uint8(ZERO if self.base_in_use else UNALLOCATED)).astype(np.uint8)
        host = np.where(a, self.chunk_offsets(idx[chunk]) + guest % cs, _U(0))
        flags[a & ((self.table[chunk] & np.uint32(L.DIRTY_TABLE)) != 0)] |= native.F_RESERVED
        return kind, host, flags

    def extents(self) -> Extents:
        gm = self.guest_map()
        unit, status, offset = native.unit_status(gm.kind, gm.host, None, None, 1, gm.cluster_size, False)
        if self.data_file:  # host offsets are in the data file, not in this one
            status = status & np.uint8(~OFFSET_VALID & 0xFF)
            offset = np.zeros_like(offset)
        ext = Extents.from_units(unit, status, offset, gm.virtual_size)
        ext = self._split_base_end(ext, unit)
        if not self.compact and not self.data_file:
            from ..vdi.tables import mark_host_holes
            ext = mark_host_holes(ext, self.src.data_ranges(), self.src.size)
        return ext

    def _split_base_end(self, ext: Extents, unit: int) -> Extents:
        """The unit holding the base image's end reads from the base only up to that end (sector exact)."""
        end = self.h.base_img_size
        if not self.base_in_use or end % unit == 0 or end >= self.virtual_size:
            return ext
        i = int(np.searchsorted(ext.start, end, side="right")) - 1
        if ext.status[i] != 0:
            return ext
        u0 = end // unit * unit
        kind, host, _ = self._fvd_units(np.array([u0], _U))
        _, st, off = native.unit_status(kind, host, None, None, 1, unit, False)
        if self.data_file:
            st, off = st & np.uint8(~OFFSET_VALID & 0xFF), np.zeros(1, _U)
        u1 = min(u0 + unit, self.virtual_size)
        e0, e1 = int(ext.start[i]), int(ext.start[i] + ext.length[i])
        pieces = [(e0, end - e0, 0, 0), (end, u1 - end, int(st[0]), int(off[0]) + (end - u0) if st[0] else 0)]
        if e1 > u1:
            pieces.append((u1, e1 - u1, 0, 0))
        cols = list(zip(*pieces))
        return Extents(np.concatenate([ext.start[:i], np.array(cols[0], np.int64), ext.start[i + 1:]]),
                       np.concatenate([ext.length[:i], np.array(cols[1], np.int64), ext.length[i + 1:]]),
                       np.concatenate([ext.status[:i], np.array(cols[2], np.uint8), ext.status[i + 1:]]),
                       np.concatenate([ext.offset[:i], np.array(cols[3], _U), ext.offset[i + 1:]]), ext.size)

    # ---------------------------------------------------------------- references
    def reference_rows(self) -> RefRows:
        """Header (``header``), bitmap (``bitmap_data``), table (``l1``), journal (``header``), data chunks."""
        h = self.h
        parts: list[tuple] = [ranges(0, L.HEADER_SIZE, "header")]
        if self.base_in_use and h.bitmap_size:
            parts.append(ranges(h.bitmap_offset, h.bitmap_size, "bitmap_data"))
        if self.compact:
            parts.append(ranges(h.table_offset, L.table_bytes(self.virtual_size, h.chunk_size), "l1"))
        if h.journal_size:
            parts.append(ranges(h.journal_offset, h.journal_size, "header"))
        if self.data_file:
            return RefRows.join(parts)
        if self.compact:
            alloc, idx = self.chunk_index()
            parts.append(ranges(self.chunk_offsets(idx[alloc]), h.chunk_size, "data", 0))
        elif self.virtual_size:
            parts.append(ranges(self.data_offset, self.virtual_size, "data", 0))
        return RefRows.join(parts)

    check = implemented_in("imgscope.formats.fvd.check:check_image")

