"""VHD on-disk structures (big-endian), declared once and used to read and build.

Facts: Microsoft "Virtual Hard Disk Image Format Specification" and
../shared/FORMATS.md §6; the size rules follow qemu 7.2 ``block/vpc.c``.
The BAT is decoded with numpy (u32 big-endian sector numbers).
"""
from __future__ import annotations

import construct as cs

COOKIE = b"conectix"
DYN_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYN_HEADER_SIZE = 1024
SECTOR = 512
BAT_UNUSED = 0xFFFFFFFF
DATA_OFFSET_NONE = 0xFFFFFFFFFFFFFFFF

FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
DISK_TYPES = {0: "none", 1: "reserved", 2: "fixed", 3: "dynamic", 4: "differencing", 5: "reserved",
              6: "reserved"}

#: qemu 7.2: creators whose current_size is used instead of the CHS product
CURRENT_SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
MAX_GEOMETRY_SECTORS = 65535 * 16 * 255   # VHD_MAX_GEOMETRY
MAX_SECTORS = 0xFF000000                  # VHD_MAX_SECTORS (2040 GiB)

Footer = cs.Struct(
    "cookie" / cs.Bytes(8),
    "features" / cs.Int32ub,
    "format_version" / cs.Int32ub,
    "data_offset" / cs.Int64ub,
    "timestamp" / cs.Int32ub,
    "creator_application" / cs.Bytes(4),
    "creator_version" / cs.Int32ub,
    "creator_host_os" / cs.Bytes(4),
    "original_size" / cs.Int64ub,
    "current_size" / cs.Int64ub,
    "cylinders" / cs.Int16ub,
    "heads" / cs.Int8ub,
    "sectors_per_track" / cs.Int8ub,
    "disk_type" / cs.Int32ub,
    "checksum" / cs.Int32ub,
    "unique_id" / cs.Bytes(16),
    "saved_state" / cs.Int8ub,
    "reserved" / cs.Bytes(427),
)
FOOTER_CHECKSUM_AT = 64

ParentLocator = cs.Struct(
    "platform_code" / cs.Bytes(4),
    "platform_data_space" / cs.Int32ub,
    "platform_data_length" / cs.Int32ub,
    "reserved" / cs.Int32ub,
    "platform_data_offset" / cs.Int64ub,
)

DynHeader = cs.Struct(
    "cookie" / cs.Bytes(8),
    "data_offset" / cs.Int64ub,
    "table_offset" / cs.Int64ub,
    "header_version" / cs.Int32ub,
    "max_table_entries" / cs.Int32ub,
    "block_size" / cs.Int32ub,
    "checksum" / cs.Int32ub,
    "parent_unique_id" / cs.Bytes(16),
    "parent_timestamp" / cs.Int32ub,
    "reserved1" / cs.Int32ub,
    "parent_unicode_name" / cs.Bytes(512),
    "parent_locators" / cs.Array(8, ParentLocator),
    "reserved2" / cs.Bytes(256),
)
DYN_CHECKSUM_AT = 36

#: parent locator platform codes -> text encoding of their data (None: not a path)
PLATFORM_ENCODINGS = {b"W2ku": "utf-16-le", b"W2ru": "utf-16-le", b"Wi2k": "ascii", b"Wi2r": "ascii",
                      b"MacX": "utf-8", b"Mac ": None}
#: the order in which a parent name is looked for (relative first, as VirtualBox/Hyper-V do)
PLATFORM_PREFERENCE = (b"W2ru", b"W2ku", b"MacX", b"Wi2r", b"Wi2k")


def checksum(buf: bytes, at: int) -> int:
    """One's complement of the byte sum of ``buf`` with the 4 checksum bytes at ``at`` taken as zero."""
    total = sum(buf) - sum(buf[at:at + 4])
    return ~total & 0xFFFFFFFF


def bitmap_size(block_size: int) -> int:
    """Bytes of the sector bitmap in front of each block, rounded up to a sector (qemu's rule)."""
    return ((block_size // (8 * SECTOR)) + 511) & ~511
