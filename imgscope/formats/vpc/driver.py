"""VHD ("vpc" in qemu) translated into the neutral model: fixed, dynamic and differencing disks.

Where qemu 7.2 and the VHD specification disagree, the qemu behaviour is what
``info``/``map`` report (size from the CHS geometry for most creators, a fixed
disk recognised by the missing head copy of the footer, no backing file for
differencing disks) and the specification's view is kept in the frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ...errors import FormatError
from ...image import Image, implemented_in
from ...io import Source
from ...limits import enforce
from . import layout as L


@dataclass
class VhdMeta:
    """Everything read from the footer(s), the dynamic header and the BAT."""

    footer: Any
    footer_offset: int
    footer_raw: bytes
    dynamic: bool                 # qemu's view: a footer copy at offset 0
    virtual_size: int
    dyn: Any = None
    dyn_raw: bytes = b""
    bat_raw: bytes = b""          # the BAT as stored (see ``bat``)
    block_size: int = 0
    bitmap_size: int = 0

    @property
    def disk_type(self) -> int:
        return self.footer.disk_type

    @cached_property
    def bat(self) -> Any:
        """BAT entries as numpy uint32 (``L.BAT_UNUSED`` = unallocated); None for a fixed disk."""
        if self.dyn is None:
            return None
        import numpy as np
        return np.frombuffer(self.bat_raw, ">u4").astype(np.uint32)

    @property
    def bat_bytes(self) -> int:
        return (len(self.bat_raw) + L.SECTOR - 1) // L.SECTOR * L.SECTOR


def trailing_footer_offset(src: Source) -> int:
    """Where qemu reads the footer at the end of the file: the last sector of qemu's length."""
    return src.qemu_size - L.FOOTER_SIZE


def read_metadata(src: Source) -> VhdMeta:
    """Parse footer, dynamic header and BAT, with the checks qemu's open performs."""
    if src.size < L.FOOTER_SIZE:
        raise FormatError("vhd footer", 0, f"file of {src.size} bytes is shorter than a footer")
    head = src.read(0, L.FOOTER_SIZE, "vhd footer")
    if head[:8] == L.COOKIE:
        offset, raw, dynamic = 0, head, True
    else:
        offset = trailing_footer_offset(src)
        raw = src.read(offset, L.FOOTER_SIZE, "vhd footer", zero_fill=True)
        if raw[:8] != L.COOKIE:
            raise FormatError("vhd footer", offset, "no 'conectix' cookie at offset 0 or in the last sector")
        dynamic = False
    footer = L.Footer.parse(raw)
    meta = VhdMeta(footer, offset, raw, dynamic, _virtual_size(footer, offset))
    if dynamic:
        _read_dynamic(src, meta)
    return meta


def _virtual_size(f: Any, offset: int) -> int:
    sectors = f.cylinders * f.heads * f.sectors_per_track
    if f.creator_application in L.CURRENT_SIZE_CREATORS or sectors == L.MAX_GEOMETRY_SECTORS:
        sectors = f.current_size // L.SECTOR
    if sectors > L.MAX_SECTORS:
        raise FormatError("vhd footer", offset, f"disk of {sectors} sectors is larger than 2040 GiB")
    return sectors * L.SECTOR


def _read_dynamic(src: Source, meta: VhdMeta) -> None:
    at = meta.footer.data_offset
    raw = src.read(at, L.DYN_HEADER_SIZE, "vhd dynamic disk header", zero_fill=True)
    dyn = L.DynHeader.parse(raw)
    if dyn.cookie != L.DYN_COOKIE:
        raise FormatError("vhd dynamic disk header", at, "no 'cxsparse' cookie")
    bs = dyn.block_size
    if bs < L.SECTOR or bs & (bs - 1):
        raise FormatError("vhd dynamic disk header", at, f"block size {bs} is not a power of two >= 512")
    if dyn.max_table_entries * bs < meta.virtual_size:
        raise FormatError("vhd dynamic disk header", at,
                          f"{dyn.max_table_entries} BAT entries of {bs} bytes cannot hold {meta.virtual_size} bytes")
    enforce("max_table_bytes", dyn.max_table_entries * 4, "vhd BAT", dyn.table_offset)
    meta.bat_raw = src.read(dyn.table_offset, dyn.max_table_entries * 4, "vhd BAT", zero_fill=True)
    meta.dyn, meta.dyn_raw = dyn, raw
    meta.block_size, meta.bitmap_size = bs, L.bitmap_size(bs)


def _free_data_block_offset(m: VhdMeta) -> int:
    """qemu's free_data_block_offset: the end of the BAT (in whole sectors) or of its last block."""
    import struct  # not numpy: `info` stays numpy-free
    top = max((v for (v,) in struct.iter_unpack(">I", m.bat_raw[:len(m.bat_raw) // 4 * 4]) if v != L.BAT_UNUSED),
              default=None)
    end = -(-(m.dyn.table_offset + m.dyn.max_table_entries * 4) // L.SECTOR) * L.SECTOR
    return max(end, top * L.SECTOR + m.bitmap_size + m.block_size) if top is not None else end


class VpcImage(Image):
    format = "vpc"
    qemu_shows_backing = False  # qemu 7.2 does not follow VHD parents

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.meta = read_metadata(src)

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.meta.virtual_size

    @property
    def cluster_size(self) -> int | None:
        """The block size, as qemu reports it (none for a fixed disk)."""
        m = self.meta
        return m.block_size if m.dynamic and m.disk_type != L.FIXED and m.block_size else None

    @property
    def differencing(self) -> bool:
        return self.meta.dynamic and self.meta.disk_type == L.DIFFERENCING

    def qemu_open_error(self, io: bool = True) -> str | None:
        """vpc_open's refusals: the footer in use, and blocks ending past qemu's end of the file."""
        m = self.meta
        if L.checksum(m.footer_raw, L.FOOTER_CHECKSUM_AT) != m.footer.checksum:
            return "Incorrect header checksum"
        if m.dyn is not None and _free_data_block_offset(m) > self.src.qemu_size:
            return "block-vpc: free_data_block_offset points after the end of file. The image has been truncated."
        return None

    def header_fields(self) -> dict[str, Any]:
        m = self.meta
        out = {f"footer_{k}": v for k, v in m.footer.items() if not k.startswith("_") and k != "reserved"}
        out["footer_offset"] = m.footer_offset
        out["footer_checksum_computed"] = L.checksum(m.footer_raw, L.FOOTER_CHECKSUM_AT)
        out["disk_type_name"] = L.DISK_TYPES.get(m.disk_type, "unknown")
        out["chs_size"] = m.footer.cylinders * m.footer.heads * m.footer.sectors_per_track * L.SECTOR
        if m.dyn is not None:
            for k, v in m.dyn.items():
                if not k.startswith("_") and k not in ("reserved2", "parent_locators", "parent_unicode_name"):
                    out[f"dyn_{k}"] = v
            out["dyn_checksum_computed"] = L.checksum(m.dyn_raw, L.DYN_CHECKSUM_AT)
            out["dyn_parent_name"] = _utf16(m.dyn.parent_unicode_name, "utf-16-be")
            out["bitmap_size"] = m.bitmap_size
        out["file_size"] = self.src.size
        return out

    def extension_rows(self) -> list[dict[str, Any]]:
        """One row per parent locator in use (differencing disks)."""
        rows = []
        if self.meta.dyn is None:
            return rows
        for i, loc in enumerate(self.meta.dyn.parent_locators):
            if loc.platform_code == b"\0\0\0\0":
                continue
            rows.append({"type": int.from_bytes(loc.platform_code, "big"), "name": f"parent_locator[{i}]",
                         "offset": loc.platform_data_offset, "length": loc.platform_data_length,
                         "decoded": repr(self._locator_name(loc)), "raw": loc.platform_code})
        return rows

    # ---------------------------------------------------------------- parents
    def _locator_name(self, loc: Any) -> str | None:
        enc = L.PLATFORM_ENCODINGS.get(bytes(loc.platform_code))
        if enc is None or not loc.platform_data_length:
            return None
        n = enforce("max_descriptor_bytes", loc.platform_data_length, "vhd parent locator", loc.platform_data_offset)
        raw = self.src.read(loc.platform_data_offset, n, "vhd parent locator data")
        name = _utf16(raw, enc) if enc.startswith("utf-16") else raw.decode(enc, "replace").rstrip("\0")
        if loc.platform_code == b"MacX" and name.startswith("file://"):
            name = name[len("file://"):].removeprefix("localhost")
        name = name.replace("\\", "/")
        return name[2:] if name.startswith("./") else name

    @cached_property
    def parent_name(self) -> str | None:
        """The parent named by the locators (relative first), else the header's Unicode name."""
        if not self.differencing:
            return None
        locs = {bytes(loc.platform_code): loc for loc in self.meta.dyn.parent_locators}
        for code in L.PLATFORM_PREFERENCE:
            if code in locs:
                name = self._locator_name(locs[code])
                if name:
                    return name
        return _utf16(self.meta.dyn.parent_unicode_name, "utf-16-be") or None

    def backing(self) -> tuple[str, str | None] | None:
        name = self.parent_name
        return (name, "vpc") if name else None

    # ---------------------------------------------------------------- mapping, check
    def guest_map(self, layer: str | int = "active") -> Any:
        from .maps import guest_map
        return guest_map(self)

    extents = implemented_in("imgscope.formats.vpc.maps:extents")
    qemu_extents = implemented_in("imgscope.formats.vpc.maps:qemu_extents")
    reference_rows = implemented_in("imgscope.formats.vpc.maps:reference_rows")
    check = implemented_in("imgscope.formats.vpc.check:check_image")


def _utf16(raw: bytes, enc: str) -> str:
    n = len(raw) - len(raw) % 2
    return raw[:n].decode(enc, "replace").split("\0", 1)[0]
