"""VHD as Hyper-V ("win "), Disk2VHD ("d2v "), Virtual PC ("vpc "), Virtual Server ("vs  "), XenServer
and qemu write it, built with ``imgscope.formats.vpc.layout``."""
from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Callable

from imgscope.formats.vpc import layout as PL

from .common import KiB, MiB, GiB, SECTOR, pattern, pwrite


def chs(total_sectors: int) -> tuple[int, int, int]:
    """The VHD specification's CHS geometry for a disk of ``total_sectors`` (Virtual PC, Hyper-V)."""
    total = min(total_sectors, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_footer(size: int, disk_type: int, creator: bytes, data_offset: int, geometry=None, **kw) -> bytes:
    c, h, s = geometry or chs(size // SECTOR)
    f = dict(cookie=PL.COOKIE, features=2, format_version=0x10000, data_offset=data_offset, timestamp=0x2A3B4C5D,
             creator_application=creator, creator_version=0x60001, creator_host_os=b"Wi2k", original_size=size,
             current_size=size, cylinders=c, heads=h, sectors_per_track=s, disk_type=disk_type, checksum=0,
             unique_id=uuid.UUID(int=size ^ disk_type).bytes, saved_state=0, reserved=bytes(427))
    f.update(kw)
    raw = bytearray(PL.Footer.build(f))
    struct.pack_into(">I", raw, PL.FOOTER_CHECKSUM_AT, PL.checksum(raw, PL.FOOTER_CHECKSUM_AT))
    return bytes(raw)


def vhd_dynamic(path: Path, size: int, creator: bytes, blocks: dict[int, bytes], block_size: int = 2 * MiB,
                align: int = SECTOR, head_footer: bytes | None = None, disk_type: int = PL.DYNAMIC,
                locators: dict[bytes, bytes] | None = None, dyn_kw: dict | None = None, bitmap: int = 0,
                **footer_kw) -> None:
    """A dynamic (or differencing) VHD: footer copy, dynamic header, BAT, parent locator data, then the
    blocks (sector bitmap + data) in index order, each bitmap placed so that the block's data starts on an
    ``align`` boundary; ``bitmap`` > 0: a writer whose bitmap takes that many bytes (not qemu's size)."""
    footer = vhd_footer(size, disk_type, creator, SECTOR, **footer_kw)
    n = -(-size // block_size)
    bat_at = 3 * SECTOR
    bat = [PL.BAT_UNUSED] * n
    bmp = bitmap or PL.bitmap_size(block_size)
    pos = bat_at + -(-n * 4 // SECTOR) * SECTOR
    locs = []
    for code, data in (locators or {}).items():
        space = -(-len(data) // SECTOR) * SECTOR
        locs.append(dict(platform_code=code, platform_data_space=space, platform_data_length=len(data), reserved=0,
                         platform_data_offset=pos))
        pwrite(path, pos, data.ljust(space, b"\0"))
        pos += space
    placed = []
    for idx in sorted(blocks):
        data_at = -(-(pos + bmp) // align) * align
        bat[idx] = (data_at - bmp) // SECTOR
        placed.append((data_at - bmp, blocks[idx]))
        pos = data_at + block_size
    dyn = dict(cookie=PL.DYN_COOKIE, data_offset=PL.DATA_OFFSET_NONE, table_offset=bat_at, header_version=0x10000,
               max_table_entries=n, block_size=block_size, checksum=0, parent_unique_id=bytes(16),
               parent_timestamp=0, reserved1=0, parent_unicode_name=bytes(512),
               parent_locators=locs + [dict(platform_code=bytes(4), platform_data_space=0, platform_data_length=0,
                                            reserved=0, platform_data_offset=0)] * (8 - len(locs)),
               reserved2=bytes(256))
    dyn.update(dyn_kw or {})
    draw = bytearray(PL.DynHeader.build(dyn))
    struct.pack_into(">I", draw, PL.DYN_CHECKSUM_AT, PL.checksum(draw, PL.DYN_CHECKSUM_AT))
    pwrite(path, 0, head_footer if head_footer is not None else footer)
    pwrite(path, SECTOR, bytes(draw))
    pwrite(path, bat_at, struct.pack(f">{n}I", *bat))
    for at, data in placed:
        pwrite(path, at, b"\xff" * bmp + data.ljust(block_size, b"\0"))
    pwrite(path, max(pos, bat_at + n * 4), footer)


def vhd_fixed(path: Path, size: int, creator: bytes, data: bytes, file_data: int | None = None,
              **footer_kw) -> None:
    """A fixed VHD: ``file_data`` bytes of data (default ``size``) then the footer, nothing in front."""
    n = size if file_data is None else file_data
    pwrite(path, 0, data[:n].ljust(n, b"\0") + vhd_footer(size, PL.FIXED, creator, PL.DATA_OFFSET_NONE,
                                                            **footer_kw))


def _vhd_blocks(tag: str, bs: int, idx: list[int]) -> dict[int, bytes]:
    return {i: pattern(f"{tag}{i}", bs // 2) + bytes(bs // 4) + pattern(f"{tag}{i}b", bs // 4) for i in idx}


def _vhd_creator(creator: bytes) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        size = 10 * MiB + 7 * SECTOR          # current_size and the CHS product differ
        vhd_dynamic(d / "c.vhd", size, creator, _vhd_blocks("c", 2 * MiB, [0, 4]))
        return "c.vhd"
    return build


def vhd_block_size(bs: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        vhd_dynamic(d / "b.vhd", 24 * MiB, b"win ", _vhd_blocks("b", bs, [0, 3, (24 * MiB // bs) - 1]),
                    block_size=bs)
        return "b.vhd"
    return build


def vhd_aligned_bitmap(d: Path) -> str:
    """Hyper-V style: each block's data 4 KiB aligned, the 512-byte bitmap in front of it (padding before)."""
    vhd_dynamic(d / "a.vhd", 16 * MiB, b"win ", _vhd_blocks("a", 2 * MiB, [1, 2, 7]), align=4 * KiB)
    return "a.vhd"


def vhd_differencing(d: Path) -> str:
    """A Hyper-V differencing disk on a dynamic parent in the same directory: parent UUID and name in the
    dynamic header, W2ru (relative) and W2ku (absolute) locators in UTF-16LE."""
    size = 12 * MiB
    vhd_dynamic(d / "parent.vhd", size, b"win ", _vhd_blocks("p", 2 * MiB, [0, 1, 5]))
    parent_id = PL.Footer.parse((d / "parent.vhd").read_bytes()[:SECTOR]).unique_id
    vhd_dynamic(d / "child.vhd", size, b"win ", _vhd_blocks("ch", 2 * MiB, [1, 2]), disk_type=PL.DIFFERENCING,
                locators={b"W2ru": ".\\parent.vhd".encode("utf-16-le"),
                          b"W2ku": "C:\\vms\\parent.vhd".encode("utf-16-le")},
                dyn_kw=dict(parent_unique_id=parent_id, parent_timestamp=0x2A3B4C5D,
                            parent_unicode_name="parent.vhd".encode("utf-16-be").ljust(512, b"\0")),
                unique_id=uuid.UUID(int=77).bytes)
    return "child.vhd"


def vhd_max_chs(d: Path) -> str:
    """Virtual PC's answer for a disk beyond 127 GiB: the maximal CHS geometry (qemu then uses
    current_size whatever the creator)."""
    size = 200 * GiB
    vhd_dynamic(d / "x.vhd", size, b"vpc ", _vhd_blocks("x", 2 * MiB, [0, size // (2 * MiB) - 1]),
                geometry=(65535, 16, 255))
    return "x.vhd"


def vhd_no_trailing_footer(d: Path) -> str:
    """A dynamic VHD cut before its trailing footer (an interrupted copy): qemu reads the copy at 0."""
    vhd_dynamic(d / "t.vhd", 6 * MiB, b"vpc ", _vhd_blocks("t", 2 * MiB, [0, 1]))
    with open(d / "t.vhd", "r+b") as f:
        f.truncate(f.seek(0, 2) - SECTOR)
    return "t.vhd"


def vhd_bitmap_4k(d: Path) -> str:
    """A writer that pads every sector bitmap to 4 KiB (data 4 KiB after the BAT entry's sector): qemu
    still takes the bitmap as 512 bytes, so what it reads at the start of a block is padding."""
    vhd_dynamic(d / "p4.vhd", 8 * MiB, b"win ", _vhd_blocks("p4", 2 * MiB, [0, 2]), bitmap=4 * KiB)
    return "p4.vhd"


def vhd_fixed_odd(d: Path) -> str:
    """A fixed VHD (Disk2VHD) whose current_size is not a sector multiple."""
    size = 3 * MiB + 1000
    vhd_fixed(d / "f.vhd", size, b"d2v ", pattern("f", size), file_data=-(-size // SECTOR) * SECTOR)
    return "f.vhd"


def vhd_fixed_short(d: Path) -> str:
    """A fixed VHD from Virtual PC whose data area is shorter than the CHS size says."""
    size = 5 * MiB
    vhd_fixed(d / "s.vhd", size, b"vpc ", pattern("s", size), file_data=size - 64 * KiB)
    return "s.vhd"


def vhd_header_mismatch(d: Path) -> str:
    """A dynamic VHD whose footer copy at offset 0 disagrees with the footer at the end (another size)."""
    size = 8 * MiB
    head = vhd_footer(size + 2 * MiB, PL.DYNAMIC, b"win ", SECTOR)
    vhd_dynamic(d / "m.vhd", size, b"win ", _vhd_blocks("m", 2 * MiB, [0, 3]), head_footer=head)
    return "m.vhd"


def vhd_bad_footer_checksum(d: Path) -> str:
    vhd_dynamic(d / "k.vhd", 4 * MiB, b"vpc ", _vhd_blocks("k", 2 * MiB, [1]))
    raw = bytearray((d / "k.vhd").read_bytes()[:SECTOR])
    raw[PL.FOOTER_CHECKSUM_AT] ^= 0x40
    pwrite(d / "k.vhd", 0, bytes(raw))
    return "k.vhd"


CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    **{f"vhd-creator-{c.decode().strip(' ').strip(chr(0))}": ("vpc", _vhd_creator(c))
       for c in (b"win ", b"d2v ", b"vpc ", b"qem2", b"vs  ", b"qemu", b"CTXS", b"tap\0")},
    **{f"vhd-block-{bs // KiB}k": ("vpc", vhd_block_size(bs)) for bs in (512 * KiB, MiB, 4 * MiB)},
    "vhd-aligned-bitmap": ("vpc", vhd_aligned_bitmap),
    "vhd-fixed-odd": ("vpc", vhd_fixed_odd),
    "vhd-bitmap-4k": ("vpc", vhd_bitmap_4k),
    "vhd-no-trailing-footer": ("vpc", vhd_no_trailing_footer),
    "vhd-differencing": ("vpc", vhd_differencing),
    "vhd-max-chs": ("vpc", vhd_max_chs),
    "vhd-fixed-short": ("vpc", vhd_fixed_short),
    "vhd-header-mismatch": ("vpc", vhd_header_mismatch),
    "vhd-bad-footer-checksum": ("vpc", vhd_bad_footer_checksum),
}
