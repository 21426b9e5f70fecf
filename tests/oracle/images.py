"""Factory of small disk images built with qemu-img/qemu-io: the oracle imgscope's tests compare against.

``make(kind, workdir)`` builds image ``kind`` in ``workdir/kind/`` (reused when that directory exists)
and returns its top image, which is always named ``top.<ext>``; backing files, external data files and
extents sit next to it under other names, referenced by relative paths. Every kind is registered with
its qemu format (``FORMATS``), the return code of a read-only ``qemu-img check`` (``EXPECTED_CHECK_RC``)
and, when encrypted, its LUKS secret (``SECRETS``, pass it as ``secret=`` to the ``qemu`` helpers).
Virtual sizes are at most 256 MiB and an image's files use at most ~20 MiB; the whole matrix builds in seconds.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .qemu import SECRET_ID, QemuError, info_json, qemu_img, qemu_io, secret_object

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB
LUKS_SECRET = "abc123"

KINDS: dict[str, Callable[[Path], Path]] = {}
FORMATS: dict[str, str] = {}
EXPECTED_CHECK_RC: dict[str, int] = {}
SECRETS: dict[str, str] = {}


def make(kind: str, workdir: Path) -> Path:
    """Build image ``kind`` under ``workdir`` (or reuse the earlier build) and return its top image."""
    final = Path(workdir) / kind
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}.", dir=workdir))  # rename makes a build all-or-nothing
        try:
            top = KINDS[kind](tmp)
            assert top.parent == tmp and top.stem == "top", top
            try:
                tmp.rename(final)
            except OSError:
                if not final.is_dir():  # else another process sharing workdir built it first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    (top,) = final.glob("top.*")
    return top


def _register(name: str, builder: Callable[[Path], Path], fmt: str = "qcow2", check_rc: int = 0,
              secret: str | None = None) -> None:
    KINDS[name], FORMATS[name], EXPECTED_CHECK_RC[name] = builder, fmt, check_rc
    if secret is not None:
        SECRETS[name] = secret


# ---------------------------------------------------------------- qemu-io commands

def _w(offset: int, length: int, pattern: int | None = None, *flags: str) -> str:
    """A qemu-io write; without a pattern it writes qemu-io's default 0xcd (or zeroes with ``-z``)."""
    fill = [] if pattern is None else ["-P", hex(pattern)]
    return " ".join(["write", *flags, *fill, str(offset), str(length)])


def _writes(size: int = SIZE, cs: int = 64 * KiB, pattern: int = 0x10, compress: bool = True) -> list[str]:
    """Writes scattered over a disk of ``size``: the first cluster, an unaligned sub-cluster write, a
    write straddling a cluster boundary, a run with a zeroed middle, a zeroed never-written range, the
    last cluster and (with ``compress``) one compressed cluster. Patterns are ``pattern + 1...``."""
    cmds = [
        _w(0, cs, pattern + 1),
        _w(size // 64 + 512, 3000, pattern + 2),
        _w(size // 8 - 4 * KiB, 8 * KiB, pattern + 3),
        _w(size // 2, 256 * KiB, pattern + 4),
        _w(size // 2 + 64 * KiB, 64 * KiB, None, "-z"),
        _w(size * 3 // 4, 128 * KiB, None, "-z"),
        _w(size - cs, cs, pattern + 5),
    ]
    return cmds + [_w(size // 4, cs, pattern + 6, "-c")] if compress else cmds


def _rewrites(pattern: int, size: int = SIZE, cs: int = 64 * KiB) -> list[str]:
    """Writes for after a snapshot: a partial overwrite of the (shared) first cluster and a new cluster."""
    return [_w(512, 1024, pattern), _w(size * 5 // 8, cs, pattern)]


# ---------------------------------------------------------------- building blocks

def _create(d: Path, fmt: str, name: str, size: int, opts: str = "", backing: tuple[str, str] | None = None,
            *extra: str) -> Path:
    """``qemu-img create`` run inside ``d`` so that backing and data-file names stay relative."""
    o = ["-o", opts] if opts else []
    b = ["-b", backing[0], "-F", backing[1]] if backing else []
    qemu_img("create", "-q", "-f", fmt, *extra, *o, *b, name, str(size), cwd=d)
    return d / name


def _image(d: Path, fmt: str, size: int = SIZE, opts: str = "", writes: tuple[str, ...] = (),
           backing: tuple[str, str] | None = None, ext: str | None = None) -> Path:
    top = _create(d, fmt, f"top.{ext or fmt}", size, opts, backing)
    if writes:
        qemu_io(fmt, top, *writes)
    return top


def _qcow2(d: Path, opts: str = "", size: int = SIZE, compress: bool = True,
           backing: tuple[str, str] | None = None, pattern: int = 0x10) -> Path:
    """A qcow2 image carrying the standard ``_writes`` (scaled to its size and cluster size)."""
    top = _create(d, "qcow2", "top.qcow2", size, opts, backing)
    cs = info_json(top)["cluster-size"]
    qemu_io("qcow2", top, *_writes(size, cs, pattern, compress))
    return top


def _snapshot(top: Path, name: str, check: bool = True) -> None:
    qemu_img("snapshot", "-c", name, top, check=check)


def _crash(fmt: str, top: Path, *commands: str) -> None:
    """Run ``commands`` then ``abort`` in one qemu-io, leaving whatever metadata was not yet flushed."""
    proc = qemu_io(fmt, top, *commands, "abort", allow_fail=True)
    assert proc.returncode == -signal.SIGABRT, proc


def _semi_random(d: Path, clusters: int = 40, size: int = 16 * MiB, cs: int = 64 * KiB) -> Path:
    """A sparse raw file whose first clusters are 1/3 random, 2/3 zero: compressed clusters of odd sizes."""
    rng = random.Random(0x5EED)
    src = d / "src.raw"
    with open(src, "wb") as f:
        f.writelines(rng.randbytes(cs // 3) + bytes(cs - cs // 3) for _ in range(clusters))
        f.truncate(size)
    return src


def _convert_compressed(d: Path, fmt: str, opts: str = "", ext: str | None = None) -> Path:
    """``qemu-img convert -c`` of ``_semi_random`` data (compressed clusters straddle host clusters)."""
    src, top = _semi_random(d), d / f"top.{ext or fmt}"
    qemu_img("convert", "-c", "-f", "raw", "-O", fmt, *(["-o", opts] if opts else []), src.name, top.name, cwd=d)
    src.unlink()
    return top


# ---------------------------------------------------------------- qcow2 builders

def _refcounts(d: Path, bits: int, snapshot: bool = True) -> Path:
    """Data, a snapshot (refcount 2 on shared clusters), then rewrites. With 1-bit refcounts the snapshot
    fails half-way and leaks a cluster: that is the ``refcount_1_leak`` kind."""
    top = _qcow2(d, f"refcount_bits={bits}")
    if snapshot:
        _snapshot(top, "s1", check=bits > 1)
        qemu_io("qcow2", top, *_rewrites(0x77))
    return top


def _extended_l2(d: Path, backing: bool = False) -> Path:
    """extended_l2=on (64 KiB clusters, 2 KiB subclusters): subcluster-granular data, zero and discard
    writes, a compressed cluster; optionally over a smaller raw backing file full of 0x99."""
    if backing:
        qemu_io("raw", _create(d, "raw", "base.raw", 8 * MiB), _w(0, 8 * MiB, 0x99))
    top = _create(d, "qcow2", "top.qcow2", 16 * MiB, "extended_l2=on", ("base.raw", "raw") if backing else None)
    qemu_io("qcow2", top,
            _w(4 * KiB, 4 * KiB, 0xaa), _w(64 * KiB, 8 * KiB, 0xbb), _w(100 * KiB + 100, 5000, 0xbc),
            _w(128 * KiB, 2 * KiB, None, "-z"), _w(132 * KiB, 8 * KiB, None, "-z"),
            _w(192 * KiB, 64 * KiB, 0xdd), _w(194 * KiB, 4 * KiB, None, "-z"), "discard 224k 2k",
            _w(256 * KiB, 64 * KiB, 0xcc, "-c"), _w(512 * KiB, 64 * KiB, None, "-z"),
            _w(10 * MiB - 2 * KiB, 6 * KiB, 0xee))
    return top


def _zero_clusters(d: Path) -> Path:
    """v3 zero flags: on allocated clusters (kept allocated), unmapped (-u), on never-written clusters,
    and a partial-cluster zero write (written as data)."""
    top = _qcow2(d)
    qemu_io("qcow2", top, _w(0, 64 * KiB, None, "-z"), _w(SIZE - 64 * KiB, 64 * KiB, None, "-z", "-u"),
            _w(20 * MiB, 256 * KiB, None, "-z"), _w(SIZE // 2 + 4 * KiB, 4 * KiB, None, "-z"))
    return top


def _snapshots(d: Path, count: int) -> Path:
    """``count`` internal snapshots; between them each round partially rewrites the first cluster (one
    unshared copy per snapshot) and writes a fresh cluster (shared by all later snapshots). Halfway
    through, the disk grows by 16 MiB, so older snapshots have a smaller disk size."""
    top = _qcow2(d)
    for i in range(count):
        _snapshot(top, f"snap{i}")
        if count > 1 and i == count // 2:
            qemu_img("resize", "-q", top, "+16M")
        qemu_io("qcow2", top, _w(2 * KiB, 4 * KiB, 0x80 + i), _w((2 * i + 1) * 64 * KiB, 64 * KiB, 0x80 + i))
    return top


def _backing_chain(d: Path) -> Path:
    """raw base (32 MiB) <- qcow2 mid (48 MiB) <- qcow2 top (64 MiB), each with its own scattered writes
    (patterns 0x1X, 0x2X, 0x3X), so parts of mid/top lie past the end of their backing file. Top also
    partially overwrites mid's data (COW from backing) and zeroes backing data."""
    qemu_io("raw", _create(d, "raw", "base.raw", 32 * MiB), *_writes(32 * MiB, compress=False))
    qemu_io("qcow2", _create(d, "qcow2", "mid.qcow2", 48 * MiB, "", ("base.raw", "raw")),
            *_writes(48 * MiB, pattern=0x20))
    top = _qcow2(d, backing=("mid.qcow2", "qcow2"), pattern=0x30)
    qemu_io("qcow2", top, _w(24 * MiB + 4 * KiB, 4 * KiB, 0x3a), _w(4 * MiB - 64 * KiB, 128 * KiB, None, "-z"))
    return top


def _luks(d: Path) -> Path:
    """LUKS-encrypted qcow2. The PBKDF benchmark run at creation fails now and then on some VMs ('Unable
    to get accurate CPU usage': a timing sample read 0 ms); sha512 (slower per iteration) makes that rare
    and a retry covers the rest. iter-time=10 keeps creation at ~2 s (the benchmark itself takes most)."""
    opts = f"encrypt.format=luks,encrypt.key-secret={SECRET_ID},encrypt.hash-alg=sha512,encrypt.iter-time=10"
    for attempt in range(3):
        try:
            top = _create(d, "qcow2", "top.qcow2", SIZE, opts, None, *secret_object(LUKS_SECRET))
            break
        except QemuError as e:
            if "accurate CPU usage" not in e.stderr or attempt == 2:
                raise
    qemu_io("qcow2", top, *_writes(), secret=LUKS_SECRET)
    return top


def _bitmaps(d: Path) -> Path:
    """Persistent bitmaps with default, 64 KiB and 4 KiB granularity plus a disabled one; the enabled
    ones record the writes made after they were added."""
    top = _qcow2(d)
    for args in (["bm_default"], ["-g", "65536", "bm_64k"], ["-g", "4096", "bm_4k"], ["--disable", "bm_disabled"]):
        qemu_img("bitmap", "--add", top, *args)
    qemu_io("qcow2", top, *_rewrites(0x77), _w(3 * MiB, 64 * KiB, 0x61), _w(7 * MiB + 1000, 9000, 0x62))
    return top


def _lazy_crash(d: Path, snapshot: bool) -> Path:
    """lazy_refcounts=on and qemu-io aborted after writing: dirty bit set, new clusters have refcount 0.
    With ``snapshot`` the crashed writes are COW copies of clusters shared with a snapshot."""
    top = _create(d, "qcow2", "top.qcow2", SIZE, "lazy_refcounts=on")
    if snapshot:
        qemu_io("qcow2", top, *_writes())
        _snapshot(top, "s1")
    _crash("qcow2", top, *_writes(pattern=0x50))
    return top


def _fragmented(d: Path) -> Path:
    """256 MiB disk with 96 single-cluster writes in pseudo-random guest order, then a 32-cluster run
    written back to front: host order differs from guest order everywhere."""
    cs, rng = 64 * KiB, random.Random(1234)
    top = _create(d, "qcow2", "top.qcow2", 256 * MiB)
    scattered = rng.sample(range(128, 256 * MiB // cs), 96)
    qemu_io("qcow2", top, *(_w(c * cs, cs, 1 + i) for i, c in enumerate(scattered)),
            *(_w(c * cs, cs, 0xa0 + c % 32) for c in reversed(range(64, 96))))
    return top


def _reference(d: Path) -> Path:
    """a.qcow2 of shared/reference/make_fixtures.sh: lazy refcounts over a raw backing file, snapshots,
    zero and compressed clusters, bitmaps."""
    qemu_io("raw", _create(d, "raw", "base.raw", SIZE), _w(0, MiB, 0x11))
    top = _create(d, "qcow2", "top.qcow2", SIZE, "compat=1.1,lazy_refcounts=on", ("base.raw", "raw"))
    qemu_io("qcow2", top, _w(0, 128 * KiB, 0x22), _w(MiB, 64 * KiB, 0x33), _w(2 * MiB, 64 * KiB, None, "-z"))
    _snapshot(top, "snap1")
    qemu_io("qcow2", top, _w(0, 64 * KiB, 0x44), _w(4 * MiB, 64 * KiB, 0x55, "-c"),
            _w(4160 * KiB, 64 * KiB, 0x66, "-c"), _w(8 * MiB, 64 * KiB, None, "-c"))
    qemu_img("bitmap", "--add", top, "bm0")
    qemu_img("bitmap", "--add", "-g", "65536", top, "bm1")
    qemu_io("qcow2", top, _w(5 * MiB, 64 * KiB, 0x77))
    _snapshot(top, "snap2")
    return top


def _compressed(d: Path, compression_type: str) -> Path:
    """convert -c output (zlib or zstd) plus qemu-io writes: compressed clusters rewritten as normal ones,
    new and adjacent compressed clusters, a compressed all-0xcd cluster."""
    top = _convert_compressed(d, "qcow2", f"compression_type={compression_type}")
    qemu_io("qcow2", top, *_writes(16 * MiB),
            _w(5 * MiB, 64 * KiB, 0x67, "-c"), _w(5 * MiB + 64 * KiB, 64 * KiB, None, "-c"))
    return top


_register("v2", partial(_qcow2, opts="compat=0.10"))
_register("v3", partial(_qcow2, opts="compat=1.1"))  # 64 KiB clusters, the default
for _name, _cs in (("512", 512), ("4k", 4 * KiB), ("2m", 2 * MiB)):
    _register(f"cluster_{_name}", partial(_qcow2, opts=f"cluster_size={_cs}"))
_register("refcount_1", partial(_refcounts, bits=1, snapshot=False))
_register("refcount_1_leak", partial(_refcounts, bits=1), check_rc=3)
for _bits in (2, 4, 8, 16, 32, 64):
    _register(f"refcount_{_bits}", partial(_refcounts, bits=_bits))
_register("extended_l2", _extended_l2)
_register("extended_l2_backing", partial(_extended_l2, backing=True))
_register("compressed_zlib", partial(_compressed, compression_type="zlib"))
_register("compressed_zstd", partial(_compressed, compression_type="zstd"))
_register("zero_clusters", _zero_clusters)
for _count in (0, 1, 50):
    _register(f"snapshots_{_count}", partial(_snapshots, count=_count))
_register("backing_chain", _backing_chain)
_register("data_file", partial(_qcow2, opts="data_file=data.raw,data_file_raw=off", compress=False))
_register("data_file_raw", partial(_qcow2, opts="data_file=data.raw,data_file_raw=on", compress=False))
_register("luks", _luks, secret=LUKS_SECRET)
_register("bitmaps", _bitmaps)
_register("lazy_crash", partial(_lazy_crash, snapshot=False), check_rc=2)
_register("lazy_crash_snapshots", partial(_lazy_crash, snapshot=True), check_rc=2)
_register("prealloc_metadata", partial(_qcow2, opts="preallocation=metadata", size=32 * MiB, compress=False))
_register("prealloc_falloc", partial(_qcow2, opts="preallocation=falloc", size=8 * MiB, compress=False))
_register("prealloc_full", partial(_qcow2, opts="preallocation=full", size=8 * MiB, compress=False))
_register("fragmented", _fragmented)
_register("reference", _reference)

# ---------------------------------------------------------------- other formats (make_fixtures.sh recipes)

def _with_base(d: Path, fmt: str, base_fmt: str, base_writes: tuple[str, ...], writes: tuple[str, ...]) -> Path:
    """A 64 MiB image of ``fmt`` over a 64 MiB ``base.<base_fmt>`` backing file (monolithicSparse if vmdk)."""
    base_opts = "subformat=monolithicSparse" if base_fmt == "vmdk" else ""
    qemu_io(base_fmt, _create(d, base_fmt, f"base.{base_fmt}", SIZE, base_opts), *base_writes)
    return _image(d, fmt, writes=writes, backing=(f"base.{base_fmt}", base_fmt))


def _crashed(d: Path, fmt: str, writes: tuple[str, ...]) -> Path:
    top = _create(d, fmt, f"top.{fmt}", SIZE)
    _crash(fmt, top, *writes)
    return top


def _other(name: str, fmt: str, builder: Callable[..., Path], check_rc: int = 0, **kwargs) -> None:
    _register(name, partial(builder, fmt=fmt, **kwargs), fmt, check_rc)


_other("qed", "qed", _with_base, base_fmt="raw", base_writes=(_w(0, MiB, 0x11),),
       writes=(_w(0, 64 * KiB, 7), _w(128 * KiB, 64 * KiB, None, "-z"), _w(10 * MiB, 4 * KiB, 8)))
_other("qed_crash", "qed", _crashed, writes=(_w(0, 64 * KiB, 7), _w(20 * MiB, 64 * KiB, 8)))  # need-check bit
_other("vmdk_sparse", "vmdk", _image, opts="subformat=monolithicSparse",
       writes=(_w(0, 64 * KiB, 0x5a), _w(32 * MiB, 4 * KiB, 0x5b)))
_other("vmdk_stream", "vmdk", _convert_compressed, opts="subformat=streamOptimized")
_other("vmdk_2gb", "vmdk", _image, size=256 * MiB, opts="subformat=twoGbMaxExtentSparse",  # a single extent
       writes=(_w(0, 4 * KiB, 0x21), _w(200 * MiB, 64 * KiB, 0x22)))
_other("vmdk_flat", "vmdk", _image, size=16 * MiB, opts="subformat=monolithicFlat", writes=(_w(MiB, 4 * KiB, 0x31),))
_other("vmdk_delta", "vmdk", _with_base, base_fmt="vmdk",
       base_writes=(_w(0, 64 * KiB, 0x5a), _w(32 * MiB, 4 * KiB, 0x5b)),
       writes=(_w(4 * KiB, 4 * KiB, 0x5c), _w(40 * MiB, 64 * KiB, 0x5d)))
_other("vmdk_zeroed_grain", "vmdk", _image, size=16 * MiB, opts="zeroed_grain=on",
       writes=(_w(0, 64 * KiB, None, "-z"), _w(MiB, 4 * KiB, 0x41)))
_other("vdi", "vdi", _image, writes=(_w(3 * MiB, 4 * KiB, 1), _w(0, 4 * KiB, 2)))
_other("vdi_static", "vdi", _image, size=4 * MiB, opts="static=on", writes=(_w(MiB, 4 * KiB, 3),))
# qemu-img has no check for vpc and qcow: 63. A fixed VHD probes as raw, so always pass FORMATS[kind].
_other("vhd", "vpc", _image, check_rc=63, ext="vhd", writes=(_w(0, 4 * KiB, 3), _w(4 * MiB, 512, 4)))
_other("vhd_fixed", "vpc", _image, check_rc=63, ext="vhd", size=8 * MiB, opts="subformat=fixed",
       writes=(_w(MiB, 4 * KiB, 5),))
_other("vhdx", "vhdx", _image, writes=(_w(0, 4 * KiB, 9), _w(40 * MiB, 4 * KiB, 10)))
_other("qcow1", "qcow", _with_base, check_rc=63, base_fmt="raw", base_writes=(_w(0, MiB, 0x11),),
       writes=(_w(4 * KiB, 4 * KiB, 0x12), _w(20 * MiB, 64 * KiB, 0x13)))
# convert -c -O qcow writes every cluster, then fails (exit 1, no message) on qemu 7.2; so qemu-io instead,
# whose compressed writes must be exactly one cluster (4 KiB) each
_other("qcow1_compressed", "qcow", _image, check_rc=63, size=16 * MiB, writes=(
    _w(0, 4 * KiB, 0x12, "-c"), _w(8 * KiB, 4 * KiB, 0x13, "-c"), _w(12 * KiB, 4 * KiB, None, "-c"),
    _w(MiB, 4 * KiB, 0x14, "-c"), _w(2 * MiB, 4 * KiB, 0x15)))

QCOW2_KINDS = [k for k, fmt in FORMATS.items() if fmt == "qcow2"]
