"""VMDK, VHD ("vpc") and VHDX drivers against qemu-img 7.2: info, map, check, guest content, damage.

Images are made by qemu-img/qemu-io with data at scattered offsets; damaged
variants are built with the drivers' own ``layout`` declarations.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import imgscope
from imgscope import model
from imgscope.errors import FormatError, ImgscopeError
from imgscope.formats.vhdx import layout as XL
from imgscope.formats.vhdx.crc32c import crc32c, with_zeroed_field
from imgscope.formats.vmdk import layout as ML
from imgscope.formats.vpc import layout as PL
from oracle import qemu

from conftest import require_qemu

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: name -> (qemu format, create args, size, qemu-io writes)
SPECS = {
    "ms.vmdk": ("vmdk", ["-o", "subformat=monolithicSparse"], "64M",
                ["write -P 0x5a 0 64k", "write -P 0x5b 32M 4k", "write -P 0x5c 40000k 100k"]),
    "tg.vmdk": ("vmdk", ["-o", "subformat=twoGbMaxExtentSparse"], "5G",
                ["write -P 0x11 0 64k", "write -P 0x12 2097120k 64k", "write -P 0x13 4608M 8k"]),
    "tf.vmdk": ("vmdk", ["-o", "subformat=twoGbMaxExtentFlat"], "2049M", ["write -P 0x21 2047M 2M"]),
    "mf.vmdk": ("vmdk", ["-o", "subformat=monolithicFlat"], "16M", ["write -P 0x31 1M 4k", "write -P 0x32 9M 64k"]),
    "zg.vmdk": ("vmdk", ["-o", "zeroed_grain=on"], "16M", ["write -P 0x41 0 128k", "write -z 64k 64k",
                                                            "write -z 5M 64k", "write -P 0x42 7M 1k"]),
    "p.vhd": ("vpc", [], "64M", ["write -P 3 0 4k", "write -P 4 4M 512", "write -P 5 30M 3M"]),
    "pf.vhd": ("vpc", ["-o", "subformat=fixed"], "8M", ["write -P 6 1M 4k"]),
    "h.vhdx": ("vhdx", [], "64M", ["write -P 9 0 4k", "write -P 10 40M 4k", "write -P 11 17M 9M"]),
}
ALL = [*SPECS, "so.vmdk", "delta.vmdk"]


def _fmt(name: str) -> str:
    return "vpc" if name.endswith(".vhd") else "vhdx" if name.endswith(".vhdx") else "vmdk"


@pytest.fixture(scope="module")
def imgdir(tmp_path_factory) -> Path:
    """Every sample image, built once per module."""
    require_qemu()
    d = tmp_path_factory.mktemp("vmdk_vhd")
    for name, (fmt, opts, size, writes) in SPECS.items():
        qemu.qemu_img("create", "-q", "-f", fmt, *opts, str(d / name), size)
        if writes:
            qemu.qemu_io(fmt, d / name, *writes)
    raw = d / "semi.raw"
    rng = np.random.default_rng(7)
    with open(raw, "wb") as f:
        for i in range(24):
            f.write(rng.integers(0, 256, 20000, np.uint8).tobytes() + bytes(45536) if i % 5 else bytes(65536))
    qemu.qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(d / "so.vmdk"))
    qemu.qemu_img("create", "-q", "-f", "vmdk", "-b", "ms.vmdk", "-F", "vmdk", str(d / "delta.vmdk"))
    qemu.qemu_io("vmdk", d / "delta.vmdk", "write -P 0x77 96k 64k", "write -P 0x78 32M 2k")
    return d


def _damaged(imgdir: Path, name: str, tmp_path: Path) -> Path:
    for f in imgdir.iterdir():
        if f.name.startswith(name.split(".")[0]):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / name


def _info(path: Path) -> dict:
    out = qemu.info_json(path, _fmt(path.name))
    out.pop("actual-size")
    return out


# ------------------------------------------------------------------------------------------------ oracle


def test_fixed_vhd_is_probed_as_raw_like_qemu(imgdir):
    """A fixed VHD has its footer at the end only: qemu-img (and imgscope) probe it as raw, and imgscope
    says what it looks like; -f vpc reads it as a VHD."""
    path = imgdir / "pf.vhd"
    with imgscope.open(path) as img:
        mine = img.info_dict()
    theirs = qemu.info_json(path)
    assert (mine["format"], mine["virtual-size"]) == (theirs["format"], theirs["virtual-size"]) == ("raw", 8391168)
    assert "fixed VHD" in mine["imgscope-hint"]
    with imgscope.open(path, "vpc") as img:
        assert img.format == "vpc" and "imgscope-hint" not in img.info_dict()


@pytest.mark.parametrize("name", ALL)
def test_info_equals_qemu(imgdir, name):
    with imgscope.open(imgdir / name, _fmt(name)) as img:
        mine = img.info_dict()
    mine.pop("actual-size")
    assert mine == _info(imgdir / name)


@pytest.mark.parametrize("name", ALL)
def test_map_equals_qemu(imgdir, name, backend):
    with imgscope.open(imgdir / name, _fmt(name)) as img:
        assert img.map_entries() == qemu.map_json(imgdir / name, _fmt(name))


@pytest.mark.parametrize("name", ALL)
def test_check_equals_qemu(imgdir, name):
    rc, report, _ = qemu.check_json(imgdir / name, _fmt(name))
    with imgscope.open(imgdir / name) as img:
        res = img.check()
    assert res.exit_code() == rc
    assert report == (res.qemu_json() if rc != 63 else None)
    assert set(res.summary()) <= {"VHD-SIZ-001"}  # clean images: at most the VHD size note


def _slot_reader(img):
    """``read(i)``: guest slot ``i`` read through imgscope's mapping (host bytes per slot), chain included."""
    cs = img.guest_map().cluster_size
    layers = []
    for layer in img.chain():
        gm = layer.guest_map()
        assert gm.cluster_size == cs
        layers.append((gm, _slot_files(layer, len(gm.kind))))

    def read(i: int) -> bytes:
        n = min(cs, img.virtual_size - i * cs)
        for gm, files in layers:
            k = gm.kind[i] if i < len(gm.kind) else model.UNALLOCATED
            if k == model.DATA:
                return files[i].read(int(gm.host[i]), n, "test", zero_fill=True)
            if k != model.UNALLOCATED:
                assert k == model.ZERO
                break
        return bytes(n)
    return cs, read, layers[0][0]


def _slot_files(layer, n: int) -> list:
    if layer.format == "vmdk":
        idx = layer.grains.extent_index()
        return [layer.extents_list[j].src for j in idx.tolist()]
    return [layer.src] * n


def _written_slots(name: str, cs: int) -> set[int]:
    """Guest slots touched by the qemu-io writes of SPECS (for disks too big to compare whole)."""
    units = {"k": KiB, "M": MiB, "G": GiB}
    out = set()
    for w in SPECS.get(name, ("", [], "", []))[3]:
        off, length = (int(v[:-1]) * units[v[-1]] if v[-1] in units else int(v) for v in w.split()[-2:])
        out.update(range(off // cs, -(-(off + length) // cs)))
    return out


def _qemu_slot(path: Path, fmt: str, cs: int, i: int, tmp: Path) -> bytes:
    out = tmp / "slot.raw"
    out.unlink(missing_ok=True)
    qemu.qemu_img("dd", "-f", fmt, "-O", "raw", f"bs={cs}", f"skip={i}", f"count={i + 1}"  # qemu-img dd counts the skipped blocks too
                  , f"if={path}", f"of={out}")
    return out.read_bytes()[:cs]


@pytest.mark.parametrize("name", [n for n in ALL if n != "so.vmdk"])
def test_guest_content_equals_qemu(imgdir, name, tmp_path):
    """Host bytes per slot (imgscope's mapping) hash like qemu's guest view of the same slot."""
    path = imgdir / name
    with imgscope.open(path, _fmt(name)) as img:
        cs, read, gm = _slot_reader(img)
        if img.virtual_size <= 64 * MiB:
            raw = qemu.convert_raw(path, tmp_path / "out.raw", _fmt(name))
            mine = [hashlib.sha256(read(i)).hexdigest() for i in range(len(gm.kind))]
            assert mine == qemu.cluster_hashes(raw, cs)
            return
        stored = set(np.flatnonzero(gm.kind != model.UNALLOCATED).tolist()) if name != "tf.vmdk" else set()
        slots = _written_slots(name, cs) | stored | {0, len(gm.kind) - 1}  # flat: every slot is "data"
        assert len(slots) < 16
        for i in sorted(slots):
            assert read(i) == _qemu_slot(path, _fmt(name), cs, i, tmp_path), i


def test_stream_optimized_grains_decompress_to_qemu_content(imgdir, tmp_path):
    import zlib
    raw = qemu.convert_raw(imgdir / "so.vmdk", tmp_path / "so.raw", "vmdk").read_bytes()
    with imgscope.open(imgdir / "so.vmdk") as img:
        gm = img.guest_map()
        assert set(np.unique(gm.kind).tolist()) <= {model.COMPRESSED, model.UNALLOCATED}
        for i in np.flatnonzero(gm.kind == model.COMPRESSED).tolist():
            blob = img.src.read(int(gm.host[i]), int(gm.length[i]), "grain")
            assert zlib.decompress(blob[ML.GRAIN_MARKER_SIZE:]) == raw[i * 65536:(i + 1) * 65536]
        zero = np.flatnonzero(gm.kind == model.UNALLOCATED)
        assert all(raw[i * 65536:(i + 1) * 65536] == bytes(65536) for i in zero.tolist())


def test_frames_and_references(imgdir):
    with imgscope.open(imgdir / "ms.vmdk") as img:
        cl = img.clusters()
        assert set(str(cl.roles[0]).split("|")) == {"header", "l1", "l2"}  # all metadata in cluster 0
        assert int((cl.role == "data").sum()) == int((img.guest_map().kind == model.DATA).sum())
        assert img.features.set.sum() == 2  # newline detection + redundant grain directory
    with imgscope.open(imgdir / "h.vhdx") as img:
        names = list(img.extensions.name)
        assert "region:BAT" in names and "metadata:virtual_disk_size" in names
        assert img.header["block_size"] == img.cluster_size == 8 * MiB


def test_extent_rows_hold_lengths_past_4_gib(tmp_path):
    """A 10 GiB extent's length in img.extensions (uint32 wrapped it to 2 GiB); a hostile one that does not
    fit 64 bits is an error naming the extent, not an OverflowError from pandas."""
    require_qemu()
    path = tmp_path / "big.vmdk"
    qemu.qemu_img("create", "-q", "-f", "vmdk", str(path), "10G")
    with imgscope.open(path) as img:
        ext = img.extensions
        assert ext.length.dtype == np.uint64 and int(ext.length[0]) == 10 * GiB == img.virtual_size
        img.extension_rows = lambda: [{"type": 0, "name": "SESPARSE", "offset": 0, "length": 1 << 65,
                                       "decoded": None, "raw": None}]
        with pytest.raises(FormatError, match="vmdk SESPARSE.*does not fit in 64 bits"):
            img.extensions


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


# ------------------------------------------------------------------------------------------------ damage


def _vmdk_gt(path: Path, rgd: bool = False) -> int:
    """File offset of grain table 0 through the grain directory (or its redundant copy)."""
    raw = path.read_bytes()
    h = ML.SparseHeader.parse(raw[:512])
    gd = (h.rgd_offset if rgd else h.gd_offset) * 512
    return struct.unpack_from("<I", raw, gd)[0] * 512


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_vmdk_grains_past_eof_all_found_qemu_stops_at_first(imgdir, tmp_path):
    path = _damaged(imgdir, "ms.vmdk", tmp_path)
    gt = _vmdk_gt(path)
    for index, sector in ((3, 400000), (7, 900000)):
        _patch(path, gt + 4 * index, struct.pack("<I", sector))
    rc, report, stderr = qemu.check_json(path, "vmdk")
    assert (rc, report) == (1, None) and "sector 384 points after EOF" in stderr
    with imgscope.open(path) as img:
        res = img.check()
    assert res.exit_code() == 1 and res.corruptions == 1
    f = res.findings
    past = f[f.problem == "VMDK-GRN-001"]
    assert list(past.guest_offset) == [3 * 65536, 7 * 65536]
    assert list(past.host_offset) == [400000 * 512, 900000 * 512]
    assert res.summary()["VMDK-GT-001"] == 2  # the redundant tables were not touched


def test_vmdk_redundant_table_mismatch(imgdir, tmp_path):
    path = _damaged(imgdir, "ms.vmdk", tmp_path)
    rgt = _vmdk_gt(path, rgd=True)
    _patch(path, rgt + 4 * 1, struct.pack("<I", 128))  # the RGT claims grain 1 is the first data grain
    rc, report, _ = qemu.check_json(path, "vmdk")
    assert rc == 0  # qemu reads only the primary tables
    with imgscope.open(path) as img:
        res = img.check()
        assert res.exit_code() == 0 and res.qemu_json() == report
        row = res.findings.iloc[0]
        assert (row.problem, row.guest_offset, row.found, row.expected) == ("VMDK-GT-001", 65536, "0x0", "0x80")


def test_vmdk_extent_outside_directory_is_refused(imgdir, tmp_path):
    (tmp_path / "sub").mkdir()
    desc = (imgdir / "mf.vmdk").read_text().replace('"mf-flat.vmdk"', '"../mf-flat.vmdk"')
    shutil.copy(imgdir / "mf-flat.vmdk", tmp_path / "mf-flat.vmdk")
    (tmp_path / "sub" / "x.vmdk").write_text(desc)
    with pytest.raises(ImgscopeError, match="outside"):
        imgscope.open(tmp_path / "sub" / "x.vmdk")


def _vhd_footer(path: Path, offset: int, **changes) -> None:
    raw = path.read_bytes()[offset:offset + 512]
    f = PL.Footer.parse(raw)
    f.update(changes)
    _patch(path, offset, PL.Footer.build(f))


def test_vhd_footer_checksum_wrong(imgdir, tmp_path):
    path = _damaged(imgdir, "p.vhd", tmp_path)
    size = path.stat().st_size
    for at in (0, size - 512):
        _vhd_footer(path, at, checksum=0x12345678)
    proc = qemu.qemu_img("info", "-f", "vpc", str(path), check=False)
    assert proc.returncode == 1 and "Incorrect header checksum" in proc.stderr  # qemu 7.2 refuses the image
    rc, _, _ = qemu.check_json(path, "vpc")
    with imgscope.open(path) as img:
        res = img.check()
    assert res.exit_code() == rc == 1  # qemu-img check cannot open it either
    rows = res.findings[res.findings.problem == "VHD-FTR-001"]
    assert list(rows.host_offset) == [0, size - 512] and set(rows.found) == {"0x12345678"}


def test_vhd_bat_entry_past_eof(imgdir, tmp_path):
    path = _damaged(imgdir, "p.vhd", tmp_path)
    dyn = PL.DynHeader.parse(path.read_bytes()[512:1536])
    _patch(path, dyn.table_offset + 4 * 9, struct.pack(">I", 0x100000))
    refused = qemu.qemu_img("info", "-f", "vpc", str(path), check=False)
    assert refused.returncode == 1  # qemu refuses it: check exits 1 with qemu's reason, not 63
    with imgscope.open(path) as img:
        res = img.check()
        assert res.exit_code() == 1 and refused.stderr.strip().endswith(res.error_message())
        row = res.findings.iloc[0]
        assert (row.problem, row.structure, row.host_offset) == ("VHD-BAT-001", "9", 0x100000 * 512)
        assert img.guest_map().host[9] == 0x100000 * 512 + 512


def _vhdx_header(path: Path, index: int) -> tuple[int, object]:
    at = XL.HEADER_OFFSETS[index]
    return at, XL.Header.parse(path.read_bytes()[at:at + XL.HEADER_CRC_SIZE])


def _current_vhdx_header(path: Path) -> int:
    return max((0, 1), key=lambda i: _vhdx_header(path, i)[1].sequence_number)


def test_vhdx_header_checksum_wrong(imgdir, tmp_path):
    path = _damaged(imgdir, "h.vhdx", tmp_path)
    cur = _current_vhdx_header(path)
    at, h = _vhdx_header(path, cur)
    _patch(path, at + 4, struct.pack("<I", h.checksum ^ 1))
    rc, report, _ = qemu.check_json(path, "vhdx")
    with imgscope.open(path) as img:
        res = img.check()
        assert img.meta.current == 1 - cur  # the other header is used, as qemu does
        assert (res.exit_code(), res.qemu_json()) == (rc, report) == (0, res.qemu_json())
        assert res.summary() == {"VHDX-HDR-001": 1}
        assert res.findings.host_offset[0] == at


def test_vhdx_bat_entry_past_eof(imgdir, tmp_path):
    path = _damaged(imgdir, "h.vhdx", tmp_path)
    with imgscope.open(path) as img:
        bat_at = img.meta.bat_region.file_offset
    _patch(path, bat_at + 8 * 3, struct.pack("<Q", (4096 << 20) | XL.FULLY_PRESENT))
    rc, report, stderr = qemu.check_json(path, "vhdx")
    assert rc == 2 and "BAT entry 3 start offset" in stderr
    with imgscope.open(path) as img:
        res = img.check()
    assert (res.exit_code(), res.qemu_json()) == (rc, report)
    assert res.summary() == {"VHDX-BAT-001": 1}


def test_vhdx_pending_log_is_replayed_in_memory(imgdir, tmp_path):
    path = _damaged(imgdir, "h.vhdx", tmp_path)
    log = XL.LogEntryHeader.parse(path.read_bytes()[MiB:MiB + 64])
    assert log.signature == b"loge"
    cur = _current_vhdx_header(path)
    at, h = _vhdx_header(path, cur)
    h.log_guid = log.log_guid  # point the current header at the (stale) entry qemu left in the log
    raw = bytearray(XL.Header.build(h))
    struct.pack_into("<I", raw, 4, with_zeroed_field(bytes(raw), 4))
    _patch(path, at, bytes(raw))
    before = path.read_bytes()
    assert qemu.qemu_img("info", "-f", "vhdx", str(path), check=False).returncode == 1
    assert qemu.check_json(path, "vhdx")[0] == 1
    replayed = tmp_path / "replayed.vhdx"
    shutil.copy(path, replayed)
    rc, report, _ = qemu.check_json(replayed, "vhdx", repair="all")
    assert rc == 0 and report["corruptions-fixed"] == 1
    with imgscope.open(path) as img, imgscope.open(replayed) as ref:
        assert img.dirty and len(img.meta.log.entries) == 1 and not ref.meta.log.entries
        res = img.check()
        assert res.exit_code() == 1 and "VHDX-LOG-001" in res.summary()
        mine, theirs = img.guest_map(), ref.guest_map()
        assert np.array_equal(mine.kind, theirs.kind) and np.array_equal(mine.host, theirs.host)
        assert img.virtual_size == ref.virtual_size == qemu.info_json(replayed, "vhdx")["virtual-size"]
    assert path.read_bytes() == before  # nothing written


@pytest.mark.parametrize("name", ["ms.vmdk", "so.vmdk", "p.vhd", "h.vhdx"])
def test_truncated_images_fail_cleanly(imgdir, tmp_path, name):
    data = (imgdir / name).read_bytes()
    for cut in (3, 100, 600, 1600, 70000, 1 << 20):
        if cut >= len(data):
            continue
        p = tmp_path / f"t{cut}{Path(name).suffix}"
        p.write_bytes(data[:cut])
        try:
            with imgscope.open(p, _fmt(name)) as img:
                img.info_dict()
                img.map_entries()
                img.check()
        except FormatError as exc:
            assert exc.structure


def test_info_needs_no_numpy(imgdir):
    """Opening and ``info`` read only small structures: numpy is loaded for tables, not before."""
    import subprocess
    import sys
    code = ("import sys\nfrom imgscope.io import Source\n"
            "from imgscope.formats.vmdk.driver import VmdkImage\nfrom imgscope.formats.vpc.driver import VpcImage\n"
            "from imgscope.formats.vhdx.driver import VhdxImage\n"
            f"for cls, name in ((VmdkImage, 'tg.vmdk'), (VmdkImage, 'ms.vmdk'), (VpcImage, 'p.vhd'),"
            f" (VhdxImage, 'h.vhdx')):\n    cls(Source({str(imgdir)!r} + '/' + name)).info_dict()\n"
            "assert 'numpy' not in sys.modules and 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
