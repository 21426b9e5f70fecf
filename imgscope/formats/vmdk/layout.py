"""VMDK hosted sparse extent structures (little-endian), declared once to read and build.

Facts: VMware "Virtual Disk Format 5.0" technical note, qemu 7.2 ``block/vmdk.c``
and ../shared/FORMATS.md §4.  Grain directories and grain tables are arrays of
u32 sector numbers, decoded with numpy.
"""
from __future__ import annotations

import construct as cs

MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = 0xCAFEBABE
SECTOR = 512
#: qemu reads a sparse file's descriptor (CID, parentCID, parentFileNameHint) as this many sectors
#: at sector 1, whatever the header's descriptor_offset says
SPARSE_DESC_SECTORS = 20
HEADER_SIZE = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
GTE_ZEROED = 1
COMPRESSION_DEFLATE = 1

FLAG_NL_DETECT = 1 << 0
FLAG_RGD = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
FLAG_NAMES = {0: "valid newline detection", 1: "redundant grain directory", 2: "zeroed-grain GTEs",
              16: "compressed grains", 17: "markers"}
NEWLINE_BYTES = b"\n \r\n"

# qemu's limits (vmdk_add_extent, vmdk_open_vmdk4)
MAX_GRAIN_SECTORS = 0x200000
MAX_GTES_PER_GT = 512
MAX_L1_ENTRIES = 32 * 1024 * 1024

#: the 512-byte sparse extent header ("hosted sparse extent header")
SparseHeader = cs.Struct(
    "magic" / cs.Bytes(4),
    "version" / cs.Int32ul,
    "flags" / cs.Int32ul,
    "capacity" / cs.Int64ul,
    "grain_size" / cs.Int64ul,
    "descriptor_offset" / cs.Int64ul,
    "descriptor_size" / cs.Int64ul,
    "num_gtes_per_gt" / cs.Int32ul,
    "rgd_offset" / cs.Int64ul,
    "gd_offset" / cs.Int64ul,
    "overhead" / cs.Int64ul,
    "unclean_shutdown" / cs.Int8ul,
    "newline_bytes" / cs.Bytes(4),
    "compress_algorithm" / cs.Int16ul,
    "pad" / cs.Bytes(433),
)

#: stream-optimized marker: a grain marker has size != 0 and is followed by the compressed bytes
Marker = cs.Struct(
    "val" / cs.Int64ul,
    "size" / cs.Int32ul,
    "type" / cs.Int32ul,
)
GRAIN_MARKER_SIZE = 12
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3

#: what VMware puts at the end of a stream-optimized file: footer marker, footer header, end-of-stream
StreamFooter = cs.Struct(
    "footer_marker" / Marker,
    "pad1" / cs.Bytes(SECTOR - 16),
    "header" / SparseHeader,
    "eos_marker" / Marker,
    "pad2" / cs.Bytes(SECTOR - 16),
)
STREAM_FOOTER_SIZE = 3 * SECTOR


#: the VMFS sparse ("COWD", ESX 2/3 redo log) extent header as qemu 7.2 reads it (``vmdk_open_vmfs_sparse``):
#: the fields after the magic up to the geometry; the rest of VMware's 2048-byte header (parent name,
#: generation, ...) is not interpreted.  GD and GT entries are u32le sector numbers; every grain table has
#: ``COWD_GTES`` entries; the GD has ``gd_entries`` entries (not derived from the capacity).
COWD_HEADER_SIZE = 2048
COWD_GTES = 4096
CowdHeader = cs.Struct(
    "magic" / cs.Bytes(4),
    "version" / cs.Int32ul,
    "flags" / cs.Int32ul,
    "disk_sectors" / cs.Int32ul,
    "granularity" / cs.Int32ul,
    "gd_offset" / cs.Int32ul,
    "gd_entries" / cs.Int32ul,
    "free_sector" / cs.Int32ul,
    "cylinders" / cs.Int32ul,
    "heads" / cs.Int32ul,
    "sectors_per_track" / cs.Int32ul,
    "pad" / cs.Bytes(COWD_HEADER_SIZE - 44),
)


#: seSparse (ESXi 6.5+ snapshots), as qemu 7.2 reads it (read-only, ``vmdk_open_se_sparse``): a constant
#: header (offsets and sizes in sectors), a volatile header, a grain directory of u64 entries (top 32
#: bits 0x10000000 = allocated, low 32 bits = grain table number), grain tables of u64 entries whose top
#: nibble is the state and whose other 60 bits are a scrambled grain number
SESPARSE_VERSION = 0x0000000200000001
SESPARSE_VOLATILE_MAGIC = 0xCAFECAFE
SESPARSE_GRAIN_SECTORS = 8
SESPARSE_GT_SECTORS = 64
SESPARSE_GD_ALLOCATED = 0x10000000
SE_UNALLOCATED, SE_UNMAPPED, SE_ZERO, SE_ALLOCATED = 0, 1, 2, 3
SeSparseConstHeader = cs.Struct(
    "magic" / cs.Int64ul,
    "version" / cs.Int64ul,
    "capacity" / cs.Int64ul,
    "grain_size" / cs.Int64ul,
    "grain_table_size" / cs.Int64ul,
    "flags" / cs.Int64ul,
    "reserved" / cs.Array(4, cs.Int64ul),
    "volatile_header_offset" / cs.Int64ul,
    "volatile_header_size" / cs.Int64ul,
    "journal_header_offset" / cs.Int64ul,
    "journal_header_size" / cs.Int64ul,
    "journal_offset" / cs.Int64ul,
    "journal_size" / cs.Int64ul,
    "grain_dir_offset" / cs.Int64ul,
    "grain_dir_size" / cs.Int64ul,
    "grain_tables_offset" / cs.Int64ul,
    "grain_tables_size" / cs.Int64ul,
    "free_bitmap_offset" / cs.Int64ul,
    "free_bitmap_size" / cs.Int64ul,
    "backmap_offset" / cs.Int64ul,
    "backmap_size" / cs.Int64ul,
    "grains_offset" / cs.Int64ul,
    "grains_size" / cs.Int64ul,
    "pad" / cs.Bytes(304),
)
SeSparseVolatileHeader = cs.Struct(
    "magic" / cs.Int64ul,
    "free_gt_number" / cs.Int64ul,
    "next_txn_seq_number" / cs.Int64ul,
    "replay_journal" / cs.Int64ul,
    "pad" / cs.Bytes(480),
)


def sesparse_grain(entry: int) -> int:
    """The grain number of an allocated seSparse grain table entry (qemu's unscrambling)."""
    return ((entry & 0x0FFF000000000000) >> 48) | ((entry & 0x0000FFFFFFFFFFFF) << 12)
