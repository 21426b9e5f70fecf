"""Parse the small qcow2 structures (header, extensions, snapshot table, bitmap
directory, LUKS header) with the declarations in :mod:`.layout`.

No numpy here: ``imgscope info`` and ``snapshots`` run on this module alone.
Every value read from the file is range-checked before it is used as an
offset, a size or a count; violations are :class:`FormatError` naming the
structure and its offset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import construct as cs

from ...errors import FormatError
from ...io import Source
from ...limits import LIMITS, enforce
from ...model import Snapshot
from . import layout as L


@dataclass
class Extension:
    type: int
    offset: int
    length: int
    data: bytes
    name: str
    decoded: Any = None


@dataclass
class Bitmap:
    name: str
    table_offset: int
    table_size: int
    flags: int
    type: int
    granularity_bits: int
    extra_data_size: int
    entry_offset: int


@dataclass
class Qcow2Metadata:
    path: str
    file_size: int
    header: cs.Container
    header_bytes: bytes
    extensions: list[Extension]
    backing_file: str | None
    backing_format: str | None
    data_file: str | None
    feature_table: list[tuple[str, int, str]]
    snapshots: list[Snapshot]
    snapshots_size: int
    bitmaps: list[Bitmap]
    bitmaps_ext: cs.Container | None
    fde: cs.Container | None
    luks: cs.Container | None
    problems: list[tuple[str, int | None, str]] = field(default_factory=list)

    # convenience -------------------------------------------------------
    @property
    def cluster_bits(self) -> int:
        return self.header.cluster_bits

    @property
    def cluster_size(self) -> int:
        return 1 << self.header.cluster_bits

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def incompatible(self) -> int:
        return self.header.incompatible_features or 0

    @property
    def compatible(self) -> int:
        return self.header.compatible_features or 0

    @property
    def autoclear(self) -> int:
        return self.header.autoclear_features or 0

    @property
    def refcount_order(self) -> int:
        return 4 if self.header.version < 3 else self.header.refcount_order

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible & L.INCOMPAT_EXTL2)

    @property
    def has_data_file(self) -> bool:
        return bool(self.incompatible & L.INCOMPAT_DATA_FILE)

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // (16 if self.extended_l2 else 8)

    @property
    def header_length(self) -> int:
        return L.V2_HEADER_LENGTH if self.header.version < 3 else self.header.header_length

    @property
    def virtual_size(self) -> int:
        """qemu's size of the active layer: whole sectors (total_sectors drops a partial last one)."""
        return self.header.size // 512 * 512

    @property
    def compression_type(self) -> int:
        return self.header.compression_type or 0


def _parse(struct: cs.Construct, data: bytes, structure: str, offset: int) -> Any:
    try:
        return struct.parse(data)
    except cs.ConstructError as exc:
        raise FormatError(structure, offset, f"cannot be decoded ({exc.__class__.__name__})") from None


def read_header(src: Source) -> tuple[cs.Container, bytes]:
    """Read and validate the header the way qemu's open does (qcow2_do_open)."""
    if src.size < L.V2_HEADER_LENGTH:
        raise FormatError("qcow2 header", 0, f"file is {src.size} bytes, shorter than the 72-byte header")
    head = src.read(0, 4096, "qcow2 header", zero_fill=True)  # qemu reads past EOF as zeros
    version = int.from_bytes(head[4:8], "big")
    if version not in (2, 3):
        raise FormatError("qcow2 header.version", 4, f"unsupported qcow2 version {version}")
    if version == 3 and src.size < L.V3_MIN_HEADER_LENGTH:
        raise FormatError("qcow2 header", 0, "file ends inside the version 3 header")
    if version == 3:
        hl = int.from_bytes(head[100:104], "big")
        if hl < L.V3_MIN_HEADER_LENGTH:
            raise FormatError("qcow2 header.header_length", 100, f"{hl} is shorter than 104 bytes")
    hdr = _parse(L.Header, head, "qcow2 header", 0)
    cb = hdr.cluster_bits
    if not 9 <= cb <= 21:
        raise FormatError("qcow2 header.cluster_bits", 20, f"{cb} is outside 9..21")
    csz = 1 << cb
    hlen = L.V2_HEADER_LENGTH if version == 2 else hdr.header_length
    if version == 3:
        if hlen > csz:
            raise FormatError("qcow2 header.header_length", 100, f"{hlen} is larger than the cluster size {csz}")
        # (the spec asks for a multiple of 8; qemu does not check it: the extensions start at hlen)
        if hdr.refcount_order > 6:
            raise FormatError("qcow2 header.refcount_order", 96, f"{hdr.refcount_order} is larger than 6")
        if (hdr.incompatible_features & L.INCOMPAT_EXTL2) and cb < 14:
            raise FormatError("qcow2 header.cluster_bits", 20, "extended L2 entries need clusters of 16 KiB or more")
    header_bytes = src.read(0, hlen, "qcow2 header", zero_fill=True)
    if hdr.crypt_method > 2:
        raise FormatError("qcow2 header.crypt_method", 32, f"unknown encryption method {hdr.crypt_method}")
    if hdr.refcount_table_clusters == 0:
        raise FormatError("qcow2 header.refcount_table_clusters", 56, "refcount table is empty")
    enforce("max_reftable_bytes", hdr.refcount_table_clusters * csz, "qcow2 header.refcount_table_clusters", 56)
    _aligned(hdr.refcount_table_offset, csz, "qcow2 header.refcount_table_offset", 48)
    enforce("max_l1_bytes", hdr.l1_size * 8, "qcow2 header.l1_size", 36)
    _aligned(hdr.l1_table_offset, csz, "qcow2 header.l1_table_offset", 40)
    l2_entries = csz // (16 if (version == 3 and hdr.incompatible_features & L.INCOMPAT_EXTL2) else 8)
    need = -(-hdr.size // (csz * l2_entries))
    if hdr.l1_size < need:
        raise FormatError("qcow2 header.l1_size", 36, f"L1 table of {hdr.l1_size} entries is too small for "
                          f"{hdr.size} bytes (needs {need})")
    enforce("max_snapshots", hdr.nb_snapshots, "qcow2 header.nb_snapshots", 60)
    if hdr.nb_snapshots:
        _aligned(hdr.snapshots_offset, csz, "qcow2 header.snapshots_offset", 64)
    # an L1 or refcount table past EOF reads as zeros, as qemu reads it (qemu-img info and check open the
    # image; check reports the table's clusters past EOF); their sizes are bounded by the limits above.
    # qemu's validate_table_offset refuses only a table whose end passes 2^63
    for name, off, size in (("L1 table", hdr.l1_table_offset, hdr.l1_size * 8),
                            ("refcount table", hdr.refcount_table_offset, hdr.refcount_table_clusters * csz),
                            ("snapshot table", hdr.snapshots_offset, hdr.nb_snapshots * 40)):
        if off + size > (1 << 63) - 1:
            raise FormatError(f"qcow2 {name}", off, f"{size} bytes at this offset end past 2^63")
    if hdr.backing_file_offset:
        if hdr.backing_file_offset > csz:
            raise FormatError("qcow2 header.backing_file_offset", 8, "backing file name lies outside cluster 0")
        if hdr.backing_file_size > min(1023, csz - hdr.backing_file_offset):
            raise FormatError("qcow2 header.backing_file_size", 16, f"backing file name of "
                              f"{hdr.backing_file_size} bytes is too long")
    return hdr, header_bytes


def _aligned(value: int, csz: int, structure: str, offset: int) -> None:
    if value % csz:
        raise FormatError(structure, offset, f"{value:#x} is not aligned to the cluster size {csz:#x}")


def read_extensions(src: Source, hdr: cs.Container) -> list[Extension]:
    csz = 1 << hdr.cluster_bits
    offset = L.V2_HEADER_LENGTH if hdr.version < 3 else hdr.header_length
    end = hdr.backing_file_offset if hdr.backing_file_offset else csz
    area = src.read(0, end, "qcow2 header extensions", zero_fill=True)  # zeros past EOF, as qemu reads
    out: list[Extension] = []
    seen: set[int] = set()
    while offset < end:
        if offset + 8 > end:
            raise FormatError("qcow2 header extension", offset, "extension header runs past the extension area")
        eh = L.ExtensionHeader.parse(area[offset:offset + 8])
        etype, elen = eh.type, eh.length
        if elen > end - offset - 8:  # checked before the end marker, as qemu checks it ("too large")
            raise FormatError(f"qcow2 header extension {etype:#010x}", offset,
                              f"length {elen} runs past the end of the extension area ({end:#x})")
        if etype == L.EXT_END:
            break
        if len(out) >= LIMITS["max_extensions"]:
            enforce("max_extensions", len(out) + 1, "qcow2 header extensions", offset)
        data = bytes(area[offset + 8:offset + 8 + elen])
        ext = Extension(etype, offset, elen, data, L.EXTENSION_NAMES.get(etype, "unknown"))
        if etype in seen and etype in L.EXTENSION_NAMES:
            raise FormatError(f"qcow2 header extension {ext.name}", offset, "appears more than once")
        seen.add(etype)
        ext.decoded = _decode_extension(ext)
        out.append(ext)
        offset += 8 + ((elen + 7) & ~7)
    return out


def _decode_extension(ext: Extension) -> Any:
    where = f"qcow2 header extension {ext.name}"
    if ext.type in (L.EXT_BACKING_FORMAT, L.EXT_DATA_FILE):
        return ext.data.decode("utf-8", "replace")
    if ext.type == L.EXT_FEATURE_TABLE:
        n = len(ext.data) // 48
        return [(L.FEATURE_KINDS[e.type] if e.type < 3 else f"type{e.type}", e.bit,
                 e.name.decode("ascii", "replace"))
                for e in (L.FeatureNameEntry.parse(ext.data[i * 48:(i + 1) * 48]) for i in range(n))]
    if ext.type == L.EXT_BITMAPS:
        if ext.length < 24:
            raise FormatError(where, ext.offset, f"length {ext.length} is shorter than 24 bytes")
        return L.BitmapsExtension.parse(ext.data)
    if ext.type == L.EXT_FDE:
        if ext.length < 16:
            raise FormatError(where, ext.offset, f"length {ext.length} is shorter than 16 bytes")
        return L.FdeExtension.parse(ext.data)
    return None


def read_snapshots(src: Source, hdr: cs.Container) -> tuple[list[Snapshot], int]:
    """Parse the snapshot table; return the entries and the table's byte size."""
    n = hdr.nb_snapshots
    if not n:
        return [], 0
    base = hdr.snapshots_offset
    limit = LIMITS["max_snapshot_table_bytes"]
    # read lazily in growing chunks so a claimed huge count cannot allocate much; bytes past EOF read as
    # zeros, as qemu reads them (entries with empty ids and names; the check reports the table past EOF)
    buf = bytearray()
    out: list[Snapshot] = []
    pos = 0

    def need(k: int, what: str) -> None:
        nonlocal buf
        if pos + k > limit:
            enforce("max_snapshot_table_bytes", pos + k, "qcow2 snapshot table", base)
        if pos + k > len(buf):
            want = max(pos + k, min(2 * len(buf) + 4096, limit))
            buf = bytearray(src.read(base, want + -want % 8, f"qcow2 snapshot table entry {len(out)} ({what})",
                                     zero_fill=True))

    for i in range(n):
        need(40, "fixed part")
        f = L.SnapshotFixed.parse(bytes(buf[pos:pos + 40]))
        enforce("max_snapshot_extra", f.extra_data_size, f"qcow2 snapshot table entry {i}.extra_data_size",
                base + pos + 36)
        used = 40 + f.extra_data_size + f.id_str_size + f.name_size
        need(used, "extra data, id and name")
        total = used + -used % 8  # the padding of the last entry may lie past EOF
        extra_raw = bytes(buf[pos + 40:pos + 40 + f.extra_data_size])
        extra: dict[str, Any] = {}
        for name, end in L.SNAPSHOT_EXTRA_FIELDS:
            if len(extra_raw) >= end:
                extra[name] = int.from_bytes(extra_raw[end - 8:end], "big")
        if len(extra_raw) > 24:
            extra["unknown"] = extra_raw[24:]
        p = pos + 40 + f.extra_data_size
        # C strings to qemu: a NUL ends the id and the name
        sid = bytes(buf[p:p + f.id_str_size]).split(b"\0", 1)[0].decode("utf-8", "replace")
        name = bytes(buf[p + f.id_str_size:p + f.id_str_size + f.name_size]).split(b"\0", 1)[0].decode(
            "utf-8", "replace")
        vmss = extra.get("vm_state_size_large", f.vm_state_size)
        out.append(Snapshot(
            index=i, id=sid, name=name, l1_table_offset=f.l1_table_offset, l1_size=f.l1_size,
            date_sec=f.date_sec, date_nsec=f.date_nsec, vm_clock_nsec=f.vm_clock_nsec, vm_state_size=vmss,
            disk_size=extra.get("disk_size"), icount=extra.get("icount"), extra_data_size=f.extra_data_size,
            entry_offset=base + pos, entry_length=total, extra=extra))
        pos += total
    return out, pos


def read_bitmaps(src: Source, hdr: cs.Container, ext: cs.Container) -> list[Bitmap]:
    enforce("max_bitmaps", ext.nb_bitmaps, "qcow2 bitmaps extension.nb_bitmaps")
    enforce("max_bitmap_directory_bytes", ext.bitmap_directory_size, "qcow2 bitmaps extension.bitmap_directory_size")
    off, size = ext.bitmap_directory_offset, ext.bitmap_directory_size
    data = src.read(off, size, "qcow2 bitmap directory")
    out: list[Bitmap] = []
    pos = 0
    for i in range(ext.nb_bitmaps):
        if pos + 24 > size:
            raise FormatError(f"qcow2 bitmap directory entry {i}", off + pos, "runs past the directory size")
        f = L.BitmapDirFixed.parse(data[pos:pos + 24])
        total = 24 + f.extra_data_size + f.name_size
        total += -total % 8
        if pos + total > size:
            raise FormatError(f"qcow2 bitmap directory entry {i}", off + pos, "runs past the directory size")
        p = pos + 24 + f.extra_data_size
        name = data[p:p + f.name_size].decode("utf-8", "replace")
        out.append(Bitmap(name, f.bitmap_table_offset, f.bitmap_table_size, f.flags, f.type, f.granularity_bits,
                          f.extra_data_size, off + pos))
        pos += total
    return out


def read_metadata(src: Source) -> Qcow2Metadata:
    hdr, header_bytes = read_header(src)
    exts = read_extensions(src, hdr)
    by_type = {e.type: e for e in exts}
    backing = None
    if hdr.backing_file_offset and hdr.backing_file_size:
        raw = src.read(hdr.backing_file_offset, hdr.backing_file_size, "qcow2 backing file name", zero_fill=True)
        backing = raw.split(b"\0", 1)[0].decode("utf-8", "replace") or None  # a C string to qemu
    bf = by_type.get(L.EXT_BACKING_FORMAT)
    df = by_type.get(L.EXT_DATA_FILE)
    ft = by_type.get(L.EXT_FEATURE_TABLE)
    bm = by_type.get(L.EXT_BITMAPS)
    fde = by_type.get(L.EXT_FDE)
    snaps, snaps_size = read_snapshots(src, hdr)
    bitmaps = read_bitmaps(src, hdr, bm.decoded) if bm is not None else []
    luks = None
    if fde is not None and hdr.crypt_method == 2 and fde.decoded.offset + 592 <= src.size:
        try:
            luks = L.LuksHeader.parse(src.read(fde.decoded.offset, 592, "qcow2 LUKS header"))
        except cs.ConstructError:
            luks = None
    return Qcow2Metadata(
        path=src.path, file_size=src.size, header=hdr, header_bytes=header_bytes, extensions=exts,
        backing_file=backing, backing_format=bf.decoded if bf else None, data_file=df.decoded if df else None,
        feature_table=ft.decoded if ft else [], snapshots=snaps, snapshots_size=snaps_size, bitmaps=bitmaps,
        bitmaps_ext=bm.decoded if bm else None, fde=fde.decoded if fde else None, luks=luks)
