"""Identify an image format by its magic bytes (../shared/FORMATS.md §1)."""
from __future__ import annotations

from .errors import UnsupportedFormat
from .io import Source

#: one sector: no format's header fits in less, and no disk is smaller
MIN_RAW_SIZE = 512


def detect(src: Source, *, tiny_raw: bool = False) -> str:
    """The format whose magic ``src`` carries, else "raw".

    A file smaller than one sector without any magic is not taken for a raw disk: it raises
    :class:`UnsupportedFormat` naming the file and its size, unless ``tiny_raw`` (qemu's probing,
    which backing files named without a format get).
    """
    head = src.read(0, min(src.size, 512), "image header", zero_fill=True)
    if head[:4] == b"QFI\xfb":
        version = int.from_bytes(head[4:8], "big") if len(head) >= 8 else 0
        return "qcow" if version == 1 else "qcow2"
    if head[:4] == b"QED\x00":
        return "qed"
    if head[:4] == b"KDMV" or head[:4] == b"COWD":
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if len(head) >= 0x44 and head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head[:8] == b"conectix":  # a dynamic VHD's footer copy; a fixed VHD (footer at the end only) is not
        return "vpc"               # probed, as qemu does not: a raw guest could write that footer itself
    if head[:4] == bytes.fromhex("a9f54351"):
        return "fvd"
    text = head.lstrip()
    if text.startswith(b"# Disk DescriptorFile") or b"createType" in head:
        return "vmdk"
    if src.size < MIN_RAW_SIZE and not tiny_raw:
        raise UnsupportedFormat(f"{src.path}: {src.size}-byte file matches no image format and is smaller than one "
                                f"{MIN_RAW_SIZE}-byte sector; use -f raw (format='raw') to read it as raw anyway")
    return "raw"
