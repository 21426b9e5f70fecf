"""Raw files: the bottom of most backing chains.  Guest offset = host offset;
holes (SEEK_HOLE) read as zeros, as qemu's file driver reports them."""
from __future__ import annotations

from typing import Any

from ...image import Image


class RawImage(Image):
    format = "raw"

    @property
    def virtual_size(self) -> int:
        return -(-self.src.size // 512) * 512  # qemu counts whole 512-byte sectors

    def info_dict(self) -> dict[str, Any]:
        out = super().info_dict()
        if self.src.size >= 1024 and self.src.read(self.src.size - 512, 8, "vhd footer") == b"conectix":
            out["imgscope-hint"] = ("the last sector is a VHD footer: probably a fixed VHD, which qemu-img and "
                                    "imgscope read as raw unless told otherwise (-f vpc)")
        return out

    def extents(self) -> Any:
        import numpy as np

        from ...extents import DATA, OFFSET_VALID, ZERO, Extents
        size = self.virtual_size
        cuts, status = [0], [ZERO | OFFSET_VALID]
        for start, end in self.src.data_ranges():
            if start > cuts[-1]:
                cuts.append(start)
                status.append(DATA | OFFSET_VALID)
            else:
                status[-1] = DATA | OFFSET_VALID
            if end < size:
                cuts.append(end)
                status.append(ZERO | OFFSET_VALID)
        start = np.array(cuts, np.int64)
        length = np.diff(np.append(start, size))
        keep = length > 0
        return Extents(start[keep], length[keep], np.array(status, np.uint8)[keep], start[keep].astype(np.uint64),
                       size)
