"""VHDX as Hyper-V leaves it: qemu-made images rewritten with ``imgscope.formats.vhdx.layout``."""
from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Callable

from imgscope.formats.vhdx import layout as XL
from imgscope.formats.vhdx.crc32c import with_zeroed_field

from .common import KiB, MiB, pattern, qemu_img, qemu_io


def _vhdx_base(d: Path, name: str, opts: str, size: str, writes: list[str]) -> Path:
    qemu_img("create", "-q", "-f", "vhdx", "-o", opts, name, size, cwd=d)
    if writes:
        qemu_io("vhdx", name, *writes, cwd=d)
    return d / name


def _vhdx_regions(raw: bytes) -> dict:
    rt = XL.RegionTableHeader.parse(raw[XL.REGION_TABLE_OFFSETS[0]:])
    out = {}
    for i in range(rt.entry_count):
        e = XL.RegionTableEntry.parse(raw[XL.REGION_TABLE_OFFSETS[0] + 16 + 32 * i:])
        out[XL.guid(e.guid)] = e
    return out


def _vhdx_metadata_items(raw: bytes, meta_at: int) -> dict:
    th = XL.MetadataTableHeader.parse(raw[meta_at:])
    out = {}
    for i in range(th.entry_count):
        e = XL.MetadataEntry.parse(raw[meta_at + 32 + 32 * i:])
        out[XL.guid(e.item_id)] = e
    return out


def vhdx_logical_4k(d: Path) -> str:
    """A VHDX with 4096-byte logical sectors (as Hyper-V creates for 4Kn disks)."""
    p = _vhdx_base(d, "l.vhdx", "block_size=1M", "16M", ["write -P 0x51 0 64k", "write -P 0x52 9M 1M"])
    raw = bytearray(p.read_bytes())
    meta = _vhdx_regions(raw)[XL.METADATA_GUID]
    item = _vhdx_metadata_items(raw, meta.file_offset)[XL.LOGICAL_SECTOR_SIZE]
    struct.pack_into("<I", raw, meta.file_offset + item.offset, 4096)
    p.write_bytes(bytes(raw))
    return "l.vhdx"


def vhdx_block(bs_mib: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        size = max(3 * bs_mib, 8) * MiB
        _vhdx_base(d, "k.vhdx", f"block_size={bs_mib}M", str(size),
                   ["write -P 0x53 0 4k", f"write -P 0x54 {size - 3 * MiB} 2M"])
        return "k.vhdx"
    return build


def vhdx_bat_states(d: Path, partial: bool = False) -> str:
    """BAT entries rewritten to the states Hyper-V uses: ZERO, UNMAPPED (3 and qemu's 5), UNDEFINED and,
    with ``partial``, PARTIALLY_PRESENT (a differencing-disk state, in a disk without a parent)."""
    p = _vhdx_base(d, "s.vhdx", "block_size=1M", "8M", [f"write -P 0x{0x40 + i:x} {i}M 1M" for i in range(7)])
    raw = bytearray(p.read_bytes())
    bat = _vhdx_regions(raw)[XL.BAT_GUID]
    states = {1: XL.ZERO, 2: XL.UNMAPPED, 3: XL.UNDEFINED, 4: XL.UNMAPPED_V095, 6: XL.PARTIALLY_PRESENT}
    if not partial:
        del states[6]
    for i, st in states.items():
        at = bat.file_offset + 8 * i
        (e,) = struct.unpack_from("<Q", raw, at)
        keep = e & XL.BAT_OFFSET_MASK if st == XL.PARTIALLY_PRESENT else 0
        struct.pack_into("<Q", raw, at, keep | st)
    p.write_bytes(bytes(raw))
    return "s.vhdx"


def vhdx_log_dirty(d: Path) -> str:
    """A VHDX left with a log to replay, as Hyper-V leaves it on power loss: the payload of a newly
    allocated block is in the file (appended), its BAT update only in the log; a second descriptor zeroes
    the first 4 KiB of block 0."""
    p = _vhdx_base(d, "g.vhdx", "block_size=1M", "8M", ["write -P 0x55 0 64k"])
    raw = bytearray(p.read_bytes())
    bat = _vhdx_regions(raw)[XL.BAT_GUID]
    block0 = struct.unpack_from("<Q", raw, bat.file_offset)[0] & XL.BAT_OFFSET_MASK
    new_at = -(-len(raw) // MiB) * MiB
    raw += bytes(new_at - len(raw)) + pattern("logged", MiB)
    sector_at = bat.file_offset                       # the BAT's first 4 KiB sector, with entry 2 set
    sector = bytearray(raw[sector_at:sector_at + XL.LOG_SECTOR])
    struct.pack_into("<Q", sector, 16, new_at | XL.FULLY_PRESENT)
    hdr_at = next(at for at in XL.HEADER_OFFSETS if XL.Header.parse(raw[at:]).log_length)
    hdr = XL.Header.parse(raw[hdr_at:])
    log_guid, seq = uuid.UUID(int=0x10C).bytes_le, 7
    descs = [dict(signature=b"desc", trailing_bytes=bytes(sector[-4:]), leading_bytes=bytes(sector[:8]),
                  file_offset=sector_at, sequence_number=seq),
             dict(signature=b"zero", trailing_bytes=bytes(4), leading_bytes=struct.pack("<Q", XL.LOG_SECTOR),
                  file_offset=block0, sequence_number=seq)]
    entry = XL.LogEntryHeader.build(dict(signature=b"loge", checksum=0, entry_length=2 * XL.LOG_SECTOR, tail=0,
                                         sequence_number=seq, descriptor_count=len(descs), reserved=0,
                                         log_guid=log_guid, flushed_file_offset=len(raw),
                                         last_file_offset=len(raw)))
    entry += b"".join(XL.LogDescriptor.build(x) for x in descs)
    entry = entry.ljust(XL.LOG_SECTOR, b"\0") + XL.LogDataSector.build(dict(
        signature=b"data", sequence_high=seq >> 32, data=bytes(sector[8:-4]), sequence_low=seq & 0xFFFFFFFF))
    entry = bytearray(entry)
    struct.pack_into("<I", entry, 4, with_zeroed_field(bytes(entry), 4))
    raw[hdr.log_offset:hdr.log_offset + len(entry)] = entry
    for at in XL.HEADER_OFFSETS:
        h = XL.Header.parse(raw[at:])
        h.log_guid = log_guid
        raw[at:at + XL.HEADER_CRC_SIZE] = XL.Header.build(h)
        _vhdx_header_checksum(raw, at)
    p.write_bytes(bytes(raw))
    return p.name


def vhdx_differencing(d: Path) -> str:
    """A differencing VHDX (has_parent, a parent locator with the three path keys) on a parent in the
    same directory, made by rewriting a qemu-made VHDX's metadata."""
    _vhdx_base(d, "parent.vhdx", "block_size=1M", "8M", ["write -P 0x57 0 2M"])
    p = _vhdx_base(d, "child.vhdx", "block_size=1M", "8M", ["write -P 0x58 1M 64k"])
    raw = bytearray(p.read_bytes())
    meta = _vhdx_regions(raw)[XL.METADATA_GUID]
    items = _vhdx_metadata_items(raw, meta.file_offset)
    fp = items[XL.FILE_PARAMETERS]
    struct.pack_into("<I", raw, meta.file_offset + fp.offset + 4, XL.PARAM_HAS_PARENT)
    kv = {"parent_linkage": "{" + str(uuid.UUID(int=5)) + "}", "relative_path": ".\\parent.vhdx",
          "volume_path": "\\\\?\\Volume{00000000-0000-0000-0000-000000000001}\\vm\\parent.vhdx",
          "absolute_win32_path": "C:\\vm\\parent.vhdx"}
    head = XL.ParentLocatorHeader.build(dict(locator_type=uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913").bytes_le,
                                             reserved=0, key_value_count=len(kv)))
    entries, blob = b"", b""
    base = len(head) + 12 * len(kv)
    for k, v in kv.items():
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        entries += XL.ParentLocatorEntry.build(dict(key_offset=base + len(blob), value_offset=base + len(blob) + len(kb),
                                                    key_length=len(kb), value_length=len(vb)))
        blob += kb + vb
    loc = head + entries + blob
    used = max(e.offset + e.length for e in items.values())
    n = len(items)
    entry = XL.MetadataEntry.build(dict(item_id=XL.PARENT_LOCATOR.bytes_le, offset=used, length=len(loc),
                                        flags=XL.META_IS_REQUIRED, reserved=0))
    raw[meta.file_offset + 32 + 32 * n:meta.file_offset + 64 + 32 * n] = entry
    struct.pack_into("<H", raw, meta.file_offset + 10, n + 1)
    raw[meta.file_offset + used:meta.file_offset + used + len(loc)] = loc
    p.write_bytes(bytes(raw))
    return "child.vhdx"


def _vhdx_header_checksum(raw: bytearray, at: int) -> None:
    struct.pack_into("<I", raw, at + 4, with_zeroed_field(bytes(raw[at:at + XL.HEADER_CRC_SIZE]), 4))


#: cases whose guest content qemu cannot read (``qemu-img convert`` fails), with the reason
NO_CONTENT = {"vhdx-partially-present": "qemu reads a PARTIALLY_PRESENT block of a disk without a parent as EIO"}

CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "vhdx-logical-4k": ("vhdx", vhdx_logical_4k),
    **{f"vhdx-block-{m}m": ("vhdx", vhdx_block(m)) for m in (1, 8, 64, 256)},
    "vhdx-bat-states": ("vhdx", vhdx_bat_states),
    "vhdx-partially-present": ("vhdx", lambda d: vhdx_bat_states(d, partial=True)),
    "vhdx-log-dirty": ("vhdx", vhdx_log_dirty),
    "vhdx-differencing": ("vhdx", vhdx_differencing),
}
