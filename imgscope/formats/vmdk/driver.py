"""VMDK translated into the neutral model: monolithicSparse, streamOptimized, split and flat disks.

A file starting with ``KDMV`` is one sparse extent with its descriptor
embedded; anything else is a text descriptor whose extent lines name the data
files.  Extent names are untrusted: each is resolved with
:func:`imgscope.chain.resolve_backing_path` (inside the descriptor's directory
unless allowed otherwise) and opened through :class:`imgscope.io.Source`.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

from ...errors import FormatError, UnsupportedFormat
from ...image import Image, feature_bit_rows, implemented_in
from ...io import Source
from ...limits import LIMITS
from . import descriptor as D
from . import layout as L
from .extent import Extent, open_sesparse, open_sparse


class VmdkImage(Image):
    format = "vmdk"

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.extents_list: list[Extent] = []
        try:
            self._open()
        except BaseException:
            self._close_extents()
            raise

    def _open(self) -> None:
        head = self.src.read(0, min(self.src.size, 4), "vmdk header", zero_fill=True)
        wrapped = self._wrapped_descriptor() if head == L.MAGIC else None
        if wrapped is not None:
            self._open_descriptor(self.src.read(wrapped, min(self.src.size, LIMITS["max_descriptor_bytes"]),
                                                "vmdk descriptor", zero_fill=True), wrapped)
        elif head in (L.MAGIC, L.COWD_MAGIC):
            ext = open_sparse(self.src, self.path, "", owns_src=False)
            # qemu's vmdk_open reads the descriptor of a sparse file at sector 1 (zeros past EOF), not where
            # the header's descriptor_offset points; a header pointing elsewhere or nowhere changes nothing
            self.desc = D.parse(self.src.read(L.SECTOR, L.SPARSE_DESC_SECTORS * L.SECTOR, "vmdk descriptor",
                                              zero_fill=True), L.SECTOR)
            self.create_type = "streamOptimized" if ext.compressed else "monolithicSparse"
            self.extents_list.append(ext)
        else:
            n = min(self.src.size, LIMITS["max_descriptor_bytes"])
            self._open_descriptor(self.src.read(0, n, "vmdk descriptor"), 0)
        start = 0
        for ext in self.extents_list:
            ext.start = start
            start += ext.length
        if self.desc.cid is None or self.desc.parent_cid is None:
            raise FormatError("vmdk descriptor", self.desc.offset, "no CID or parentCID")

    def _wrapped_descriptor(self) -> int | None:
        """qemu's ``vmdk_open_vmdk4``: a KDMV header with capacity 0 and a descriptor offset is only a
        wrapper; the embedded text is read as a descriptor file.  Its offset, else None."""
        h = L.SparseHeader.parse(self.src.read(0, L.HEADER_SIZE, "vmdk sparse extent header", zero_fill=True))
        return h.descriptor_offset * L.SECTOR if h.capacity == 0 and h.descriptor_offset else None

    def _open_descriptor(self, raw: bytes, at: int) -> None:
        """A descriptor file (or one wrapped in a KDMV header at ``at``): createType and extent files."""
        self.desc = D.parse(raw, at)
        ct = self.desc.create_type
        if ct is None:
            raise FormatError("vmdk descriptor", at, "no createType")
        if ct not in D.DESCRIPTOR_CREATE_TYPES:
            raise UnsupportedFormat(f"{self.path}: VMDK createType {ct!r} is not supported")
        self.create_type = ct
        self._open_extent_files()

    def _open_extent_files(self) -> None:
        from ...chain import resolve_backing_path
        for line in self.desc.extents:
            if not line.opened:
                continue
            path = resolve_backing_path(self.path, line.filename)
            src = Source(path)
            try:
                if line.type in D.FLAT_TYPES:
                    ext = Extent(src, path, line.type, True, line.sectors, flat_offset=(line.offset or 0) * L.SECTOR,
                                 owns_src=True)
                elif line.type == "SESPARSE":
                    ext = open_sesparse(src, path, line.type, owns_src=True)
                else:
                    ext = open_sparse(src, path, line.type, owns_src=True)
            except BaseException:
                src.close()
                raise
            self.extents_list.append(ext)
        if not self.extents_list:
            raise FormatError("vmdk descriptor", 0, "no usable (RW) extent")

    def _close_extents(self) -> None:
        for ext in self.extents_list:
            if ext.owns_src:
                ext.src.close()

    def close(self) -> None:
        self._close_extents()
        super().close()

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return sum(e.length for e in self.extents_list)

    @property
    def cluster_size(self) -> int | None:
        """qemu's ``vmdk_co_get_info``: the first extent's grain, if every extent is of its kind."""
        first = self.extents_list[0]
        for e in self.extents_list[1:]:
            if e.flat != first.flat or e.compressed != first.compressed or (not e.flat and e.grain != first.grain):
                return None
        return None if first.flat else first.grain

    def backing(self) -> tuple[str, str | None] | None:
        hint = self.desc.parent_hint
        return (hint, "vmdk") if hint else None

    def header_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"create_type": self.create_type, "cid": self.desc.cid,
                               "parent_cid": self.desc.parent_cid, "parent_file_name_hint": self.desc.parent_hint,
                               "descriptor_offset": self.desc.offset, "extents": len(self.extents_list)}
        out.update({f"descriptor_{k}": v for k, v in self.desc.fields.items()})
        out.update(self.desc.ddb)
        first = self.extents_list[0]
        if first.header is not None:
            h = first.header
            out.update({k: v for k, v in h.items() if not k.startswith("_") and k not in ("pad",)})
            out["magic"] = h.magic.decode("latin-1")
            out["newline_bytes"] = h.newline_bytes.hex()
            out["header_offset"] = first.header_offset
        out["file_size"] = self.src.size
        return out

    def feature_rows(self) -> list[dict[str, Any]]:
        """The sparse header's flag bits (first sparse extent)."""
        sparse = [e for e in self.extents_list if not e.flat]
        if not sparse:
            return []
        return feature_bit_rows({"compatible": sparse[0].header.flags},
                                {("compatible", b): n for b, n in L.FLAG_NAMES.items()}, width=32)

    def extension_rows(self) -> list[dict[str, Any]]:
        """One row per extent (descriptor order)."""
        return [{"type": i, "name": e.type or "SPARSE (embedded)", "offset": e.start, "length": e.length,
                 "decoded": repr({"filename": e.filename, "flat": e.flat, "flat_offset": e.flat_offset,
                                  "grain": e.grain, "compressed": e.compressed}), "raw": None}
                for i, e in enumerate(self.extents_list)]

    def info_dict(self) -> dict[str, Any]:
        out = super().info_dict()
        others = {id(e.src): e.src for e in self.extents_list if e.src is not self.src}
        out["actual-size"] = self.src.allocated + sum(s.allocated for s in others.values())
        out.pop("cluster-size", None)
        if self.cluster_size:
            out["cluster-size"] = self.cluster_size
        exts = []
        for e in self.extents_list:
            item: dict[str, Any] = {"virtual-size": e.length, "filename": e.filename, "format": e.type}
            if not e.flat:
                item["cluster-size"] = e.grain
            if e.compressed:
                item["compressed"] = True
            exts.append(item)
        out["format-specific"] = {"type": "vmdk", "data": {"cid": self.desc.cid, "parent-cid": self.desc.parent_cid,
                                                          "create-type": self.create_type, "extents": exts}}
        return out

    # ---------------------------------------------------------------- mapping, check
    grains = cached_property(implemented_in("imgscope.formats.vmdk.maps:Grains"))

    def host_file(self, guest_offset: int) -> str:
        """The extent file covering ``guest_offset``."""
        return next((e.filename for e in self.extents_list if guest_offset < e.start + e.length),
                    self.extents_list[-1].filename)

    def guest_map(self, layer: str | int = "active") -> Any:
        return self.grains.guest_map()

    extents = implemented_in("imgscope.formats.vmdk.maps:block_status")
    reference_rows = implemented_in("imgscope.formats.vmdk.maps:reference_rows")
    check = implemented_in("imgscope.formats.vmdk.check:check_image")
