"""qcow version 1 on-disk structures, declared once (construct), used to read *and* build.

Source of the facts: qemu ``block/qcow.c`` and ../shared/FORMATS.md §8.  All
integers are big-endian.  L1 entries are plain L2-table offsets; L2 entries
are 0 (unallocated), a data cluster offset (bit 63 clear) or, with bit 63
set, a compressed cluster: byte offset in bits 0..62-cluster_bits and the
compressed length *in bytes* in the cluster_bits bits above it.
"""
from __future__ import annotations

import construct as cs

MAGIC = b"QFI\xfb"
VERSION = 1
HEADER_SIZE = 48

CRYPT_NONE = 0
CRYPT_AES = 1

#: qemu's accepted geometry (qcow_open)
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 16
MIN_L2_BITS, MAX_L2_BITS = 6, 13
MAX_BACKING_NAME = 1023

OFLAG_COMPRESSED = 1 << 63

Header = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int32ub,
    "backing_file_offset" / cs.Int64ub,
    "backing_file_size" / cs.Int32ub,
    "mtime" / cs.Int32ub,
    "size" / cs.Int64ub,
    "cluster_bits" / cs.Int8ub,
    "l2_bits" / cs.Int8ub,
    "padding" / cs.Int16ub,
    "crypt_method" / cs.Int32ub,
    "l1_table_offset" / cs.Int64ub,
)

#: one table entry (L1: L2 table offset; L2: cluster descriptor)
TableEntry = cs.Int64ub


def compressed_entry(offset: int, length: int, cluster_bits: int) -> int:
    """The L2 value of a compressed cluster (used by tests to build damaged images)."""
    return OFLAG_COMPRESSED | length << (63 - cluster_bits) | offset
