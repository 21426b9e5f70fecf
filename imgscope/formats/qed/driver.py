"""QED translated into the neutral model (FORMATS.md §3).

One layer, no refcounts, no snapshots.  Header validation follows what qemu's
``bdrv_qed_open`` refuses where the image could not be interpreted at all
(cluster/table size, image size bound, L1 placement, backing name placement);
what qemu refuses but imgscope can still read (unknown feature bits, a
table_size of 1, an L1 table past the end of the file) is opened and reported
by ``check()`` as ``QED-HDR-003`` with qemu's verdict (check not completed,
exit 1).  An image size that is not a multiple of the cluster size is fine:
qemu 7.2 only wants whole sectors (``qed_is_image_size_valid``) and creates
such images itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ...errors import FormatError
from ...image import feature_bit_rows, implemented_in
from ...io import Source
from ...limits import enforce
from ..header import read_fixed_header
from ..twolevel_image import TwoLevelImage
from . import layout as L


@dataclass
class QedMeta:
    """The validated header and the values derived from it."""

    header: Any
    nelems: int          # entries per table
    file_size: int       # the file size rounded down to a cluster (qemu's s->file_size)
    backing_file: str | None
    qemu_refuses: list[str]


def _power_of_two(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def read_meta(src: Source) -> QedMeta:
    h = L.Header.parse(read_fixed_header(src, L.HEADER_SIZE, "qed", L.MAGIC))
    cs = h.cluster_size
    if not (_power_of_two(cs) and L.MIN_CLUSTER_SIZE <= cs <= L.MAX_CLUSTER_SIZE):
        raise FormatError("qed header.cluster_size", 4, f"{cs} is not a power of two in [4 KiB, 64 MiB]")
    if not (_power_of_two(h.table_size) and L.MIN_TABLE_SIZE <= h.table_size <= L.MAX_TABLE_SIZE):
        raise FormatError("qed header.table_size", 8, f"{h.table_size} is not a power of two in [1, 16]")
    if h.header_size * cs > 0xFFFFFFFF:
        raise FormatError("qed header.header_size", 12, f"{h.header_size} clusters overflow 32 bits")
    nelems = h.table_size * cs // 8
    if h.image_size > nelems * nelems * cs or h.image_size % 512:
        raise FormatError("qed header.image_size", 48, f"{h.image_size} is not a multiple of 512 at most "
                                                       f"{nelems * nelems * cs} (tables too small)")
    enforce("max_table_bytes", h.table_size * cs, "qed L1 table", h.l1_table_offset)
    if h.l1_table_offset % cs or h.l1_table_offset < h.header_size * cs:
        raise FormatError("qed header.l1_table_offset", 40, f"{h.l1_table_offset:#x} is not cluster aligned "
                                                            "or lies inside the header clusters")
    # in qemu's words (bdrv_qed_do_open); its table offset test rejects every one-cluster table and
    # an L1 table running past the end of the file
    refuses = []
    if h.features & ~L.FEATURE_MASK:
        refuses.append(f"Unsupported QED features: {h.features & ~L.FEATURE_MASK:x}")
    file_size = src.size // cs * cs
    if h.table_size == 1 or h.l1_table_offset + (h.table_size - 1) * cs >= file_size:
        refuses.append("QED table offset is invalid")
    return QedMeta(h, nelems, file_size, _backing_name(src, h), refuses)


def _backing_name(src: Source, h: Any) -> str | None:
    if not h.features & L.F_BACKING_FILE:
        return None
    off, size = h.backing_filename_offset, h.backing_filename_size
    if off + size > h.cluster_size * h.header_size:
        raise FormatError("qed backing file name", off, f"{size} bytes do not fit in the header clusters")
    if size > L.MAX_BACKING_NAME:
        raise FormatError("qed backing file name", off, f"{size} bytes is longer than qemu's {L.MAX_BACKING_NAME}")
    raw = src.read(off, size, "qed backing file name")
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class QedImage(TwoLevelImage):
    format = "qed"
    label = "QED"

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.meta = read_meta(src)
        self.h = self.meta.header

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.h.image_size

    @property
    def cluster_size(self) -> int:
        return self.h.cluster_size

    @property
    def dirty(self) -> bool:
        """The need-check flag: qemu must run its consistency check before use."""
        return bool(self.h.features & L.F_NEED_CHECK)

    def backing(self) -> tuple[str, str | None] | None:
        if self.meta.backing_file is None:
            return None
        return self.meta.backing_file, "raw" if self.h.features & L.F_BACKING_FORMAT_NO_PROBE else None

    # ---------------------------------------------------------------- records
    def header_fields(self) -> dict[str, Any]:
        h = self.h
        out: dict[str, Any] = {k: v for k, v in h.items() if not k.startswith("_")}
        out["magic"] = h.magic.hex()
        out["table_entries"] = self.meta.nelems
        out["need_check"] = self.dirty
        out["backing_file"] = self.meta.backing_file
        out["backing_format"] = self.backing()[1] if self.meta.backing_file is not None else None
        out["file_size"] = self.src.size
        return out

    def feature_rows(self) -> list[dict[str, Any]]:
        h = self.h
        return feature_bit_rows({"incompatible": h.features, "compatible": h.compat_features,
                                 "autoclear": h.autoclear_features}, L.FEATURE_NAMES)

    def qemu_open_error(self, io: bool = True) -> str | None:
        return self.meta.qemu_refuses[0] if self.meta.qemu_refuses else None

    def info_dict(self) -> dict[str, Any]:
        out = super().info_dict()
        out["dirty-flag"] = False  # qemu-img prints false for QED whatever the need-check bit says
        out["imgscope-need-check"] = self.dirty
        return out

    # ---------------------------------------------------------------- mapping, check
    tables = cached_property(implemented_in("imgscope.formats.qed.tables:QedTables"))
    check = implemented_in("imgscope.formats.qed.check:check_image")
