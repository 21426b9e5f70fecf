"""Reading a fixed-size header at offset 0, as qcow, QED and VDI keep theirs."""
from __future__ import annotations

from ..errors import FormatError
from ..io import Source


def read_fixed_header(src: Source, size: int, fmt: str, magic: bytes | None = None) -> bytes:
    """The first ``size`` bytes of the file, zeros past its end as qemu reads them (a file cut inside
    its header opens when what is lost was zero, and fails the header's checks otherwise); refused
    (FormatError) when the file does not even hold the magic or, given ``magic``, does not start with it."""
    if src.size < max(len(magic or b""), 4):
        raise FormatError(f"{fmt} header", 0, f"file has {src.size} bytes, the header needs {size}")
    raw = src.read(0, size, f"{fmt} header", zero_fill=True)
    if magic is not None and raw[:len(magic)] != magic:
        raise FormatError(f"{fmt} header.magic", 0, f"{raw[:len(magic)]!r} is not {magic!r}")
    return raw
