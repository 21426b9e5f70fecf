"""VHDX translated into the neutral model (dynamic and fixed disks; differencing parents named).

qemu 7.2 has no block-status callback for VHDX, so ``map`` reports the whole
disk as data without offsets; imgscope's own per-block view is ``mapping()``.
"""
from __future__ import annotations

from typing import Any

from ... import model
from ...image import Image, implemented_in
from ...io import Source
from ...model import GuestMap
from . import layout as L
from .metadata import bat_entries, read_metadata


class VhdxImage(Image):
    format = "vhdx"
    qemu_shows_backing = False  # qemu 7.2 cannot open differencing VHDX files

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.meta, self.reader = read_metadata(src)

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.meta.virtual_size

    @property
    def cluster_size(self) -> int:
        return self.meta.block_size

    @property
    def dirty(self) -> bool:
        """A pending log (qemu cannot open such an image read-only, so its dirty-flag is never seen)."""
        return bool(self.meta.log.entries)

    def header_fields(self) -> dict[str, Any]:
        m = self.meta
        h = m.header
        out: dict[str, Any] = {"creator": m.creator, "current_header": m.current + 1,
                               "current_header_offset": m.headers[m.current].offset}
        for k, v in h.items():
            if k.startswith("_") or k == "reserved":
                continue
            out[k] = str(L.guid(v)) if k.endswith("guid") else (v.decode("latin-1") if k == "signature" else v)
        out.update(block_size=m.block_size, leave_blocks_allocated=bool(m.param_flags & L.PARAM_LEAVE_BLOCKS_ALLOCATED),
                   has_parent=m.has_parent, logical_sector_size=m.logical_sector_size,
                   physical_sector_size=m.physical_sector_size, page83_data=str(L.guid(m.page83)),
                   chunk_ratio=m.chunk_ratio, bat_entries=bat_entries(m), log_entries_pending=len(m.log.entries),
                   file_size=self.src.size)
        return out

    def extension_rows(self) -> list[dict[str, Any]]:
        """Regions (region table in use) and metadata items, one row each."""
        m = self.meta
        rows = []
        for e in m.regions:
            g = L.guid(e.guid)
            rows.append({"type": e.flags, "name": f"region:{L.REGION_NAMES.get(g, g)}", "offset": e.file_offset,
                         "length": e.length, "decoded": repr({"guid": str(g), "required": bool(e.flags & 1)}),
                         "raw": None})
        base = m.metadata_region.file_offset
        for g, e in m.items.items():
            rows.append({"type": e.flags, "name": f"metadata:{L.METADATA_NAMES.get(g, g)}", "offset": base + e.offset,
                         "length": e.length, "decoded": repr({"guid": str(g), "flags": e.flags}), "raw": None})
        return rows

    def backing(self) -> tuple[str, str | None] | None:
        loc = self.meta.parent_locator
        for key in ("relative_path", "absolute_win32_path", "volume_path"):
            name = loc.get(key)
            if name:
                name = name.replace("\\", "/")
                return (name[2:] if name.startswith("./") else name), "vhdx"
        return None

    def qemu_open_error(self, io: bool = True) -> str | None:
        return self.meta.qemu_open_error[0] if self.meta.qemu_open_error else None

    def info_dict(self) -> dict[str, Any]:
        out = super().info_dict()
        out["dirty-flag"] = False  # qemu's value for every VHDX it opens
        return out

    # ---------------------------------------------------------------- mapping
    def payload(self) -> tuple[Any, Any]:
        """(BAT index, raw entry) of every guest block: sector-bitmap entries skipped."""
        import numpy as np
        m = self.meta
        n = -(-m.virtual_size // m.block_size)
        idx = np.arange(n, dtype=np.int64)
        idx += idx // m.chunk_ratio
        ok = idx < len(m.bat)
        raw = np.zeros(n, np.uint64)
        raw[ok] = m.bat[idx[ok]]
        return idx, raw

    def guest_map(self, layer: str | int = "active") -> GuestMap:
        import numpy as np
        _U = np.uint64
        m = self.meta
        idx, raw = self.payload()
        state = (raw & _U(L.BAT_STATE_MASK)).astype(np.uint8)
        present = (state == L.FULLY_PRESENT) | (state == L.PARTIALLY_PRESENT)
        kind = np.full(len(raw), model.UNALLOCATED, np.uint8)
        kind[present] = model.DATA
        kind[state == L.ZERO] = model.ZERO
        host = np.where(present, raw & _U(L.BAT_OFFSET_MASK), _U(0))
        return GuestMap("active", m.block_size, m.virtual_size, kind, host,
                        np.where(present, _U(m.block_size), _U(0)), np.zeros(len(raw), np.uint8), None, None,
                        _U(m.bat_region.file_offset) + idx.astype(_U) * _U(8))

    def extents(self) -> Any:
        from ...extents import DATA, Extents
        return Extents.single(self.virtual_size, DATA)

    def reference_rows(self) -> Any:
        import numpy as np

        from ...refrows import RefRows, ranges
        _U = np.uint64
        m = self.meta
        h = m.header
        gm = self.guest_map()
        bm = m.bat[np.arange(m.chunk_ratio, len(m.bat), m.chunk_ratio + 1)]
        bm = bm[(bm & _U(L.BAT_STATE_MASK)) == L.FULLY_PRESENT] & _U(L.BAT_OFFSET_MASK)
        return RefRows.join([ranges(0, L.HEADER_SECTION, "header"), ranges(h.log_offset, h.log_length, "header"),
                             ranges(m.bat_region.file_offset, m.bat_region.length, "l1"),
                             ranges(m.metadata_region.file_offset, m.metadata_region.length, "header"),
                             ranges(gm.host[gm.kind == model.DATA], m.block_size, "data", 0),
                             ranges(bm, L.MiB, "bitmap_data", 0)])

    check = implemented_in("imgscope.formats.vhdx.check:check_image")
