"""qcow2 on-disk structures, declared once (construct), used to read *and* build.

Source of the facts: qemu ``docs/interop/qcow2.txt`` and ../shared/FORMATS.md §2
(field names follow the spec so they can be grepped against it).  All integers
are big-endian.  Bulk tables (L1, L2, refcount blocks) are not declared here:
they are decoded by :mod:`imgscope.native`.
"""
from __future__ import annotations

import construct as cs

MAGIC = b"QFI\xfb"
V2_HEADER_LENGTH = 72
V3_MIN_HEADER_LENGTH = 104

# incompatible feature bits
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = 0x1F
COMPAT_LAZY_REFCOUNTS = 1 << 0
COMPRESSION_ZLIB, COMPRESSION_ZSTD = 0, 1  # header.compression_type
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

#: (kind, bit) -> name, the names qemu writes into its feature-name table
FEATURE_NAMES: dict[tuple[str, int], str] = {
    ("incompatible", 0): "dirty bit",
    ("incompatible", 1): "corrupt bit",
    ("incompatible", 2): "external data file",
    ("incompatible", 3): "compression type",
    ("incompatible", 4): "extended L2 entries",
    ("compatible", 0): "lazy refcounts",
    ("autoclear", 0): "bitmaps",
    ("autoclear", 1): "raw external data",
}
FEATURE_KINDS = ("incompatible", "compatible", "autoclear")

# header extension types
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_FDE = 0x0537BE77
EXT_DATA_FILE = 0x44415441
EXTENSION_NAMES = {
    EXT_BACKING_FORMAT: "backing_format",
    EXT_FEATURE_TABLE: "feature_name_table",
    EXT_BITMAPS: "bitmaps",
    EXT_FDE: "full_disk_encryption",
    EXT_DATA_FILE: "external_data_file",
}

# table entry masks (qemu names in comments)
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L1E_RESERVED_MASK = 0x7F000000000001FF
L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2E_STD_RESERVED_MASK = 0x3F000000000001FE
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
REFT_RESERVED_MASK = 0x1FF
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1

_V3 = cs.this.version >= 3


def _has_additional(ctx: cs.Container) -> bool:
    return ctx.version >= 3 and ctx.header_length > V3_MIN_HEADER_LENGTH


#: the header: v2 fields, the v3 additions, then the optional additional fields
Header = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int32ub,
    "backing_file_offset" / cs.Int64ub,
    "backing_file_size" / cs.Int32ub,
    "cluster_bits" / cs.Int32ub,
    "size" / cs.Int64ub,
    "crypt_method" / cs.Int32ub,
    "l1_size" / cs.Int32ub,
    "l1_table_offset" / cs.Int64ub,
    "refcount_table_offset" / cs.Int64ub,
    "refcount_table_clusters" / cs.Int32ub,
    "nb_snapshots" / cs.Int32ub,
    "snapshots_offset" / cs.Int64ub,
    "incompatible_features" / cs.If(_V3, cs.Int64ub),
    "compatible_features" / cs.If(_V3, cs.Int64ub),
    "autoclear_features" / cs.If(_V3, cs.Int64ub),
    "refcount_order" / cs.If(_V3, cs.Int32ub),
    "header_length" / cs.If(_V3, cs.Int32ub),
    "compression_type" / cs.If(_has_additional, cs.Int8ub),
    "padding" / cs.If(_has_additional, cs.Bytes(7)),
)
HEADER_V3_SIZE = 112  # what qemu 7.2 writes; the parser reads header_length bytes

ExtensionHeader = cs.Struct(
    "type" / cs.Int32ub,
    "length" / cs.Int32ub,
)

FeatureNameEntry = cs.Struct(
    "type" / cs.Int8ub,
    "bit" / cs.Int8ub,
    # bytes, not a str: a name that is not ASCII must not make the image unreadable
    "name" / cs.FixedSized(46, cs.NullStripped(cs.GreedyBytes)),
)

BitmapsExtension = cs.Struct(
    "nb_bitmaps" / cs.Int32ub,
    "reserved" / cs.Int32ub,
    "bitmap_directory_size" / cs.Int64ub,
    "bitmap_directory_offset" / cs.Int64ub,
)

FdeExtension = cs.Struct(
    "offset" / cs.Int64ub,
    "length" / cs.Int64ub,
)

#: fixed part of a snapshot table entry (40 bytes); extra data, id and name follow
SnapshotFixed = cs.Struct(
    "l1_table_offset" / cs.Int64ub,
    "l1_size" / cs.Int32ub,
    "id_str_size" / cs.Int16ub,
    "name_size" / cs.Int16ub,
    "date_sec" / cs.Int32ub,
    "date_nsec" / cs.Int32ub,
    "vm_clock_nsec" / cs.Int64ub,
    "vm_state_size" / cs.Int32ub,
    "extra_data_size" / cs.Int32ub,
)

#: the known extra-data fields; an entry may carry fewer (v2) or more (unknown, preserved)
SnapshotExtra = cs.Struct(
    "vm_state_size_large" / cs.Int64ub,
    "disk_size" / cs.Int64ub,
    "icount" / cs.Int64ub,
)
SNAPSHOT_EXTRA_FIELDS = (("vm_state_size_large", 8), ("disk_size", 16), ("icount", 24))

#: one whole snapshot table entry, padded to 8 bytes (build and parse)
SnapshotEntry = cs.Struct(
    "fixed" / SnapshotFixed,
    "extra" / cs.Bytes(cs.this.fixed.extra_data_size),
    "id_str" / cs.PaddedString(cs.this.fixed.id_str_size, "utf8"),
    "name" / cs.PaddedString(cs.this.fixed.name_size, "utf8"),
    "padding" / cs.Padding(lambda ctx: -(40 + ctx.fixed.extra_data_size + ctx.fixed.id_str_size
                                          + ctx.fixed.name_size) % 8),
)

#: bitmap directory entry, fixed part (24 bytes); extra data and name follow, padded to 8
BitmapDirFixed = cs.Struct(
    "bitmap_table_offset" / cs.Int64ub,
    "bitmap_table_size" / cs.Int32ub,
    "flags" / cs.Int32ub,
    "type" / cs.Int8ub,
    "granularity_bits" / cs.Int8ub,
    "name_size" / cs.Int16ub,
    "extra_data_size" / cs.Int32ub,
)
BITMAP_FLAG_IN_USE = 1
BITMAP_FLAG_AUTO = 2
BITMAP_FLAG_EXTRA_DATA_COMPATIBLE = 4

BitmapDirEntry = cs.Struct(
    "fixed" / BitmapDirFixed,
    "extra" / cs.Bytes(cs.this.fixed.extra_data_size),
    "name" / cs.PaddedString(cs.this.fixed.name_size, "utf8"),
    "padding" / cs.Padding(lambda ctx: -(24 + ctx.fixed.extra_data_size + ctx.fixed.name_size) % 8),
)

#: LUKS1 partition header (the FDE area of crypt_method 2); big-endian like all LUKS1 fields
LuksKeySlot = cs.Struct(
    "active" / cs.Int32ub,
    "iterations" / cs.Int32ub,
    "salt" / cs.Bytes(32),
    "key_material_offset" / cs.Int32ub,
    "stripes" / cs.Int32ub,
)
LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS_KEY_ENABLED = 0x00AC71F3
LuksHeader = cs.Struct(
    "magic" / cs.Const(LUKS_MAGIC),
    "version" / cs.Int16ub,
    "cipher_name" / cs.PaddedString(32, "ascii"),
    "cipher_mode" / cs.PaddedString(32, "ascii"),
    "hash_spec" / cs.PaddedString(32, "ascii"),
    "payload_offset" / cs.Int32ub,
    "key_bytes" / cs.Int32ub,
    "mk_digest" / cs.Bytes(20),
    "mk_digest_salt" / cs.Bytes(32),
    "mk_digest_iter" / cs.Int32ub,
    "uuid" / cs.PaddedString(40, "ascii"),
    "key_slots" / cs.Array(8, LuksKeySlot),
)
