"""CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every VHDX structure.

Pure Python, table driven: VHDX checksums cover at most a few 64 KiB blocks
per image, so no native twin is needed.
"""
from __future__ import annotations


def _table() -> tuple[int, ...]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return tuple(out)


_TABLE = _table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from a previous result ``crc`` (0 to start)."""
    t = _TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def with_zeroed_field(data: bytes, at: int) -> int:
    """CRC-32C of ``data`` with its 4 checksum bytes at ``at`` taken as zero (how VHDX stores it)."""
    return crc32c(bytes(data[:at]) + b"\0\0\0\0" + bytes(data[at + 4:]))
