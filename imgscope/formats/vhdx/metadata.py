"""Read a VHDX file's headers, log, region tables, metadata items and BAT.

Follows qemu 7.2's ``vhdx_open`` order.  Where qemu would refuse to open the
image (no valid header, bad first region table, overlapping regions, a log
that needs replaying) imgscope records why in ``qemu_open_error`` and, when it
can, goes on (second region table, log replayed in memory), so the image stays
inspectable and ``check`` can report every problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ...errors import FormatError
from ...io import Source
from ...limits import enforce
from . import layout as L
from .crc32c import with_zeroed_field
from .log import LogReplay, ReplayedSource, find_active


@dataclass
class HeaderCopy:
    offset: int
    header: Any
    valid: bool
    why: str | None


@dataclass
class RegionTable:
    offset: int
    entries: list[Any]
    valid: bool
    why: str | None
    raw: bytes = b""


@dataclass
class VhdxMeta:
    creator: str
    headers: list[HeaderCopy]
    current: int
    log: LogReplay
    region_tables: list[RegionTable]
    regions: list[Any]                       # entries of the table in use
    items: dict[Any, Any]                    # metadata item GUID -> entry
    block_size: int
    param_flags: int
    virtual_size: int
    logical_sector_size: int
    physical_sector_size: int
    page83: bytes
    bat_region: Any
    metadata_region: Any
    chunk_ratio: int
    bat_raw: bytes = b""                     # the BAT entries as stored (see ``bat``)
    qemu_open_error: list[str] = field(default_factory=list)
    parent_locator: dict[str, str] = field(default_factory=dict)

    @property
    def header(self) -> Any:
        return self.headers[self.current].header

    @cached_property
    def bat(self) -> Any:
        """The BAT entries as numpy uint64 (payload and sector-bitmap entries interleaved)."""
        import numpy as np
        return np.frombuffer(self.bat_raw, "<u8").astype(np.uint64)

    @property
    def has_parent(self) -> bool:
        return bool(self.param_flags & L.PARAM_HAS_PARENT)


def _header(src: Source, at: int) -> HeaderCopy:
    raw = src.read(at, L.HEADER_CRC_SIZE, "vhdx header", zero_fill=True)
    h = L.Header.parse(raw)
    why = None
    if with_zeroed_field(raw, 4) != h.checksum:
        why = "CRC-32C mismatch"
    elif h.signature != b"head":
        why = "no 'head' signature"
    elif h.version != 1:
        why = f"version {h.version}"
    return HeaderCopy(at, h, why is None, why)


def _current(headers: list[HeaderCopy]) -> int:
    a, b = headers
    if not a.valid and not b.valid:
        raise FormatError("vhdx header", a.offset, f"no valid header ({a.why}; {b.why})")
    if a.valid != b.valid:
        return 0 if a.valid else 1
    if a.header.sequence_number == b.header.sequence_number:
        if L.Header.build(a.header) != L.Header.build(b.header):
            raise FormatError("vhdx header", a.offset, "both headers valid with the same sequence number")
        return 0
    return 0 if a.header.sequence_number > b.header.sequence_number else 1


def _region_table(rd: Any, at: int) -> RegionTable:
    raw = rd.read(at, L.REGION_TABLE_SIZE, "vhdx region table", zero_fill=True)
    h = L.RegionTableHeader.parse(raw)
    why = None
    if with_zeroed_field(raw, 4) != h.checksum:
        why = "CRC-32C mismatch"
    elif h.signature != b"regi":
        why = "no 'regi' signature"
    elif h.entry_count > L.MAX_REGION_ENTRIES:
        why = f"{h.entry_count} entries (at most {L.MAX_REGION_ENTRIES})"
    entries = [] if why else [L.RegionTableEntry.parse(raw[16 + 32 * i:]) for i in range(h.entry_count)]
    return RegionTable(at, entries, why is None, why, raw[:16 + 32 * min(h.entry_count, L.MAX_REGION_ENTRIES)])


def read_metadata(src: Source) -> tuple[VhdxMeta, Any]:
    """(metadata, reader): the reader is ``src`` or a :class:`ReplayedSource` when a log is pending."""
    ident = L.FileIdentifier.parse(src.read(0, 520, "vhdx file identifier", zero_fill=True))
    if ident.signature != L.FILE_SIGNATURE:
        raise FormatError("vhdx file identifier", 0, "no 'vhdxfile' signature")
    headers = [_header(src, at) for at in L.HEADER_OFFSETS]
    cur = _current(headers)
    hdr = headers[cur].header
    errors: list[str] = []
    if hdr.log_version != 0:
        raise FormatError("vhdx header", headers[cur].offset, f"log version {hdr.log_version}")
    log = find_active(src, hdr)
    rd: Any = src
    if log.entries:
        errors.append("opened read-only, but contains a log that needs to be replayed")
        rd = ReplayedSource(src, log)
    tables = [_region_table(rd, at) for at in L.REGION_TABLE_OFFSETS]
    if not tables[0].valid:
        errors.append(f"region table 1: {tables[0].why}")
    use = tables[0] if tables[0].valid else tables[1]
    if not use.valid:
        raise FormatError("vhdx region table", use.offset, f"both region tables invalid ({tables[0].why})")
    regions = {L.guid(e.guid): e for e in use.entries}
    for g in (L.BAT_GUID, L.METADATA_GUID):
        if g not in regions:
            raise FormatError("vhdx region table", use.offset, f"no {L.REGION_NAMES[g]} region")
    unknown = [e for e in use.entries if L.guid(e.guid) not in L.REGION_NAMES and e.flags & L.REGION_REQUIRED]
    if unknown:
        raise FormatError("vhdx region table", use.offset, f"unknown required region {L.guid(unknown[0].guid)}")
    if len(regions) != len(use.entries):
        errors.append("duplicate region entries")
    meta = _metadata(rd, regions[L.METADATA_GUID], src.path)
    # qemu 7.2's vhdx_parse_metadata: differencing disks and 4 KiB logical sectors are not supported
    if meta["param_flags"] & L.PARAM_HAS_PARENT:
        errors.append("Operation not supported (a differencing image)")
    elif meta["logical_sector_size"] != 512:
        errors.append(f"Operation not supported (logical sectors of {meta['logical_sector_size']} bytes)")
    out = VhdxMeta(_utf16(ident.creator), headers, cur, log, tables, use.entries, bat_region=regions[L.BAT_GUID],
                   metadata_region=regions[L.METADATA_GUID], qemu_open_error=errors, **meta)
    errors.extend(f"VHDX region {a}-{b} overlaps with region {c}-{d}" for a, b, c, d in region_overlaps(out))
    out.bat_raw = _bat(rd, out)
    return out, rd


def _metadata(rd: Any, region: Any, path: str) -> dict[str, Any]:
    base = region.file_offset
    raw = rd.read(base, L.METADATA_TABLE_SIZE, "vhdx metadata table", zero_fill=True)
    th = L.MetadataTableHeader.parse(raw)
    if th.signature != b"metadata":
        raise FormatError("vhdx metadata table", base, "no 'metadata' signature")
    if th.entry_count * 32 > L.METADATA_TABLE_SIZE - 32:
        raise FormatError("vhdx metadata table", base, f"{th.entry_count} entries do not fit the table")
    items: dict[Any, Any] = {}
    for i in range(th.entry_count):
        e = L.MetadataEntry.parse(raw[32 + 32 * i:])
        g = L.guid(e.item_id)
        if g in items:
            raise FormatError("vhdx metadata table", base + 32 + 32 * i, f"duplicate item {g}")
        if g not in L.METADATA_NAMES and e.flags & L.META_IS_REQUIRED:
            raise FormatError("vhdx metadata table", base + 32 + 32 * i, f"unknown required item {g}")
        items[g] = e
    missing = [L.METADATA_NAMES[g] for g in L.REQUIRED_METADATA if g not in items]
    if missing:
        raise FormatError("vhdx metadata table", base, f"missing items {', '.join(missing)}")

    def item(g: Any, n: int) -> bytes:
        return rd.read(base + items[g].offset, n, f"vhdx metadata {L.METADATA_NAMES[g]}", zero_fill=True)

    fp = L.FileParameters.parse(item(L.FILE_PARAMETERS, 8))
    lss = int.from_bytes(item(L.LOGICAL_SECTOR_SIZE, 4), "little")
    out = {"items": items, "block_size": fp.block_size, "param_flags": fp.flags,
           "virtual_size": int.from_bytes(item(L.VIRTUAL_DISK_SIZE, 8), "little"), "logical_sector_size": lss,
           "physical_sector_size": int.from_bytes(item(L.PHYSICAL_SECTOR_SIZE, 4), "little"),
           "page83": item(L.PAGE83_DATA, 16)}
    bs = fp.block_size
    if not L.BLOCK_MIN <= bs <= L.BLOCK_MAX or bs & (bs - 1):
        raise FormatError("vhdx file parameters", base + items[L.FILE_PARAMETERS].offset, f"block size {bs}")
    if lss not in (512, 4096):
        raise FormatError("vhdx logical sector size", base + items[L.LOGICAL_SECTOR_SIZE].offset, f"{lss}")
    out["chunk_ratio"] = L.MAX_SECTORS_PER_BLOCK * lss // bs
    if fp.flags & L.PARAM_HAS_PARENT and L.PARENT_LOCATOR in items:
        out["parent_locator"] = _parent_locator(rd, base + items[L.PARENT_LOCATOR].offset,
                                                items[L.PARENT_LOCATOR].length)
    return out


def _parent_locator(rd: Any, at: int, length: int) -> dict[str, str]:
    n = enforce("max_descriptor_bytes", length, "vhdx parent locator", at)
    raw = rd.read(at, n, "vhdx parent locator", zero_fill=True)
    h = L.ParentLocatorHeader.parse(raw)
    out = {}
    for i in range(min(h.key_value_count, (n - 20) // 12)):
        e = L.ParentLocatorEntry.parse(raw[20 + 12 * i:])
        key = raw[e.key_offset:e.key_offset + e.key_length].decode("utf-16-le", "replace")
        out[key] = raw[e.value_offset:e.value_offset + e.value_length].decode("utf-16-le", "replace")
    return out


def bat_entries(m: VhdxMeta) -> int:
    """qemu's ``vhdx_calc_bat_entries``."""
    blocks = -(-m.virtual_size // m.block_size)
    if m.has_parent:
        return -(-blocks // m.chunk_ratio) * (m.chunk_ratio + 1)
    return blocks + (blocks - 1) // m.chunk_ratio if blocks else 0


def _bat(rd: Any, m: VhdxMeta) -> bytes:
    n = bat_entries(m)
    r = m.bat_region
    if n > r.length // 8:
        raise FormatError("vhdx BAT", r.file_offset, f"region of {r.length} bytes cannot hold {n} entries")
    enforce("max_table_bytes", n * 8, "vhdx BAT", r.file_offset)
    return rd.read(r.file_offset, n * 8, "vhdx BAT", zero_fill=True)


def region_overlaps(m: VhdxMeta) -> list[tuple[int, int, int, int]]:
    """Overlaps between the log and the regions, in qemu's registration order (each against the earlier ones)."""
    seen = [(m.header.log_offset, m.header.log_offset + m.header.log_length)]
    out = []
    for e in m.regions:
        s, t = e.file_offset, e.file_offset + e.length
        out.extend((s, t, a, b) for a, b in seen if not (s >= b or t <= a))
        seen.append((s, t))
    return out


def _utf16(raw: bytes) -> str:
    return raw.decode("utf-16-le", "replace").split("\0", 1)[0]
