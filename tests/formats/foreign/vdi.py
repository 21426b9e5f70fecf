"""VDI as VirtualBox writes it (header 1.1, every image type), built with ``imgscope.formats.vdi.layout``."""
from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Callable

from imgscope.formats.vdi import layout as DL

from .common import KiB, MiB, SECTOR, pattern, pwrite


VDI_TEXT = b"<<< Oracle VM VirtualBox Disk Image >>>\n"


def vdi(path: Path, size: int, image_type: int, blocks: dict[int, bytes | int], block_size: int = MiB,
        bmap_at: int = DL.HEADER_SIZE, gap: int = 0, **kw) -> None:
    """A VirtualBox 1.1 image: header, block map at ``bmap_at``, data ``gap`` bytes after the map
    (aligned to 512); a block value that is an int is stored verbatim in the map (0xFFFFFFFE zero)."""
    n = -(-size // block_size)
    bmap = [DL.UNALLOCATED] * n
    data_at = -(-(bmap_at + n * 4 + gap) // SECTOR) * SECTOR
    slots = []
    for idx in sorted(blocks):
        v = blocks[idx]
        if isinstance(v, int):
            bmap[idx] = v
        else:
            bmap[idx] = len(slots)
            slots.append(v)
    if image_type == DL.TYPE_STATIC:
        bmap = list(range(n))
        slots = [v if isinstance(v := blocks.get(i), bytes) else bytes(block_size) for i in range(n)]
    h = dict(text=VDI_TEXT.ljust(0x40, b"\0"), signature=DL.SIGNATURE, version=DL.VERSION_1_1, header_size=0x190,
             image_type=image_type, image_flags=0, description=b"made by a builder".ljust(256, b"\0"),
             offset_bmap=bmap_at, offset_data=data_at, cylinders=0, heads=0, sectors=0, sector_size=512,
             unused1=0, disk_size=size, block_size=block_size, block_extra=0, blocks_in_image=n,
             blocks_allocated=len(slots), uuid_image=uuid.UUID(int=size + image_type).bytes_le,
             uuid_last_snap=uuid.UUID(int=7).bytes_le, uuid_link=bytes(16), uuid_parent=bytes(16),
             reserved=bytes(56))
    h.update(kw)
    pwrite(path, 0, DL.Header.build(h))
    pwrite(path, bmap_at, struct.pack(f"<{n}I", *bmap))
    for i, data in enumerate(slots):
        pwrite(path, data_at + i * block_size, data.ljust(block_size, b"\0"))
    pwrite(path, data_at + len(slots) * block_size - 1 if slots else data_at, b"\0")


def _vdi_case(image_type: int, block_size: int = MiB, **kw) -> Callable[[Path], str]:
    """Blocks 0 (half written), 3 (full); 2 marked zero (0xFFFFFFFE), 5 explicitly unallocated."""
    def build(d: Path) -> str:
        bs = block_size
        blocks = {0: pattern("v0", bs // 2), 2: DL.DISCARDED, 3: pattern("v3", bs), 5: DL.UNALLOCATED}
        vdi(d / "v.vdi", 6 * bs + 5 * SECTOR, image_type, blocks, block_size=bs, **kw)
        return "v.vdi"
    return build


CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "vdi-normal": ("vdi", _vdi_case(DL.TYPE_DYNAMIC)),
    "vdi-fixed": ("vdi", _vdi_case(DL.TYPE_STATIC)),
    "vdi-undo": ("vdi", _vdi_case(DL.TYPE_UNDO)),
    "vdi-diff": ("vdi", _vdi_case(DL.TYPE_DIFF, uuid_parent=uuid.UUID(int=99).bytes_le)),
    "vdi-link-uuid": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, uuid_link=uuid.UUID(int=98).bytes_le)),
    "vdi-block-2m": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, block_size=2 * MiB)),
    "vdi-bmap-gap": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, bmap_at=2 * KiB, gap=5 * KiB)),
    "vdi-odd-size": ("vdi", lambda d: (vdi(d / "o.vdi", 3 * MiB + 1000, DL.TYPE_DYNAMIC,
                                           {0: pattern("o0", MiB), 3: pattern("o3", 1000)}), "o.vdi")[1]),
    "vdi-block-extra": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, block_extra=512)),
    "vdi-version-1.0": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, version=0x00010000)),
    "vdi-sector-4k": ("vdi", _vdi_case(DL.TYPE_DYNAMIC, sector_size=4096)),
}
