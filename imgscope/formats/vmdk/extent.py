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

import construct as cs

from ...errors import FormatError
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
    cowd: Any = None         # VMFSSPARSE: the COWD header (``header`` is its view under KDMV field names)
    sesparse: Any = None     # SESPARSE: the constant header (``header`` is its view under KDMV field names)

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
        return not self.flat and (self.sesparse is not None or bool(self.header.flags & L.FLAG_ZERO_GRAIN))

    @property
    def entry_size(self) -> int:
        """Bytes per grain directory / grain table entry as stored."""
        return 8 if self.sesparse is not None else 4

    @property
    def gtes(self) -> int:
        return self.header.num_gtes_per_gt

    @property
    def ngrains(self) -> int:
        return -(-self.sectors // self.header.grain_size)

    @property
    def l1_size(self) -> int:
        """Grain directory entries: stored in a COWD header, derived from the capacity in a KDMV one."""
        if self.cowd is not None:
            return self.cowd.gd_entries
        if self.sesparse is not None:
            return self.sesparse.grain_dir_size * L.SECTOR // 8
        h = self.header
        return -(-h.capacity // (h.num_gtes_per_gt * h.grain_size))

    @property
    def header_size(self) -> int:
        return L.COWD_HEADER_SIZE if self.cowd is not None else L.HEADER_SIZE

    @property
    def table_bytes(self) -> int:
        return self.gtes * self.entry_size

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
        """Grain table sector of every directory entry (0: none); seSparse entries are translated."""
        import numpy as np
        n, k = self.l1_size, self.entry_size
        at = sector * L.SECTOR
        enforce("max_table_bytes", n * k, f"vmdk {what}", at)
        buf = self.src.read(at, n * k, f"vmdk {what} of {self.filename}", zero_fill=True)
        if self.sesparse is None:
            return np.frombuffer(buf, "<u4").astype(np.uint32)
        raw = np.frombuffer(buf, "<u8")
        bad = np.flatnonzero((raw != 0) & ((raw >> np.uint64(32)) != np.uint64(L.SESPARSE_GD_ALLOCATED)))
        if len(bad):  # qemu: every read through this entry fails (EIO)
            i = int(bad[0])
            raise FormatError(f"vmdk seSparse {what} of {self.filename}", at + 8 * i,
                              f"entry {i} ({int(raw[i]):#x}) is neither empty nor an allocated grain table")
        gt = np.uint64(self.sesparse.grain_tables_offset) + (raw & np.uint64(0xFFFFFFFF)) * np.uint64(
            L.SESPARSE_GT_SECTORS)
        return np.where(raw != 0, gt, np.uint64(0))

    def grain_entries(self, directory: np.ndarray | None = None) -> np.ndarray:
        """The grain table entry of every grain (uint32), through ``directory`` (default: the GD)."""
        import numpy as np
        gd = self.gd if directory is None else directory
        n, per = self.ngrains, self.gtes
        enforce("max_guest_clusters", n, "vmdk grain tables", self.header_offset)
        ntab = -(-n // per)
        if len(gd) < ntab:  # COWD/seSparse store the GD size: qemu fails every read past the GD's reach
            raise FormatError(f"vmdk grain directory of {self.filename}", self.header.gd_offset * L.SECTOR,
                              f"{len(gd)} entries do not reach the {ntab} grain tables the extent needs")
        tb = self.table_bytes
        enforce("max_metadata_bytes", int(np.count_nonzero(gd[:ntab])) * tb, "vmdk grain tables",
                self.header_offset)
        buf = bytearray(ntab * tb)
        view = memoryview(buf)
        for i in np.flatnonzero(gd[:ntab]).tolist():
            self.src.readinto(view[i * tb:(i + 1) * tb], int(gd[i]) * L.SECTOR)
        if self.sesparse is not None:
            return self._sesparse_entries(np.frombuffer(buf, "<u8"), n)
        out = np.zeros(n, np.uint32)
        got = np.frombuffer(buf, "<u4")[:n]
        out[:len(got)] = got
        return out

    def _sesparse_entries(self, raw: np.ndarray, n: int) -> np.ndarray:
        """seSparse grain table entries as KDMV ones (uint64): 0 unallocated, ``GTE_ZEROED`` for a zero or
        unmapped grain, else the grain's sector (qemu's ``get_cluster_offset``)."""
        import numpy as np
        _U = np.uint64
        out = np.zeros(n, _U)
        raw = raw[:n]
        state = raw >> _U(60)
        bad = ((state == _U(L.SE_UNALLOCATED)) & (raw != 0)) | (state > _U(L.SE_ALLOCATED))
        if bad.any():  # qemu: every read of this grain fails (EIO)
            i = int(np.flatnonzero(bad)[0])
            raise FormatError(f"vmdk seSparse grain table of {self.filename}", int(self.table_offsets()[i]),
                              f"grain {i}: entry {int(raw[i]):#x} has no valid state")
        out[:len(raw)][(state == _U(L.SE_UNMAPPED)) | (state == _U(L.SE_ZERO))] = _U(L.GTE_ZEROED)
        alloc = np.flatnonzero(state == _U(L.SE_ALLOCATED))
        e = raw[alloc]
        grain = ((e & _U(0x0FFF000000000000)) >> _U(48)) | ((e & _U(0x0000FFFFFFFFFFFF)) << _U(12))
        out[alloc] = _U(self.sesparse.grains_offset) + grain * _U(self.header.grain_size)
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
        slot = np.arange(per, dtype=_U) * _U(self.entry_size)
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
        return _open_cowd(src, filename, type_, owns_src)
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


def _open_cowd(src: Source, filename: str, type_: str, owns_src: bool) -> Extent:
    """A VMFS sparse (COWD) extent, with qemu 7.2's checks (``vmdk_open_vmfs_sparse``/``vmdk_add_extent``).

    The header is also presented under the hosted sparse header's field names (``_kdmv_view``), so
    tables, map and check treat both kinds alike.
    """
    where = f"vmdk COWD header of {filename}"
    c = L.CowdHeader.parse(src.read(0, L.COWD_HEADER_SIZE, where, zero_fill=True))
    if c.granularity > L.MAX_GRAIN_SECTORS:
        raise FormatError(where, 16, f"grain of {c.granularity} sectors is larger than 1 GiB")
    if c.granularity == 0:
        raise FormatError(where, 16, "grain size is 0")
    if c.gd_entries > L.MAX_L1_ENTRIES:
        raise FormatError(where, 24, f"grain directory of {c.gd_entries} entries is too big")
    view = _kdmv_view(c.magic, c.version, c.disk_sectors, c.granularity, L.COWD_GTES, c.gd_offset, 0)
    return Extent(src, filename, type_, False, c.disk_sectors, header=view, owns_src=owns_src, cowd=c)


def open_sesparse(src: Source, filename: str, type_: str, owns_src: bool) -> Extent:
    """An ESXi seSparse extent with qemu 7.2's strict header checks (``check_se_sparse_*_header``)."""
    where = f"vmdk seSparse header of {filename}"
    c = L.SeSparseConstHeader.parse(src.read(0, L.HEADER_SIZE, where, zero_fill=True))
    for bad, at, why in ((c.magic != L.SESPARSE_MAGIC, 0, f"bad const header magic {c.magic:#018x}"),
                         (c.version != L.SESPARSE_VERSION, 8, f"unsupported version {c.version:#018x}"),
                         (c.grain_size != L.SESPARSE_GRAIN_SECTORS, 24, f"unsupported grain size {c.grain_size}"),
                         (c.grain_table_size != L.SESPARSE_GT_SECTORS, 32,
                          f"unsupported grain table size {c.grain_table_size}"),
                         (c.flags != 0, 40, f"unsupported flags {c.flags:#x}"),
                         (any(c.reserved), 48, "non-zero reserved fields"),
                         (any(c.pad), 208, "non-zero const header padding")):
        if bad:
            raise FormatError(where, at, why)
    vat = c.volatile_header_offset * L.SECTOR
    vwhere = f"vmdk seSparse volatile header of {filename}"
    v = L.SeSparseVolatileHeader.parse(src.read(vat, L.HEADER_SIZE, vwhere, zero_fill=True))
    if v.magic != L.SESPARSE_VOLATILE_MAGIC:
        raise FormatError(vwhere, vat, f"bad volatile header magic {v.magic:#018x}")
    if v.replay_journal:
        raise FormatError(vwhere, vat + 24, "image is dirty: its journal must be replayed (qemu does not)")
    if any(v.pad):
        raise FormatError(vwhere, vat + 32, "non-zero volatile header padding")
    view = _kdmv_view(src.read(0, 4, where), c.version, c.capacity, c.grain_size,
                      c.grain_table_size * L.SECTOR // 8, c.grain_dir_offset, c.grains_offset)
    ext = Extent(src, filename, type_, False, c.capacity, header=view, owns_src=owns_src, sesparse=c)
    if ext.l1_size > L.MAX_L1_ENTRIES:
        raise FormatError(where, 136, f"grain directory of {ext.l1_size} entries is too big")
    return ext


def _kdmv_view(magic: bytes, version: int, capacity: int, grain: int, gtes: int, gd: int, overhead: int) -> Any:
    """Another sparse extent kind's header under the KDMV field names: no flags (no redundant GD, zeroed
    grains, compression or markers), no embedded descriptor, a clean shutdown."""
    return cs.Container(magic=magic, version=version, flags=0, capacity=capacity, grain_size=grain,
                        descriptor_offset=0, descriptor_size=0, num_gtes_per_gt=gtes, rgd_offset=0, gd_offset=gd,
                        overhead=overhead, unclean_shutdown=0, newline_bytes=L.NEWLINE_BYTES, compress_algorithm=0)
