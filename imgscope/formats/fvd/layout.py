"""FVD on-disk structures, declared once (construct), used to read *and* build.

Source of the facts: ../shared/FORMATS.md §9.1 (the packed ``FvdHeader`` of the
2011 patch series, ``block/fvd.h``, ``fvd-journal.c``, ``fvd-store.c``).  No
FVD producer exists any more: nothing here was checked against a real file
(docs/formats/fvd.md lists the uncertain points).  All integers are
little-endian; the header is packed (no alignment padding between fields).

Layout: header | bitmap | table | journal | data, each region starting on a
4 KiB boundary; the data area starts at ``metadata_size`` (or at 0 of a
separate ``data_file``).
"""
from __future__ import annotations

import construct as cs

MAGIC = 0x5143F5A9            # ('Q' << 24) | ('C' << 16) | (0xF5 << 8) | 0xA9, stored little-endian
VERSION = 1
SECTOR = 512
PAGE = 4096                   # DEF_PAGE_SIZE: region alignment and table rounding

#: table entry values (u32le, one per virtual chunk)
EMPTY_TABLE = 0xFFFFFFFF      # chunk not allocated
DIRTY_TABLE = 0x80000000      # in-memory "not yet journalled" marker; cleared before the table is written back

#: journal record types (each 512-byte journal sector holds records until a zero type)
BITMAP_JRECORD = 0x3F2AB8ED
TABLE_JRECORD = 0xB4E6F7AC
EMPTY_JRECORD = 0

#: defaults of the patch series (used by tests building images)
DEFAULT_BLOCK_SIZE = 64 << 10
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_JOURNAL_SIZE = 16 << 20

Header = cs.Struct(
    "magic" / cs.Int32ul,
    "version" / cs.Int32ul,
    "all_data_in_fvd_img" / cs.Int32sl,
    "virtual_disk_size" / cs.Int64sl,
    "metadata_size" / cs.Int64sl,
    "base_img" / cs.Bytes(1024),
    "base_img_fmt" / cs.Bytes(16),
    "base_img_size" / cs.Int64sl,
    "bitmap_offset" / cs.Int64sl,
    "bitmap_size" / cs.Int64sl,
    "block_size" / cs.Int32sl,
    "copy_on_read" / cs.Int32sl,
    "max_outstanding_copy_on_read_data" / cs.Int64sl,
    "data_file" / cs.Bytes(1024),
    "data_file_fmt" / cs.Bytes(16),
    "prefetch_start_delay" / cs.Int32sl,
    "prefetch_profile_offset" / cs.Int64sl,
    "prefetch_profile_entries" / cs.Int64sl,
    "num_prefetch_slots" / cs.Int32sl,
    "bytes_per_prefetch" / cs.Int32sl,
    "prefetch_read_throughput_measure_time" / cs.Int32sl,
    "prefetch_write_throughput_measure_time" / cs.Int32sl,
    "prefetch_perf_calc_alpha" / cs.Int32sl,
    "prefetch_min_read_throughput" / cs.Int32sl,
    "prefetch_min_write_throughput" / cs.Int32sl,
    "prefetch_max_read_throughput" / cs.Int32sl,
    "prefetch_max_write_throughput" / cs.Int32sl,
    "prefetch_throttle_time" / cs.Int32sl,
    "compact_image" / cs.Int32sl,
    "table_offset" / cs.Int64sl,
    "chunk_size" / cs.Int64sl,
    "storage_grow_unit" / cs.Int64sl,
    "add_storage_cmd" / cs.Bytes(2048),
    "journal_offset" / cs.Int64sl,
    "journal_size" / cs.Int64sl,
    "clean_shutdown" / cs.Int32sl,
    "need_zero_init" / cs.Int32sl,
    "generate_prefetch_profile" / cs.Int32sl,
    "unit_of_PrefetchProfileEntry_len" / cs.Int32sl,
    "profile_directed_prefetch_start_delay" / cs.Int32sl,
    "write_updates_base_img" / cs.Bytes(16),
)


def field_offset(name: str) -> int:
    """Byte offset of a header field (the header is packed: the sum of the sizes before it)."""
    off = 0
    for sc in Header.subcons:
        if sc.name == name:
            return off
        off += sc.sizeof()
    raise KeyError(name)


HEADER_SIZE = Header.sizeof()
#: the header region: the bitmap (the first region after it) starts on the next page boundary
HEADER_REGION = -(-HEADER_SIZE // PAGE) * PAGE
#: byte offset of ``clean_shutdown`` (tests flip it to build dirty images)
CLEAN_SHUTDOWN_OFFSET = field_offset("clean_shutdown")  # 0x10CC

#: the string fields (NUL-terminated in the file)
TEXT_FIELDS = ("base_img", "base_img_fmt", "data_file", "data_file_fmt", "add_storage_cmd", "write_updates_base_img")

#: one table entry
TableEntry = cs.Int32ul

#: journal records; ``type`` selects the record, ``EMPTY_JRECORD`` ends a sector
BitmapRecord = cs.Struct(
    "type" / cs.Const(BITMAP_JRECORD, cs.Int32ul),
    "num_dirty_sectors" / cs.Int32ul,
    "dirty_sector_begin" / cs.Int64sl,
)
TableRecord = cs.Struct(
    "type" / cs.Const(TABLE_JRECORD, cs.Int32ul),
    "first_chunk" / cs.Int32ul,
    "count" / cs.Int32ul,
    "entries" / cs.Array(cs.this.count, cs.Int32ul),
)
BITMAP_RECORD_SIZE = BitmapRecord.sizeof()
TABLE_RECORD_HEAD = 12


def table_entries(virtual_size: int, chunk_size: int) -> int:
    """Entries of the lookup table: one per (partial) virtual chunk."""
    return -(-virtual_size // chunk_size)


def table_bytes(virtual_size: int, chunk_size: int) -> int:
    """On-disk table size: the entries rounded up to a whole page."""
    return -(-table_entries(virtual_size, chunk_size) * 4 // PAGE) * PAGE


def bitmap_bytes(base_size: int, block_size: int) -> int:
    """Bytes of bitmap the base image needs (one bit per block), before page rounding."""
    return -(-(-(-base_size // block_size)) // 8)
