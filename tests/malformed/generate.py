"""The malformed-image corpus: real qemu-made images, each damaged in one documented way.

Nothing here is committed as a binary: :func:`build` makes every image at test
time in a temporary directory.  qcow2 damages go through
``tests/unit/damage.py``'s :class:`Qcow2Copy` (parse a structure with its
``construct`` declaration, change it, build it back); the other formats patch
their own layout declarations the same way (:func:`patch`).  Each
:class:`Defect` states what imgscope must answer:

* ``error``:   the first failing call raises :class:`FormatError` whose structure starts with this;
* ``limit``:   ... raises :class:`LimitError` for this limit name;
* ``finding``: the image opens and ``check()`` reports this problem id;
* ``backing``: the image opens and ``chain()`` stops with ``backing_error`` containing this text.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import construct as cs

from imgscope.formats.qcow2 import layout as L
from oracle.qemu import qemu_img, qemu_io
from unit.damage import Qcow2Copy, build_base

KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Defect:
    name: str
    fmt: str
    base: str                          # key of BASES
    damage: Callable[[Path], None]     # edits the copy in place (may create files next to it)
    error: str | None = None
    limit: str | None = None
    finding: str | None = None
    backing: str | None = None


# ---------------------------------------------------------------------------- base images

def _qcow2(d: Path) -> Path:
    return build_base(d, "base.qcow2")


def _qcow2_64k(d: Path) -> Path:
    return build_base(d, "base64k.qcow2", cluster_size=64 * KiB, bitmap=False)


def _qcow2_xl2(d: Path) -> Path:
    """Extended L2 entries (16 KiB clusters) with a compressed and a normal cluster."""
    p = d / "xl2.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=16384", p, "1M")
    qemu_io("qcow2", p, "write -c -P 7 0 16k", "write -P 8 64k 16k")
    return p


def _compressed_with_bitmap(img: Qcow2Copy) -> None:
    """Give the compressed entry of the first L2 table a subcluster bitmap (qemu then skips it)."""
    l2 = img.l1()[0] & L.L1E_OFFSET_MASK
    for i in range(img.cluster_size // 16):
        if int.from_bytes(img.read(l2 + 16 * i, 8), "big") & L.OFLAG_COMPRESSED:
            img.write(l2 + 16 * i + 8, (0xFFFF0000).to_bytes(8, "big"))
            return
    raise AssertionError("no compressed L2 entry in the base image")


def _qcow2_rc1(d: Path) -> Path:
    p = d / "rc1.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=1,cluster_size=4096", p, "1M")
    qemu_io("qcow2", p, "write -P 1 0 8k")
    return p


def _simple(fmt: str, name: str, opts: str, size: str, *writes: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        qemu_img("create", "-q", "-f", fmt, *(["-o", opts] if opts else []), p, size)
        if writes:
            qemu_io(fmt, p, *writes)
        return p
    return make


BASES: dict[str, Callable[[Path], Path]] = {
    "qcow2": _qcow2,
    "qcow2-64k": _qcow2_64k,
    "qcow2-rc1": _qcow2_rc1,
    "qcow2-xl2": _qcow2_xl2,
    "qed": _simple("qed", "b.qed", "cluster_size=4096", "4M", "write -P 1 0 4k"),
    "qcow": _simple("qcow", "b.qcow", "", "1M", "write -P 1 0 4k"),
    "vdi": _simple("vdi", "b.vdi", "", "2M", "write -P 1 0 4k"),
    "vpc": _simple("vpc", "b.vhd", "", "2M", "write -P 1 0 4k"),
    "vpc-fixed": _simple("vpc", "f.vhd", "subformat=fixed", "1M"),
    "vhdx": _simple("vhdx", "b.vhdx", "block_size=1M", "4M", "write -P 1 0 4k"),
    "vmdk": _simple("vmdk", "b.vmdk", "subformat=monolithicSparse", "2M", "write -P 1 0 4k"),
}


def build(defect: Defect, cache: Path, dest: Path) -> Path:
    """A damaged copy of ``defect``'s base image in ``dest`` (bases are built once into ``cache``)."""
    key = cache / defect.base
    if not key.is_dir():
        tmp = cache / f".{defect.base}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        BASES[defect.base](tmp)
        tmp.rename(key)
    (src,) = [p for p in key.iterdir() if p.is_file()]
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / src.name
    shutil.copyfile(src, path)
    defect.damage(path)
    return path


# ---------------------------------------------------------------------------- helpers

def patch(path: Path, struct: cs.Construct, offset: int, **fields: int) -> None:
    """Parse ``struct`` at ``offset``, change ``fields``, build it back (any format's layout declaration)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        value = struct.parse(f.read(struct.sizeof() if _fixed(struct) else 64 * KiB))
        value.update(fields)
        f.seek(offset)
        f.write(struct.build(value))


def _fixed(struct: cs.Construct) -> bool:
    try:
        struct.sizeof()
        return True
    except cs.SizeofError:
        return False


def _q(fn: Callable[[Qcow2Copy], object]) -> Callable[[Path], None]:
    """A qcow2 damage written against Qcow2Copy, applied in place."""
    return lambda path: (fn(Qcow2Copy(path)), None)[1]


def _truncate_at(fraction_of: Callable[[Qcow2Copy], int]) -> Callable[[Path], None]:
    return _q(lambda img: img.truncate(fraction_of(img)))


def _l2_entry(img: Qcow2Copy, value: Callable[[int, Qcow2Copy], int]) -> None:
    at, v = img.first_data_l2_entry()
    img.write(at, value(v, img).to_bytes(8, "big"))


def _set_l1(img: Qcow2Copy, value: Callable[[int, Qcow2Copy], int], index: int = 0) -> None:
    h = img.header()
    img.set_entry(h.l1_table_offset, index, value(img.l1()[index], img))


def _set_rt(img: Qcow2Copy, value: Callable[[int, Qcow2Copy], int], index: int = 0) -> None:
    h = img.header()
    img.set_entry(h.refcount_table_offset, index, value(img.reftable()[index], img))


def _refcount_of(img: Qcow2Copy, cluster_offset: int, value: int) -> None:
    """Set the 16-bit refcount of the cluster at ``cluster_offset`` (refcount_order 4 images)."""
    c = img.cluster_size
    per = c // 2
    idx = cluster_offset // c
    block = img.reftable()[idx // per] & L.REFT_OFFSET_MASK
    img.write(block + 2 * (idx % per), value.to_bytes(2, "big"))


def _backing(name: str | Callable[[Path], str]) -> Callable[[Path], None]:
    """Point a qcow2 image's backing file name at ``name`` (rewritten in place, same header area)."""
    def damage(path: Path) -> None:
        img = Qcow2Copy(path)
        raw = (name(path) if callable(name) else name).encode()
        c = img.cluster_size
        off = c - 1024
        img.write(off, raw)
        img.set_header(backing_file_offset=off, backing_file_size=len(raw))
    return damage


def _chain_to(target: Callable[[Path], str], second: bool = False) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        if second:
            other = path.with_name("other.qcow2")
            shutil.copyfile(path, other)
            _backing(path.name)(other)
        _backing(target(path))(path)
    return damage


def _sibling_symlink(target: str) -> Callable[[Path], str]:
    def make(path: Path) -> str:
        link = path.with_name("link.qcow2")
        os.symlink(target, link)
        return link.name
    return make


def _fifo(path: Path) -> str:
    os.mkfifo(path.with_name("pipe"))
    return "pipe"


def _outside(path: Path) -> str:
    out = path.parent.parent / "outside.raw"
    out.write_bytes(bytes(4096))
    return "../outside.raw"


def _many_extensions(path: Path) -> None:
    img = Qcow2Copy(path)
    h = img.header()
    blob = b"".join(L.ExtensionHeader.build({"type": 0x1234 + i, "length": 0}) for i in range(1100))
    img.write(h.header_length, blob + bytes(8))


def _duplicate_extension(path: Path) -> None:
    img = Qcow2Copy(path)
    off, eh = img.extensions()[0]
    h = img.header()
    first = img.read(off, 8 + (eh.length + 7) // 8 * 8)
    img.write(h.header_length, first + first + bytes(8))


def _bitmap_ext(img: Qcow2Copy, **fields: int) -> None:
    for off, eh in img.extensions():
        if eh.type == L.EXT_BITMAPS:
            patch(img.path, L.BitmapsExtension, off + 8, **fields)
            return
    raise AssertionError("no bitmaps extension")


def _snapshot_v3_short_extra(path: Path) -> None:
    """Rewrite snapshot 0 with 8 bytes of extra data (v3 needs 16)."""
    img = Qcow2Copy(path)
    off, e = img.snapshots()[0]
    e.fixed.extra_data_size = 8
    e.extra = e.extra[:8]
    img.write(off, L.SnapshotEntry.build(e))


def _duplicate_snapshot(path: Path) -> None:
    img = Qcow2Copy(path)
    off, e = img.snapshots()[0]
    entry = L.SnapshotEntry.build(e)
    img.write(off, entry + entry)
    img.set_header(nb_snapshots=2)


def _shared_data_rc1(path: Path) -> None:
    """Two L2 entries map one data cluster in a refcount_bits=1 image: 2 references, the counter holds 1."""
    img = Qcow2Copy(path)
    at, v = img.first_data_l2_entry()
    img.write(at + 8, v.to_bytes(8, "big"))


def _truncate_inside(kind: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        img = Qcow2Copy(path)
        start, end = img.regions()[kind][0]
        img.truncate(start + max(1, int((end - start) * keep)))
    return damage


# ---------------------------------------------------------------------------- the qcow2 corpus

def _hdr(**fields: int) -> Callable[[Path], None]:
    return _q(lambda img: img.set_header(**fields))


Q = "qcow2"
QCOW2: list[Defect] = [
    # header fields
    Defect("hdr-version-0", Q, Q, _hdr(version=0), error="qcow2 header.version"),
    Defect("hdr-cluster-bits-0", Q, Q, _hdr(cluster_bits=0), error="qcow2 header.cluster_bits"),
    Defect("hdr-cluster-bits-63", Q, Q, _hdr(cluster_bits=63), error="qcow2 header.cluster_bits"),
    Defect("hdr-header-length-2^32-8", Q, Q, _hdr(header_length=2**32 - 8), error="qcow2 header.header_length"),
    Defect("hdr-crypt-method-3", Q, Q, _hdr(crypt_method=3), error="qcow2 header.crypt_method"),
    Defect("hdr-reftable-clusters-2^32-1", Q, Q, _hdr(refcount_table_clusters=2**32 - 1), limit="max_reftable_bytes"),
    Defect("hdr-reftable-unaligned", Q, Q, _q(lambda i: i.set_header(
        refcount_table_offset=i.header().refcount_table_offset + 8)), error="qcow2 header.refcount_table_offset"),
    Defect("hdr-l1-size-2^32-1", Q, Q, _hdr(l1_size=2**32 - 1), limit="max_l1_bytes"),
    Defect("hdr-l1-unaligned", Q, Q, _q(lambda i: i.set_header(l1_table_offset=i.header().l1_table_offset + 512)),
           error="qcow2 header.l1_table_offset"),
    Defect("hdr-size-2^63-l1-too-small", Q, Q, _hdr(size=2**63), error="qcow2 header.l1_size"),
    Defect("hdr-nb-snapshots-2^32-1", Q, Q, _hdr(nb_snapshots=2**32 - 1), limit="max_snapshots"),
    Defect("hdr-snapshots-unaligned", Q, Q, _q(lambda i: i.set_header(snapshots_offset=i.header().snapshots_offset
                                                                    + 8)), error="qcow2 header.snapshots_offset"),
    Defect("hdr-l1-offset-wraps-2^64", Q, Q, _q(lambda i: i.set_header(l1_table_offset=2**64 - i.cluster_size)),
           error="qcow2 L1 table"),
    Defect("hdr-reftable-offset-wraps-2^64", Q, Q, _q(lambda i: i.set_header(
        refcount_table_offset=2**64 - i.cluster_size)), error="qcow2 refcount table"),
    Defect("hdr-backing-offset-past-cluster0", Q, Q, _q(lambda i: i.set_header(
        backing_file_offset=i.cluster_size * 2, backing_file_size=8)), error="qcow2 header.backing_file_offset"),
    Defect("hdr-backing-size-over-1023", Q, Q, _hdr(backing_file_offset=512, backing_file_size=2000),
           error="qcow2 header.backing_file_size"),
    Defect("hdr-extl2-with-4k-clusters", Q, Q, _q(lambda i: i.set_header(
        incompatible_features=i.header().incompatible_features | L.INCOMPAT_EXTL2)), error="qcow2 header.cluster_bits"),
    Defect("l2-compressed-with-bitmap", Q, "qcow2-xl2", _q(_compressed_with_bitmap), finding="Q2-L2-004"),
    Defect("hdr-dirty-bit", Q, Q, _q(lambda i: i.set_header(
        incompatible_features=i.header().incompatible_features | L.INCOMPAT_DIRTY)), finding="Q2-HDR-001"),
    Defect("hdr-corrupt-bit", Q, Q, _q(lambda i: i.set_header(
        incompatible_features=i.header().incompatible_features | L.INCOMPAT_CORRUPT)), finding="Q2-HDR-002"),
    Defect("hdr-unknown-incompatible-bit", Q, Q, _q(lambda i: i.set_header(
        incompatible_features=i.header().incompatible_features | 1 << 40)), finding="Q2-HDR-003"),
    Defect("hdr-bitmaps-autoclear-clear", Q, Q, _hdr(autoclear_features=0), finding="Q2-HDR-004"),
    # header extensions
    Defect("ext-length-2^32-1", Q, Q, _q(lambda i: i.set_extension(i.extensions()[0][0], length=2**32 - 1)),
           error="qcow2 header extension"),
    Defect("ext-duplicate", Q, Q, _duplicate_extension, error="qcow2 header extension"),
    Defect("ext-1100-extensions", Q, "qcow2-64k", _many_extensions, limit="max_extensions"),
    Defect("ext-bitmaps-length-8", Q, Q, _q(lambda i: i.set_extension(
        [o for o, e in i.extensions() if e.type == L.EXT_BITMAPS][0], length=8)), error="qcow2 header extension"),
    Defect("ext-bitmaps-count-2^32-1", Q, Q, _q(lambda i: _bitmap_ext(i, nb_bitmaps=2**32 - 1)), limit="max_bitmaps"),
    Defect("ext-bitmap-directory-2^63", Q, Q, _q(lambda i: _bitmap_ext(i, bitmap_directory_size=2**63)),
           limit="max_bitmap_directory_bytes"),
    Defect("ext-bitmap-directory-past-eof", Q, Q, _q(lambda i: _bitmap_ext(i, bitmap_directory_offset=i.past_eof())),
           error="qcow2 bitmap directory"),
    # snapshot table
    # past EOF, tables read as zeros as qemu reads them: the check counts the clusters past EOF
    Defect("snap-table-past-eof", Q, Q, _q(lambda i: i.set_header(snapshots_offset=i.past_eof())),
           finding="Q2-REF-001"),
    Defect("snap-extra-2^32-1", Q, Q, _q(lambda i: i.set_snapshot_fixed(0, extra_data_size=2**32 - 1)),
           limit="max_snapshot_extra"),
    # truncated: the bitmap directory (last in the file) past EOF reads as zeros, an invalid directory
    # qemu refuses to open too ("Bitmap '' doesn't satisfy the constraints")
    Defect("snap-name-past-eof", Q, Q, _q(lambda i: i.truncate(i.set_snapshot_fixed(0, name_size=65535) + 200)),
           error="qcow2 bitmap directory"),
    Defect("snap-l1-unaligned", Q, Q, _q(lambda i: i.set_snapshot_fixed(
        0, l1_table_offset=i.snapshots()[0][1].fixed.l1_table_offset + 8)), finding="Q2-SNP-001"),
    Defect("snap-l1-size-2^32-1", Q, Q, _q(lambda i: i.set_snapshot_fixed(0, l1_size=2**32 - 1)),
           finding="Q2-SNP-002"),
    Defect("snap-v3-extra-8-bytes", Q, Q, _snapshot_v3_short_extra, finding="Q2-SNP-003"),
    Defect("snap-duplicate-id", Q, Q, _duplicate_snapshot, finding="Q2-SNP-004"),
    # lookup tables
    Defect("l1-reserved-bits", Q, Q, _q(lambda i: _set_l1(i, lambda v, _: v | 1 << 60)), finding="Q2-L1-001"),
    Defect("l1-points-at-itself", Q, Q, _q(lambda i: _set_l1(
        i, lambda v, img: img.header().l1_table_offset | L.OFLAG_COPIED)), finding="Q2-RC-001"),
    Defect("l1-points-at-reftable", Q, Q, _q(lambda i: _set_l1(
        i, lambda v, img: img.header().refcount_table_offset | L.OFLAG_COPIED)), finding="Q2-RC-001"),
    Defect("l1-l2-past-eof", Q, Q, _q(lambda i: _set_l1(i, lambda v, img: img.past_eof() | L.OFLAG_COPIED)),
           finding="Q2-REF-001"),
    Defect("l1-l2-at-2^56-wrap", Q, Q, _q(lambda i: _set_l1(i, lambda v, img: L.L1E_OFFSET_MASK & ~0x1FF)),
           finding="Q2-REF-001"),
    Defect("l2-reserved-bits", Q, Q, _q(lambda i: _l2_entry(i, lambda v, _: v | 1 << 57)), finding="Q2-L2-001"),
    Defect("l2-data-unaligned", Q, Q, _q(lambda i: _l2_entry(i, lambda v, _: v + 512)), finding="Q2-L2-007"),
    Defect("l2-data-at-l1-table", Q, Q, _q(lambda i: _l2_entry(
        i, lambda v, img: img.header().l1_table_offset | L.OFLAG_COPIED)), finding="Q2-RC-001"),
    Defect("l2-data-past-eof", Q, Q, _q(lambda i: _l2_entry(i, lambda v, img: img.past_eof() | L.OFLAG_COPIED)),
           finding="Q2-REF-001"),
    Defect("l2-data-copied-cleared", Q, Q, _q(lambda i: _l2_entry(i, lambda v, _: v & ~L.OFLAG_COPIED)),
           finding="Q2-CP-002"),
    Defect("l1-copied-cleared", Q, Q, _q(lambda i: _set_l1(i, lambda v, _: v & ~L.OFLAG_COPIED)),
           finding="Q2-CP-001"),
    Defect("l2-compressed-with-copied", Q, Q, _q(lambda i: _l2_entry(
        i, lambda v, _: L.OFLAG_COMPRESSED | L.OFLAG_COPIED | (v & L.L2E_OFFSET_MASK))), finding="Q2-L2-002"),
    Defect("l2-shared-refcount-overflow", Q, "qcow2-rc1", _shared_data_rc1, finding="Q2-REF-002"),
    # refcount structures
    Defect("rt-reserved-bits", Q, Q, _q(lambda i: _set_rt(i, lambda v, _: v | 1)), finding="Q2-RT-001"),
    Defect("rt-refblock-past-eof", Q, Q, _q(lambda i: _set_rt(i, lambda v, img: img.past_eof())),
           finding="Q2-RT-003"),
    Defect("rt-refblock-is-reftable", Q, Q, _q(lambda i: _set_rt(
        i, lambda v, img: img.header().refcount_table_offset)), finding="Q2-RT-004"),
    Defect("rt-refblock-is-l1", Q, Q, _q(lambda i: _set_rt(i, lambda v, img: img.header().l1_table_offset)),
           finding="Q2-RT-004"),
    Defect("rc-zero-for-l1", Q, Q, _q(lambda i: _refcount_of(i, i.header().l1_table_offset, 0)),
           finding="Q2-RC-003"),
    Defect("rc-leak", Q, Q, _q(lambda i: _refcount_of(i, i.header().l1_table_offset, 7)), finding="Q2-RC-002"),
    # truncation at structure boundaries
    Defect("trunc-72", Q, Q, _q(lambda i: i.truncate(72)), error="qcow2 header"),
    # tables past EOF read as zeros (as qemu reads them); what fails is what qemu refuses too: the
    # zeroed bitmaps extension, the bitmap directory past EOF
    Defect("trunc-in-extensions", Q, Q, _q(lambda i: i.truncate(i.extensions()[-1][0] + 4)),
           error="qcow2 header extension bitmaps"),
    Defect("trunc-in-l1", Q, Q, _truncate_inside("l1"), error="qcow2 bitmap directory"),
    Defect("trunc-in-reftable", Q, Q, _truncate_inside("reftable", 0.0), error="qcow2 bitmap directory"),
    Defect("trunc-in-snapshot-table", Q, Q, _truncate_inside("snapshot_table"), error="qcow2 bitmap directory"),
    # the same without bitmaps: the image opens, as in qemu, and the check counts the tables past EOF
    # (not the L1: qemu then reads its L2 tables past EOF as stale cache contents, not as zeros)
    Defect("trunc-in-reftable-64k", Q, "qcow2-64k", _truncate_inside("reftable", 0.0), finding="Q2-REF-001"),
    Defect("trunc-in-snapshot-table-64k", Q, "qcow2-64k", _truncate_inside("snapshot_table"), finding="Q2-REF-001"),
    Defect("trunc-in-bitmap-directory", Q, Q, _truncate_inside("bitmaps", 0.3), error="qcow2 bitmap directory"),
    Defect("trunc-before-bitmap-directory", Q, Q, _q(lambda i: i.truncate(max(e for _, e in i.regions()["l2"]))),
           error="qcow2 bitmap directory"),
    Defect("trunc-after-l2-tables", Q, "qcow2-64k", _q(lambda i: i.truncate(max(e for _, e in i.regions()["l2"]))),
           finding="Q2-REF-001"),
    # backing files (the chain stops; the image itself stays readable)
    Defect("backing-names-itself", Q, Q, _backing(lambda p: p.name), backing="loops back"),
    Defect("backing-cycle-a-b-a", Q, Q, _chain_to(lambda p: "other.qcow2", second=True), backing="loops back"),
    Defect("backing-outside-directory", Q, Q, _backing(_outside), backing="outside the image's directory"),
    Defect("backing-symlink-escapes", Q, Q, _backing(_sibling_symlink("/etc/hostname")),
           backing="outside the image's directory"),
    Defect("backing-absolute-dev-zero", Q, Q, _backing("/dev/zero"), backing="outside the image's directory"),
    Defect("backing-fifo", Q, Q, _backing(_fifo), backing="FIFO"),
    Defect("backing-json", Q, Q, _backing('json:{"file.filename":"/etc/passwd"}'), backing="json:"),
    Defect("backing-nbd", Q, Q, _backing("nbd://127.0.0.1:10809/x"), backing="protocol"),
    Defect("backing-missing", Q, Q, _backing("nothing-here.qcow2"), backing="cannot be opened"),
    Defect("backing-directory", Q, Q, _backing("."), backing="directory"),
]


# ---------------------------------------------------------------------------- other formats

def _other_formats() -> list[Defect]:
    from imgscope.formats.qcow import layout as QC
    from imgscope.formats.qed import layout as QE
    from imgscope.formats.vdi import layout as VD
    from imgscope.formats.vhdx import layout as VX
    from imgscope.formats.vmdk import layout as VM
    from imgscope.formats.vpc import layout as VP

    def p(struct: cs.Construct, offset: int, **fields: int) -> Callable[[Path], None]:
        return lambda path: patch(path, struct, offset, **fields)

    def trunc(n: int) -> Callable[[Path], None]:
        return lambda path: os.truncate(path, n)

    def vhd_footer(**fields: int) -> Callable[[Path], None]:
        def damage(path: Path) -> None:
            patch(path, VP.Footer, os.path.getsize(path) - 512, **fields)
        return damage

    return [
        Defect("qed-cluster-size-0", "qed", "qed", p(QE.Header, 0, cluster_size=0), error="qed header"),
        Defect("qed-table-size-17", "qed", "qed", p(QE.Header, 0, table_size=17), error="qed header"),
        Defect("qed-l1-past-eof", "qed", "qed", p(QE.Header, 0, l1_table_offset=1 << 40), finding="QED-HDR-003"),
        Defect("qed-truncated-header", "qed", "qed", trunc(40), error="qed header"),
        Defect("qcow-cluster-bits-63", "qcow", "qcow", p(QC.Header, 0, cluster_bits=63), error="qcow header"),
        Defect("qcow-l2-bits-0", "qcow", "qcow", p(QC.Header, 0, l2_bits=0), error="qcow header"),
        Defect("qcow-truncated-header", "qcow", "qcow", trunc(20), error="qcow header"),
        Defect("vdi-blocks-2^32-1", "vdi", "vdi", p(VD.Header, 0, blocks_in_image=2**32 - 1), error="vdi"),
        Defect("vdi-block-size-0", "vdi", "vdi", p(VD.Header, 0, block_size=0), error="vdi header"),
        Defect("vdi-bmap-unaligned", "vdi", "vdi", p(VD.Header, 0, offset_bmap=2**32 - 1), finding="VDI-HDR-002"),
        Defect("vdi-truncated-header", "vdi", "vdi", trunc(0x50), error="vdi header"),
        Defect("vpc-footer-checksum", "vpc", "vpc-fixed", vhd_footer(checksum=0x12345678), finding="VHD-FTR-001"),
        Defect("vpc-dyn-max-entries-2^32-1", "vpc", "vpc", p(VP.DynHeader, 512, max_table_entries=2**32 - 1),
               limit="max_table_bytes"),
        Defect("vpc-dyn-block-size-0", "vpc", "vpc", p(VP.DynHeader, 512, block_size=0), error="vhd"),
        Defect("vhdx-both-headers-bad-crc", "vhdx", "vhdx",
               lambda path: (patch(path, VX.Header, 64 * KiB, checksum=1), patch(path, VX.Header, 128 * KiB,
                                                                                    checksum=1)), error="vhdx"),
        Defect("vhdx-truncated-at-64k", "vhdx", "vhdx", trunc(64 * KiB), error="vhdx"),
        Defect("vmdk-grain-size-0", "vmdk", "vmdk", p(VM.SparseHeader, 0, grain_size=0), error="vmdk"),
        Defect("vmdk-gd-past-eof", "vmdk", "vmdk", p(VM.SparseHeader, 0, gd_offset=2**62), finding="VMDK-GT-001"),
        Defect("vmdk-num-gtes-2^32-1", "vmdk", "vmdk", p(VM.SparseHeader, 0, num_gtes_per_gt=2**32 - 1), error="vmdk"),
        Defect("vmdk-truncated-header", "vmdk", "vmdk", trunc(100), error="vmdk"),
    ]


def corpus() -> list[Defect]:
    """Every defect of every format imgscope has a driver for."""
    out = list(QCOW2)
    try:
        out += _other_formats()
    except (ImportError, AttributeError):  # a driver (or a declaration) has not landed yet
        pass
    return out
