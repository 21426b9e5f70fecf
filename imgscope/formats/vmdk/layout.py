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
