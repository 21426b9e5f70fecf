"""One VMDK extent: a FLAT range of a raw file or a hosted SPARSE extent (grain directory + tables).

Opening applies qemu 7.2's checks (``vmdk_open_vmdk4``/``vmdk_add_extent``);
grain tables are decoded on demand, reading past the end of the file as zeros
exactly as qemu does, so a damaged table shows up in ``check`` rather than
failing the open.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ...errors import FormatError, UnsupportedFormat
from ...io import Source
from ...limits import enforce
from . import layout as L

if TYPE_CHECKING:
    import numpy as np

@dataclass
class Extent:
    """An opened extent; ``start`` is its first guest byte."""

    src: Source
    filename: str            # as qemu prints it
    type: str                # descriptor type ("" for the extent of a monolithic file)
    flat: bool
    sectors: int
    start: int = 0
    flat_offset: int = 0     # FLAT: byte offset of the data in the file
    header: Any = None       # SPARSE: the header in force (footer copy for GD_AT_END)
    header_offset: int = 0   # where that header was read
    owns_src: bool = False

    # ---------------------------------------------------------------- geometry
    @property
    def length(self) -> int:
        return self.sectors * L.SECTOR

    @property
    def grain(self) -> int:
        """Grain size in bytes (the whole extent for FLAT, as in qemu)."""
        return self.length if self.flat else self.header.grain_size * L.SECTOR

    @property
    def compressed(self) -> bool:
        return not self.flat and self.header.compress_algorithm == L.COMPRESSION_DEFLATE

    @property
    def has_markers(self) -> bool:
        return not self.flat and bool(self.header.flags & L.FLAG_MARKERS)

    @property
    def zero_grain(self) -> bool:
        return not self.flat and bool(self.header.flags & L.FLAG_ZERO_GRAIN)

    @property
    def gtes(self) -> int:
        return self.header.num_gtes_per_gt

    @property
    def ngrains(self) -> int:
        return -(-self.sectors // self.header.grain_size)

    @property
    def l1_size(self) -> int:
        h = self.header
        return -(-h.capacity // (h.num_gtes_per_gt * h.grain_size))

    # ---------------------------------------------------------------- tables
    @cached_property
    def gd(self) -> np.ndarray:
        return self._directory(self.header.gd_offset, "grain directory")

    @cached_property
    def rgd(self) -> np.ndarray | None:
        if not self.header.flags & L.FLAG_RGD:
            return None
        return self._directory(self.header.rgd_offset, "redundant grain directory")

    def _directory(self, sector: int, what: str) -> np.ndarray:
        import numpy as np
        n = self.l1_size
        at = sector * L.SECTOR
        enforce("max_table_bytes", n * 4, f"vmdk {what}", at)
        buf = self.src.read(at, n * 4, f"vmdk {what} of {self.filename}", zero_fill=True)
        return np.frombuffer(buf, "<u4").astype(np.uint32)

    def grain_entries(self, directory: np.ndarray | None = None) -> np.ndarray:
        """The grain table entry of every grain (uint32), through ``directory`` (default: the GD)."""
        import numpy as np
        gd = self.gd if directory is None else directory
        n, per = self.ngrains, self.gtes
        enforce("max_guest_clusters", n, "vmdk grain tables", self.header_offset)
        ntab = min(len(gd), -(-n // per))
        enforce("max_metadata_bytes", int(np.count_nonzero(gd[:ntab])) * per * 4, "vmdk grain tables",
                self.header_offset)
        buf = bytearray(ntab * per * 4)
        view = memoryview(buf)
        for i in np.flatnonzero(gd[:ntab]).tolist():
            self.src.readinto(view[i * per * 4:(i + 1) * per * 4], int(gd[i]) * L.SECTOR)
        out = np.zeros(n, np.uint32)
        got = np.frombuffer(buf, "<u4")[:n]
        out[:len(got)] = got
        return out

    def table_offsets(self, directory: np.ndarray | None = None) -> np.ndarray:
        """Host offset of the grain table entry of every grain (0 where the GD entry is empty)."""
        import numpy as np
        _U = np.uint64
        gd = self.gd if directory is None else directory
        n, per = self.ngrains, self.gtes
        ntab = -(-n // per)
        base = np.zeros(ntab, _U)
        k = min(ntab, len(gd))
        base[:k] = gd[:k].astype(_U) * _U(L.SECTOR)
        slot = np.arange(per, dtype=_U) * _U(4)
        out = np.where(base[:, None] != 0, base[:, None] + slot[None, :], _U(0))
        return out.reshape(-1)[:n]

    def markers(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(LBA, compressed byte count) of the grain marker at each host offset (zeros where unreadable)."""
        import numpy as np
        _U = np.uint64
        lba = np.zeros(len(host), _U)
        size = np.zeros(len(host), _U)
        buf = bytearray(L.GRAIN_MARKER_SIZE)
        for i, off in enumerate(host.tolist()):
            self.src.readinto(memoryview(buf), off)
            lba[i] = int.from_bytes(buf[0:8], "little")
            size[i] = int.from_bytes(buf[8:12], "little")
        return lba, size


def open_sparse(src: Source, filename: str, type_: str, owns_src: bool) -> Extent:
    """Read a hosted sparse extent header (or the stream footer it points to) and validate it."""
    raw = src.read(0, L.HEADER_SIZE, f"vmdk sparse extent header of {filename}", zero_fill=True)
    if raw[:4] == L.COWD_MAGIC:
        raise UnsupportedFormat(f"{filename}: VMFS sparse (COWD) extents are not supported yet")
    if raw[:4] != L.MAGIC:
        raise FormatError(f"vmdk sparse extent header of {filename}", 0, "no KDMV magic")
    h, at = L.SparseHeader.parse(raw), 0
    if h.gd_offset == L.GD_AT_END:
        h, at = _stream_footer(src, filename)
    where = f"vmdk sparse extent header of {filename}"
    if h.version > 3:
        raise FormatError(where, at, f"unsupported version {h.version}")
    if h.num_gtes_per_gt > L.MAX_GTES_PER_GT:
        raise FormatError(where, at, f"{h.num_gtes_per_gt} entries per grain table (qemu allows 512)")
    if h.num_gtes_per_gt * h.grain_size == 0:
        raise FormatError(where, at, "grain size or grain table size is 0")
    if h.grain_size > L.MAX_GRAIN_SECTORS:
        raise FormatError(where, at, f"grain of {h.grain_size} sectors is larger than 1 GiB")
    ext = Extent(src, filename, type_, False, h.capacity, header=h, header_offset=at, owns_src=owns_src)
    if ext.l1_size > L.MAX_L1_ENTRIES:
        raise FormatError(where, at, f"grain directory of {ext.l1_size} entries is too big")
    if src.size < h.overhead * L.SECTOR:
        raise FormatError(where, at, f"file truncated: {src.size} bytes, metadata needs {h.overhead * L.SECTOR}")
    return ext


def _stream_footer(src: Source, filename: str) -> tuple[Any, int]:
    """The header copy of a stream-optimized file whose header says 'grain directory at end'."""
    at = src.size - L.STREAM_FOOTER_SIZE
    where = f"vmdk stream footer of {filename}"
    if at < 0:
        raise FormatError(where, 0, "file too short for a footer")
    f = L.StreamFooter.parse(src.read(at, L.STREAM_FOOTER_SIZE, where))
    ok = (f.header.magic == L.MAGIC and f.footer_marker.size == 0 and f.footer_marker.type == L.MARKER_FOOTER
          and f.eos_marker.val == 0 and f.eos_marker.size == 0 and f.eos_marker.type == L.MARKER_EOS)
    if not ok:
        raise FormatError(where, at, "invalid footer (marker types or magic)")
    return f.header, at + L.SECTOR
