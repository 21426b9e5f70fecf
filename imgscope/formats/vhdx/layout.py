"""VHDX on-disk structures (little-endian), declared once to read and build.

Facts: Microsoft [MS-VHDX] v1.0, qemu 7.2 ``block/vhdx.h``/``vhdx.c``/``vhdx-log.c``
and ../shared/FORMATS.md §7.  GUIDs are stored in Microsoft byte order
(``uuid.UUID(bytes_le=...)``).  The BAT is decoded with numpy (u64 entries).
"""
from __future__ import annotations

import uuid

import construct as cs

KiB, MiB = 1 << 10, 1 << 20
FILE_SIGNATURE = b"vhdxfile"
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
HEADER_SECTION = MiB
HEADER_CRC_SIZE = 4 * KiB          # the header checksum covers 4 KiB
REGION_TABLE_SIZE = 64 * KiB
METADATA_TABLE_SIZE = 64 * KiB
LOG_SECTOR = 4 * KiB
MAX_REGION_ENTRIES = 2047
BLOCK_MIN, BLOCK_MAX = MiB, 256 * MiB
MAX_SECTORS_PER_BLOCK = 1 << 23    # chunk ratio numerator (2^23 sectors)

BAT_GUID = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
REGION_NAMES = {BAT_GUID: "BAT", METADATA_GUID: "metadata"}

FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_DATA = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_SIZE = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
METADATA_NAMES = {FILE_PARAMETERS: "file_parameters", VIRTUAL_DISK_SIZE: "virtual_disk_size",
                  PAGE83_DATA: "page83_data", LOGICAL_SECTOR_SIZE: "logical_sector_size",
                  PHYSICAL_SECTOR_SIZE: "physical_sector_size", PARENT_LOCATOR: "parent_locator"}
REQUIRED_METADATA = (FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE)
REGION_REQUIRED = 1
META_IS_USER, META_IS_VIRTUAL_DISK, META_IS_REQUIRED = 1, 2, 4
PARAM_LEAVE_BLOCKS_ALLOCATED, PARAM_HAS_PARENT = 1, 2

# BAT entry states (payload / sector bitmap); qemu uses 5 for "unmapped" (draft spec), MS-VHDX 3
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, UNMAPPED_V095, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 5, 6, 7
STATE_NAMES = {0: "not present", 1: "undefined", 2: "zero", 3: "unmapped", 5: "unmapped (v0.95)",
               6: "fully present", 7: "partially present"}
BAT_STATE_MASK = 0x7
BAT_OFFSET_MASK = 0xFFFFFFFFFFF00000

FileIdentifier = cs.Struct(
    "signature" / cs.Bytes(8),
    "creator" / cs.Bytes(512),
)

Header = cs.Struct(
    "signature" / cs.Bytes(4),
    "checksum" / cs.Int32ul,
    "sequence_number" / cs.Int64ul,
    "file_write_guid" / cs.Bytes(16),
    "data_write_guid" / cs.Bytes(16),
    "log_guid" / cs.Bytes(16),
    "log_version" / cs.Int16ul,
    "version" / cs.Int16ul,
    "log_length" / cs.Int32ul,
    "log_offset" / cs.Int64ul,
    "reserved" / cs.Bytes(4016),
)

RegionTableHeader = cs.Struct(
    "signature" / cs.Bytes(4),
    "checksum" / cs.Int32ul,
    "entry_count" / cs.Int32ul,
    "reserved" / cs.Int32ul,
)
RegionTableEntry = cs.Struct(
    "guid" / cs.Bytes(16),
    "file_offset" / cs.Int64ul,
    "length" / cs.Int32ul,
    "flags" / cs.Int32ul,
)

MetadataTableHeader = cs.Struct(
    "signature" / cs.Bytes(8),
    "reserved" / cs.Int16ul,
    "entry_count" / cs.Int16ul,
    "reserved2" / cs.Bytes(20),
)
MetadataEntry = cs.Struct(
    "item_id" / cs.Bytes(16),
    "offset" / cs.Int32ul,
    "length" / cs.Int32ul,
    "flags" / cs.Int32ul,
    "reserved" / cs.Int32ul,
)
FileParameters = cs.Struct(
    "block_size" / cs.Int32ul,
    "flags" / cs.Int32ul,
)
ParentLocatorHeader = cs.Struct(
    "locator_type" / cs.Bytes(16),
    "reserved" / cs.Int16ul,
    "key_value_count" / cs.Int16ul,
)
ParentLocatorEntry = cs.Struct(
    "key_offset" / cs.Int32ul,
    "value_offset" / cs.Int32ul,
    "key_length" / cs.Int16ul,
    "value_length" / cs.Int16ul,
)

LogEntryHeader = cs.Struct(
    "signature" / cs.Bytes(4),
    "checksum" / cs.Int32ul,
    "entry_length" / cs.Int32ul,
    "tail" / cs.Int32ul,
    "sequence_number" / cs.Int64ul,
    "descriptor_count" / cs.Int32ul,
    "reserved" / cs.Int32ul,
    "log_guid" / cs.Bytes(16),
    "flushed_file_offset" / cs.Int64ul,
    "last_file_offset" / cs.Int64ul,
)
LOG_HEADER_SIZE = 64
#: "desc" (trailing bytes, leading bytes) or "zero" (reserved, zero length), then offset and sequence
LogDescriptor = cs.Struct(
    "signature" / cs.Bytes(4),
    "trailing_bytes" / cs.Bytes(4),
    "leading_bytes" / cs.Bytes(8),
    "file_offset" / cs.Int64ul,
    "sequence_number" / cs.Int64ul,
)
LOG_DESCRIPTOR_SIZE = 32
LogDataSector = cs.Struct(
    "signature" / cs.Bytes(4),
    "sequence_high" / cs.Int32ul,
    "data" / cs.Bytes(4084),
    "sequence_low" / cs.Int32ul,
)


def guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(raw))


def desc_sectors(count: int) -> int:
    """Log sectors holding an entry header and ``count`` descriptors (qemu's vhdx_compute_desc_sectors)."""
    return -(-(count + 2) // 128)
