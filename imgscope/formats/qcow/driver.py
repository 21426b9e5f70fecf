"""qcow version 1 translated into the neutral model (FORMATS.md §8).

One layer, no refcounts, no snapshots, no feature bits.  The header is
validated as qemu's ``qcow_open`` validates it (size, cluster and L2 geometry,
encryption method, backing name length); the L1 table size follows from the
guest size.  The virtual size is the header size rounded down to a sector, as
qemu computes ``total_sectors``.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

from ...errors import FormatError
from ...image import implemented_in
from ...io import Source
from ...limits import enforce
from ..header import read_fixed_header
from ..twolevel_image import TwoLevelImage
from . import layout as L


def read_header(src: Source) -> tuple[Any, int, str | None]:
    """(validated header, L1 entries, backing file name or None)."""
    h = L.Header.parse(read_fixed_header(src, L.HEADER_SIZE, "qcow", L.MAGIC))
    if h.version != L.VERSION:
        raise FormatError("qcow header.version", 4, f"version {h.version} is not 1")
    if h.size <= 1:
        raise FormatError("qcow header.size", 24, f"image size {h.size} is too small (at least 2 bytes)")
    if not L.MIN_CLUSTER_BITS <= h.cluster_bits <= L.MAX_CLUSTER_BITS:
        raise FormatError("qcow header.cluster_bits", 32, f"{h.cluster_bits} is outside 9..16")
    if not L.MIN_L2_BITS <= h.l2_bits <= L.MAX_L2_BITS:
        raise FormatError("qcow header.l2_bits", 33, f"{h.l2_bits} is outside 6..13")
    if h.crypt_method > L.CRYPT_AES:
        raise FormatError("qcow header.crypt_method", 36, f"unknown encryption method {h.crypt_method}")
    shift = h.cluster_bits + h.l2_bits
    l1_size = -(-h.size // (1 << shift))
    enforce("max_table_bytes", l1_size * 8, "qcow L1 table", h.l1_table_offset)
    backing = None
    if h.backing_file_offset:
        if h.backing_file_size > L.MAX_BACKING_NAME:
            raise FormatError("qcow backing file name", h.backing_file_offset,
                              f"{h.backing_file_size} bytes is longer than qemu's {L.MAX_BACKING_NAME}")
        raw = src.read(h.backing_file_offset, h.backing_file_size, "qcow backing file name", zero_fill=True)
        backing = raw.split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return h, l1_size, backing


class QcowImage(TwoLevelImage):
    format = "qcow"

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.h, self.l1_size, self.backing_file = read_header(src)

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.h.size // 512 * 512

    @property
    def cluster_size(self) -> int:
        return 1 << self.h.cluster_bits

    @property
    def encrypted(self) -> bool:
        return self.h.crypt_method != L.CRYPT_NONE

    def backing(self) -> tuple[str, str | None] | None:
        return None if self.backing_file is None else (self.backing_file, None)

    # ---------------------------------------------------------------- records
    def header_fields(self) -> dict[str, Any]:
        h = self.h
        out: dict[str, Any] = {k: v for k, v in h.items() if not k.startswith("_")}
        out["magic"] = h.magic.hex()
        out["cluster_size"] = self.cluster_size
        out["l2_entries"] = 1 << h.l2_bits
        out["l1_size"] = self.l1_size
        out["backing_file"] = self.backing_file
        out["file_size"] = self.src.size
        return out

    def info_dict(self) -> dict[str, Any]:
        out = super().info_dict()
        if self.encrypted:
            out["encrypted"] = True
        return out

    # ---------------------------------------------------------------- mapping, check
    tables = cached_property(implemented_in("imgscope.formats.qcow.tables:QcowTables"))
    check = implemented_in("imgscope.formats.qcow.check:check_image")
