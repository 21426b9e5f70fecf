"""Damaged copies of real qcow2 images, for the hardening tests of tests/unit/.

Every image starts as a file qemu-img/qemu-io made (:func:`build_base`), copied
to a temporary directory; :class:`Qcow2Copy` then edits the copy through the
construct declarations of :mod:`imgscope.formats.qcow2.layout` (parse the
structure, change a field, build it and write it back), so a damage is always
expressed in the same vocabulary as the parser that must survive it.

``HEADER_DAMAGES`` make the image unopenable: each returns the ``(structure,
offset)`` the resulting :class:`imgscope.FormatError` must name.
``TABLE_DAMAGES`` leave the image openable and damage only a lookup or
refcount table: each returns the problem id ``check()`` must report.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import construct as cs

from imgscope import native
from imgscope.formats.qcow2 import layout as L
from oracle.qemu import qemu_img, qemu_io

KiB, MiB = 1 << 10, 1 << 20


def build_base(directory: Path, name: str = "base.qcow2", *, cluster_size: int = 4 * KiB, size: int = 4 * MiB,
               opts: str = "", bitmap: bool = True) -> Path:
    """A small qcow2 v3 image with data, a zero cluster, a compressed cluster, one snapshot and a bitmap.

    After the snapshot the first cluster is rewritten (copy-on-write) and a new
    cluster is written, so the active layer and the snapshot differ and the
    persistent bitmap has a table and a data cluster.
    """
    path = Path(directory) / name
    o = f"cluster_size={cluster_size}" + (f",{opts}" if opts else "")
    qemu_img("create", "-q", "-f", "qcow2", "-o", o, path, str(size))
    cs_ = cluster_size
    qemu_io("qcow2", path, f"write -P 0x11 0 {4 * cs_}", f"write -c -P 0x22 {size // 4} {cs_}",
            f"write -z {size // 2} {2 * cs_}", f"write -P 0x33 {size // 2 + 4 * cs_} 1000")
    qemu_img("snapshot", "-c", "s1", path)
    if bitmap:
        qemu_img("bitmap", "--add", path, "bm0")
    qemu_io("qcow2", path, f"write -P 0x44 0 {cs_}", f"write -P 0x55 {size - cs_} {cs_}")
    return path


class Qcow2Copy:
    """A writable copy of a qcow2 image whose structures can be parsed, changed and written back.

    Without ``dest`` the object reads ``original`` itself (and must then only be read).
    """

    def __init__(self, original: Path, dest: Path | None = None) -> None:
        self.path = Path(dest if dest is not None else original)
        if dest is not None:
            shutil.copyfile(original, self.path)

    # ------------------------------------------------------------ raw bytes
    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def truncate(self, length: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(length)

    # ------------------------------------------------------------ header
    def header(self) -> cs.Container:
        return L.Header.parse(self.read(0, 4096))

    def set_header(self, **fields: int) -> None:
        hdr = self.header()
        hdr.update(fields)
        self.write(0, L.Header.build(hdr))

    @property
    def header_length(self) -> int:
        h = self.header()
        return h.header_length if h.version >= 3 else L.V2_HEADER_LENGTH

    @property
    def cluster_size(self) -> int:
        return 1 << self.header().cluster_bits

    def past_eof(self, clusters: int = 16) -> int:
        """A cluster-aligned offset ``clusters`` clusters past the end of the file."""
        c = self.cluster_size
        return (-(-self.size // c) + clusters) * c

    # ------------------------------------------------------------ extensions
    def extensions(self) -> list[tuple[int, cs.Container]]:
        """(offset, ExtensionHeader) of every header extension before the end marker."""
        pos, out = self.header_length, []
        while pos + 8 <= self.cluster_size:
            eh = L.ExtensionHeader.parse(self.read(pos, 8))
            if eh.type == L.EXT_END:
                break
            out.append((pos, eh))
            pos += 8 + (eh.length + 7) // 8 * 8
        return out

    def set_extension(self, offset: int, **fields: int) -> None:
        eh = L.ExtensionHeader.parse(self.read(offset, 8))
        eh.update(fields)
        self.write(offset, L.ExtensionHeader.build(eh))

    # ------------------------------------------------------------ snapshot table
    def snapshots(self) -> list[tuple[int, cs.Container]]:
        """(offset, SnapshotEntry) of every snapshot table entry, in table order."""
        hdr = self.header()
        pos, out = hdr.snapshots_offset, []
        for _ in range(hdr.nb_snapshots):
            entry = L.SnapshotEntry.parse(self.read(pos, 64 * KiB))
            out.append((pos, entry))
            f = entry.fixed
            used = 40 + f.extra_data_size + f.id_str_size + f.name_size
            pos += used + -used % 8
        return out

    def set_snapshot_fixed(self, index: int, **fields: int) -> int:
        """Change fields of the fixed part of snapshot entry ``index``; returns the entry's offset."""
        off, entry = self.snapshots()[index]
        entry.fixed.update(fields)
        self.write(off, L.SnapshotFixed.build(entry.fixed))
        return off

    # ------------------------------------------------------------ tables (u64 big-endian entries)
    def table(self, offset: int, n: int) -> list[int]:
        return native.be64(self.read(offset, 8 * n), n).tolist()

    def set_entry(self, table_offset: int, index: int, value: int) -> int:
        """Overwrite entry ``index`` of a u64 table; returns the entry's file offset."""
        at = table_offset + 8 * index
        self.write(at, value.to_bytes(8, "big"))
        return at

    def l1(self) -> list[int]:
        h = self.header()
        return self.table(h.l1_table_offset, h.l1_size)

    def reftable(self) -> list[int]:
        h = self.header()
        return self.table(h.refcount_table_offset, h.refcount_table_clusters * self.cluster_size // 8)

    def l1_tables(self) -> list[tuple[int, int]]:
        """(offset, entries) of the active L1 table and of every snapshot's L1 table."""
        h = self.header()
        return [(h.l1_table_offset, h.l1_size)] + [(e.fixed.l1_table_offset, e.fixed.l1_size)
                                                   for _, e in self.snapshots()]

    def regions(self) -> dict[str, list[tuple[int, int]]]:
        """Byte ranges ``[start, end)`` of every metadata structure, grouped by kind (for mutation tests)."""
        h, c = self.header(), self.cluster_size
        exts = self.extensions()
        ext_end = (exts[-1][0] + 8 + (exts[-1][1].length + 7) // 8 * 8 if exts else self.header_length) + 8
        snaps = self.snapshots()
        snap_end = h.snapshots_offset
        for off, e in snaps:
            used = 40 + e.fixed.extra_data_size + e.fixed.id_str_size + e.fixed.name_size
            snap_end = off + used + -used % 8
        l1s = [(off, off + 8 * n) for off, n in self.l1_tables() if n]
        l2s = sorted({(e & L.L1E_OFFSET_MASK, (e & L.L1E_OFFSET_MASK) + c) for off, n in self.l1_tables()
                      for e in self.table(off, n) if e & L.L1E_OFFSET_MASK})
        rt = self.reftable()
        used_rt = max((i for i, e in enumerate(rt) if e), default=0) + 1
        out = {
            "header": [(0, self.header_length)],
            "extensions": [(self.header_length, ext_end)],
            "snapshot_table": [(h.snapshots_offset, snap_end)] if snaps else [],
            "l1": l1s,
            "l2": l2s,
            "reftable": [(h.refcount_table_offset, h.refcount_table_offset + 8 * used_rt)],
            "refblocks": [(e & L.REFT_OFFSET_MASK, (e & L.REFT_OFFSET_MASK) + c) for e in rt if e],
        }
        for off, eh in exts:
            if eh.type == L.EXT_BITMAPS:
                bx = L.BitmapsExtension.parse(self.read(off + 8, 24))
                d = bx.bitmap_directory_offset
                out["bitmaps"] = [(d, d + bx.bitmap_directory_size)]
                fixed = L.BitmapDirFixed.parse(self.read(d, 24))
                out["bitmaps"].append((fixed.bitmap_table_offset, fixed.bitmap_table_offset
                                       + 8 * fixed.bitmap_table_size))
        return {k: v for k, v in out.items() if v}

    def first_data_l2_entry(self) -> tuple[int, int]:
        """(file offset, value) of the first L2 entry of the active layer that maps a data cluster."""
        for e in self.l1():
            l2 = e & L.L1E_OFFSET_MASK
            if not l2:
                continue
            entries = self.table(l2, self.cluster_size // 8)
            for i, v in enumerate(entries):
                if v & L.L2E_OFFSET_MASK and not v & (L.OFLAG_COMPRESSED | L.OFLAG_ZERO):
                    return l2 + 8 * i, v
        raise AssertionError("image has no data cluster")


Expect = tuple[str, "int | None"]


# ---------------------------------------------------------------- damages that make open() fail

def _truncated_header(img: Qcow2Copy) -> Expect:
    img.truncate(50)
    return "qcow2 header", 0


def _l1_size_absurd(img: Qcow2Copy) -> Expect:
    img.set_header(l1_size=2**31 - 1)
    return "qcow2 header.l1_size", 36


def _l1_past_eof(img: Qcow2Copy) -> str:
    """Tables past EOF read as zeros, as qemu reads them: the check counts the clusters past EOF."""
    img.set_header(l1_table_offset=img.past_eof())
    return "Q2-REF-001"


def _header_length_over_cluster(img: Qcow2Copy) -> Expect:
    img.set_header(header_length=img.cluster_size + 8)
    return "qcow2 header.header_length", 100


def _header_length_unaligned(img: Qcow2Copy) -> Expect:
    """qemu does not ask for a multiple of 8: the extensions start at 108, whose header then reads the
    padding as the end marker and the next magic as its length ("Header extension too large")."""
    img.set_header(header_length=108)
    return "qcow2 header extension 0x00000000", 108


def _header_length_short(img: Qcow2Copy) -> Expect:
    img.set_header(header_length=96)
    return "qcow2 header.header_length", 100


def _extension_overrun(img: Qcow2Copy) -> Expect:
    off, eh = img.extensions()[0]
    img.set_extension(off, length=img.cluster_size)
    return f"qcow2 header extension {eh.type:#010x}", off


def _nb_snapshots_huge(img: Qcow2Copy) -> Expect:
    img.set_header(nb_snapshots=70000)
    return "qcow2 header.nb_snapshots", 60


def _refcount_order_7(img: Qcow2Copy) -> Expect:
    img.set_header(refcount_order=7)
    return "qcow2 header.refcount_order", 96


def _cluster_bits(bits: int) -> Callable[[Qcow2Copy], Expect]:
    def damage(img: Qcow2Copy) -> Expect:
        img.set_header(cluster_bits=bits)
        return "qcow2 header.cluster_bits", 20
    return damage


def _snapshots_past_eof(img: Qcow2Copy) -> str:
    img.set_header(snapshots_offset=img.past_eof())
    return "Q2-REF-001"


def _reftable_past_eof(img: Qcow2Copy) -> str:
    img.set_header(refcount_table_offset=img.past_eof())
    return "Q2-REF-001"


def _reftable_clusters_zero(img: Qcow2Copy) -> Expect:
    img.set_header(refcount_table_clusters=0)
    return "qcow2 header.refcount_table_clusters", 56


def _snapshot_extra_huge(img: Qcow2Copy) -> Expect:
    off = img.set_snapshot_fixed(0, extra_data_size=5000)
    return "qcow2 snapshot table entry 0.extra_data_size", off + 36


def _version_4(img: Qcow2Copy) -> Expect:
    img.set_header(version=4)
    return "qcow2 header.version", 4


def _empty(img: Qcow2Copy) -> Expect:
    img.truncate(0)
    return "qcow2 header", 0


def _one_byte(img: Qcow2Copy) -> Expect:
    img.truncate(1)
    return "qcow2 header", 0


HEADER_DAMAGES: dict[str, Callable[[Qcow2Copy], Expect]] = {
    "truncated_header": _truncated_header,
    "l1_size_2^31-1": _l1_size_absurd,
    "header_length_over_cluster": _header_length_over_cluster,
    "header_length_not_8_aligned": _header_length_unaligned,
    "header_length_under_104": _header_length_short,
    "extension_overruns_area": _extension_overrun,
    "nb_snapshots_70000": _nb_snapshots_huge,
    "refcount_order_7": _refcount_order_7,
    "cluster_bits_8": _cluster_bits(8),
    "cluster_bits_22": _cluster_bits(22),
    "reftable_clusters_0": _reftable_clusters_zero,
    "snapshot_extra_data_5000": _snapshot_extra_huge,
    "version_4": _version_4,
    "empty_file": _empty,
    "one_byte_file": _one_byte,
}

#: damages after which magic-byte detection no longer sees qcow2 (qemu-img calls such files raw too)
NOT_DETECTED = frozenset({"empty_file", "one_byte_file"})


# ---------------------------------------------------------------- damages inside tables only

def _l2_unaligned(img: Qcow2Copy) -> str:
    h = img.header()
    e = img.l1()[0]
    img.set_entry(h.l1_table_offset, 0, e + 512)
    return "Q2-L1-002"


def _l2_reserved_bits(img: Qcow2Copy) -> str:
    at, v = img.first_data_l2_entry()
    img.write(at, (v | 0x2).to_bytes(8, "big"))
    return "Q2-L2-001"


def _refblock_unaligned(img: Qcow2Copy) -> str:
    h = img.header()
    img.set_entry(h.refcount_table_offset, 0, img.reftable()[0] + 512)
    return "Q2-RT-002"


def _refcounts_scrambled(img: Qcow2Copy) -> str:
    """Every counter of the first refcount block becomes (cluster index mod 4): too low, zero and leaked."""
    h = img.header()
    off = img.reftable()[0] & L.REFT_OFFSET_MASK
    n = img.cluster_size * 8 >> h.refcount_order
    values = native.refblock_decode(img.read(off, img.cluster_size), h.refcount_order, n)
    ncl = -(-img.size // img.cluster_size)
    values[:ncl] = [i % 4 for i in range(ncl)]
    img.write(off, native.refblock_encode(values, h.refcount_order, img.cluster_size))
    return "Q2-RC-002"


def _snapshot_table_past_a_partial_sector(img: Qcow2Copy) -> str:
    """7 bytes appended, the snapshot table moved one cluster past the old end: qemu's file length is
    whole sectors, so the table exceeds the end by less than a cluster and is counted (imgscope
    measured from the exact size and reported it past EOF)."""
    end = -(-img.size // img.cluster_size) * img.cluster_size
    img.truncate(end + 7)
    img.set_header(snapshots_offset=end + img.cluster_size)
    return "Q2-SNP-003"  # the entry read as zeros has no extra data


TABLE_DAMAGES: dict[str, Callable[[Qcow2Copy], str]] = {
    "refcounts_scrambled": _refcounts_scrambled,
    "l2_offset_unaligned": _l2_unaligned,
    "l2_entry_reserved_bits": _l2_reserved_bits,
    "refblock_unaligned": _refblock_unaligned,
    "l1_past_eof": _l1_past_eof,
    "snapshots_offset_past_eof": _snapshots_past_eof,
    "reftable_past_eof": _reftable_past_eof,
    "snapshot_table_past_a_partial_sector": _snapshot_table_past_a_partial_sector,
}


# ---------------------------------------------------------------- exercising every reader

def exercise(path: Path, fmt: str | None = None) -> None:
    """Open ``path`` and run every reader a user can reach: metadata, frames, map, check, info.

    Raises whatever imgscope raises; callers decide which exception types are acceptable.
    """
    import imgscope
    with imgscope.open(path, fmt) as img:
        img.header, img.features, img.extensions, img.snapshots
        img.info_dict()
        img.mapping()
        img.mapping(merge=True)
        for layer in img.layer_names()[1:]:
            img.mapping(layer)
            img.mapping(layer, merge=True)
        img.map_entries()
        img.clusters()
        res = img.check()
        res.qemu_json(), res.findings, res.human()
