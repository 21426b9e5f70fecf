"""QED on-disk structures, declared once (construct), used to read *and* build.

Source of the facts: qemu ``docs/interop/qed_spec.rst``, ``block/qed.h`` and
../shared/FORMATS.md §3.  All integers are little-endian.  The L1 and L2
tables (``table_size`` clusters of u64le offsets each) are decoded in bulk by
:mod:`imgscope.formats.twolevel`.
"""
from __future__ import annotations

import construct as cs

MAGIC = b"QED\x00"
HEADER_SIZE = 64

# features (incompatible: unknown bits mean "do not open")
F_BACKING_FILE = 0x01
F_NEED_CHECK = 0x02
F_BACKING_FORMAT_NO_PROBE = 0x04
FEATURE_MASK = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE

#: (kind, bit) -> name; QED defines no compat or autoclear bits
FEATURE_NAMES: dict[tuple[str, int], str] = {
    ("incompatible", 0): "backing file",
    ("incompatible", 1): "need check",
    ("incompatible", 2): "backing format no probe",
}

MIN_CLUSTER_SIZE = 4 << 10
MAX_CLUSTER_SIZE = 64 << 20
MIN_TABLE_SIZE = 1
MAX_TABLE_SIZE = 16
#: qemu keeps the backing name in a PATH_MAX buffer (qed_read_string)
MAX_BACKING_NAME = 4095

# L2 entry values with a meaning of their own
ENTRY_UNALLOCATED = 0
ENTRY_ZERO = 1

#: byte offset of ``features`` in the header (the repair rewrites only this field)
FEATURES_OFFSET = 16

Header = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "cluster_size" / cs.Int32ul,
    "table_size" / cs.Int32ul,
    "header_size" / cs.Int32ul,
    "features" / cs.Int64ul,
    "compat_features" / cs.Int64ul,
    "autoclear_features" / cs.Int64ul,
    "l1_table_offset" / cs.Int64ul,
    "image_size" / cs.Int64ul,
    "backing_filename_offset" / cs.Int32ul,
    "backing_filename_size" / cs.Int32ul,
)

#: one table entry (L1: L2 table offset; L2: 0, 1 or a data cluster offset)
TableEntry = cs.Int64ul


def header_field(name: str) -> cs.Construct:
    """The declaration of one header field (to rewrite that field alone)."""
    return next(sc for sc in Header.subcons if sc.name == name)
