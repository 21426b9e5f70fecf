"""VDI (VirtualBox) on-disk structures, declared once (construct), used to read *and* build.

Source of the facts: qemu ``block/vdi.c``, VirtualBox ``VDICore.h`` and
../shared/FORMATS.md §5.  All integers are little-endian; UUIDs are stored in
Microsoft GUID byte order (``uuid.UUID(bytes_le=...)``).  The block map is
``blocks_in_image`` u32le entries at ``offset_bmap``.
"""
from __future__ import annotations

import construct as cs

SIGNATURE = 0xBEDA107F
SIGNATURE_OFFSET = 0x40
VERSION_1_1 = 0x00010001
HEADER_SIZE = 512

TYPE_DYNAMIC, TYPE_STATIC, TYPE_UNDO, TYPE_DIFF = 1, 2, 3, 4
TYPE_NAMES = {TYPE_DYNAMIC: "dynamic", TYPE_STATIC: "static", TYPE_UNDO: "undo", TYPE_DIFF: "diff"}

#: block map values with a meaning of their own (anything below is a block slot)
UNALLOCATED = 0xFFFFFFFF
DISCARDED = 0xFFFFFFFE

SECTOR_SIZE = 512
QEMU_BLOCK_SIZE = 1 << 20
#: qemu's VDI_BLOCKS_IN_IMAGE_MAX (0xffffffff / 4)
MAX_BLOCKS = 0x3FFFFFFF

#: byte offset of ``blocks_allocated`` (tests rewrite it to build damaged images)
BLOCKS_ALLOCATED_OFFSET = 0x184

Header = cs.Struct(
    "text" / cs.Bytes(0x40),
    "signature" / cs.Int32ul,
    "version" / cs.Int32ul,
    "header_size" / cs.Int32ul,
    "image_type" / cs.Int32ul,
    "image_flags" / cs.Int32ul,
    "description" / cs.Bytes(256),
    "offset_bmap" / cs.Int32ul,
    "offset_data" / cs.Int32ul,
    "cylinders" / cs.Int32ul,
    "heads" / cs.Int32ul,
    "sectors" / cs.Int32ul,
    "sector_size" / cs.Int32ul,
    "unused1" / cs.Int32ul,
    "disk_size" / cs.Int64ul,
    "block_size" / cs.Int32ul,
    "block_extra" / cs.Int32ul,
    "blocks_in_image" / cs.Int32ul,
    "blocks_allocated" / cs.Int32ul,
    "uuid_image" / cs.Bytes(16),
    "uuid_last_snap" / cs.Bytes(16),
    "uuid_link" / cs.Bytes(16),
    "uuid_parent" / cs.Bytes(16),
    "reserved" / cs.Bytes(56),
)

#: one block map entry
BlockMapEntry = cs.Int32ul
