"""The VMDK text descriptor: header keys, extent lines and the disk database.

Parsed line by line, bounded by ``LIMITS["max_descriptor_bytes"]`` and
``LIMITS["max_extents"]``.  The values qemu prints (CID, parentCID, createType,
parentFileNameHint) are taken the way qemu 7.2 takes them (first occurrence of
the key in the text), so ``info`` agrees with ``qemu-img info``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import FormatError
from ...limits import LIMITS, enforce

#: extent types qemu opens (others are listed but skipped, as qemu does)
OPENED_TYPES = ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE")
FLAT_TYPES = ("FLAT", "VMFS")
#: createType values qemu accepts in a separate descriptor file
DESCRIPTOR_CREATE_TYPES = ("monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
                           "twoGbMaxExtentFlat")

_EXTENT = re.compile(r'^\s*(\S{1,10})\s+(-?\d+)\s+(\S{1,10})\s+"([^"\n\r]{0,511})"(?:\s+(-?\d+))?')
_HEX = re.compile(r"\s*(?:0[xX])?([0-9a-fA-F]+)")


@dataclass
class ExtentLine:
    """One ``ACCESS SECTORS TYPE "FILE" [OFFSET]`` line."""

    line: int
    access: str
    sectors: int
    type: str
    filename: str
    offset: int | None

    @property
    def opened(self) -> bool:
        """Whether qemu opens this extent (RW and a type it knows)."""
        return self.access == "RW" and self.sectors > 0 and self.type in OPENED_TYPES


@dataclass
class Descriptor:
    text: str
    offset: int                     # where the text starts in its file
    fields: dict[str, str] = field(default_factory=dict)
    ddb: dict[str, str] = field(default_factory=dict)
    extents: list[ExtentLine] = field(default_factory=list)

    @property
    def cid(self) -> int | None:
        return _qemu_hex(self.text, "CID")

    @property
    def parent_cid(self) -> int | None:
        return _qemu_hex(self.text, "parentCID")

    @property
    def create_type(self) -> str | None:
        return _qemu_quoted(self.text, "createType", 2)

    @property
    def parent_hint(self) -> str | None:
        return _qemu_quoted(self.text, "parentFileNameHint", 2)


def parse(raw: bytes, offset: int, structure: str = "vmdk descriptor") -> Descriptor:
    """Parse descriptor bytes (text up to the first NUL)."""
    enforce("max_descriptor_bytes", len(raw), structure, offset)
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    desc = Descriptor(text, offset)
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _EXTENT.match(s)
        if m and m.group(1) in ("RW", "RDONLY", "NOACCESS"):
            if len(desc.extents) >= LIMITS["max_extents"]:
                enforce("max_extents", len(desc.extents) + 1, structure, offset)
            desc.extents.append(_extent(m, no, structure, offset))
            continue
        key, sep, value = s.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip().strip('"')
        (desc.ddb if key.startswith("ddb.") else desc.fields)[key] = value
    return desc


def _extent(m: re.Match, no: int, structure: str, offset: int) -> ExtentLine:
    access, sectors, typ, name, off = m.groups()
    ext = ExtentLine(no, access, int(sectors), typ, name, int(off) if off is not None else None)
    if ext.access == "RW":
        bad = ((typ == "FLAT" and (ext.offset is None or ext.offset < 0))
               or (typ != "FLAT" and ext.offset is not None))
        if bad:
            raise FormatError(structure, offset, f"invalid extent line {no}: {m.group(0).strip()!r}")
    return ext


def _qemu_hex(text: str, key: str) -> int | None:
    """qemu's ``vmdk_read_cid``: the hex number after the first occurrence of ``key`` plus one character."""
    at = text.find(key)
    if at < 0:
        return None
    m = _HEX.match(text, at + len(key) + 1)
    return int(m.group(1), 16) & 0xFFFFFFFF if m else None


def _qemu_quoted(text: str, key: str, skip: int) -> str | None:
    """qemu's ``vmdk_parse_description``: the text after ``key`` and ``skip`` characters, up to a quote."""
    at = text.find(key)
    if at < 0:
        return None
    start = at + len(key) + skip
    end = text.find('"', start)
    return text[start:end] if end >= 0 else None
