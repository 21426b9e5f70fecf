"""QED, qcow v1 and VDI drivers against qemu-img 7.2: info, map, check, guest content, damage, repair.

Images are made by qemu-img/qemu-io with data at scattered offsets (QED and
qcow v1 over a raw backing file, zero and compressed clusters, a crashed QED
with need-check set, dynamic and static VDI); damaged variants are built with
the drivers' own ``layout`` declarations.
"""
from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

import imgscope
from imgscope import model
from imgscope.errors import FormatError
from imgscope.formats.qcow import layout as CL
from imgscope.formats.qed import layout as QL
from imgscope.formats.vdi import layout as VL
from imgscope.repair import run_repair
from oracle import qemu

from conftest import require_qemu

KiB, MiB = 1 << 10, 1 << 20
#: name -> (format, create options, size, qemu-io writes); "base.raw" is the backing file
SPECS = {
    "q.qed": ("qed", ["-b", "base.raw", "-F", "raw"], "16M",
              ["write -P 7 0 64k", "write -z 128k 64k", "write -P 8 10M 4k", "write -P 9 15M 100k",
               "write -P 10 3000k 5k"]),
    "q4k.qed": ("qed", ["-o", "cluster_size=4096,table_size=16"], "32M", ["write -P 1 0 17M", "write -P 2 30M 8k"]),
    "o.qcow": ("qcow", ["-b", "base.raw", "-F", "raw"], "16M",
               ["write -P 0x21 4k 4k", "write -P 0x22 5M 64k", "write -c -P 0x23 8M 512", "write -P 0x24 1023k 3k"]),
    "v.vdi": ("vdi", [], "64M", ["write -P 1 3M 4k", "write -P 2 0 4k", "write -P 3 40M 1500k"]),
    "vs.vdi": ("vdi", ["-o", "static=on"], "8M", ["write -P 4 1M 4k", "write -P 5 6M 100k"]),
}
ALL = [*SPECS, "qd.qed", "oc.qcow"]
CHECKED = [n for n in ALL if not n.endswith(".qcow")]


def _fmt(name: str) -> str:
    return name.rsplit(".", 1)[1]


@pytest.fixture(scope="module")
def imgdir(tmp_path_factory) -> Path:
    """Every sample image, built once per module (all together well under a second of qemu time)."""
    require_qemu()
    d = tmp_path_factory.mktemp("qed_qcow_vdi")
    qemu.qemu_img("create", "-q", "-f", "raw", str(d / "base.raw"), "16M")
    qemu.qemu_io("raw", d / "base.raw", "write -P 0x11 0 1M", "write -P 0x12 9M 64k")
    for name, (fmt, opts, size, writes) in SPECS.items():
        qemu.qemu_img("create", "-q", "-f", fmt, *opts, name, size, cwd=d)
        qemu.qemu_io(fmt, d / name, *writes)
    qemu.qemu_img("create", "-q", "-f", "qed", str(d / "qd.qed"), "16M")
    proc = qemu.qemu_io("qed", d / "qd.qed", "write -P 7 0 64k", "write -P 8 5M 64k", "abort", allow_fail=True)
    assert proc.returncode != 0
    rng = np.random.default_rng(3)
    with open(d / "semi.raw", "wb") as f:
        for i in range(48):  # zero, compressible and (every 7th) incompressible clusters
            n = 4096 if i % 7 == 1 else 1365 if i % 3 else 0
            f.write(rng.integers(0, 256, n, np.uint8).tobytes() + bytes(4096 - n))
        f.truncate(MiB)
    # qemu-img 7.2 exits 1 after writing every cluster of a compressed qcow (the image is complete)
    qemu.qemu_img("convert", "-c", "-f", "raw", "-O", "qcow", "semi.raw", "oc.qcow", cwd=d, check=False)
    return d


def _info(path: Path) -> dict:
    out = qemu.info_json(path, _fmt(path.name))
    out.pop("actual-size")
    return out


def _mine(path: Path) -> dict:
    with imgscope.open(path) as img:
        out = img.info_dict()
    out.pop("actual-size")
    return {k: v for k, v in out.items() if not k.startswith("imgscope-")}


def _copy(imgdir: Path, name: str, tmp_path: Path) -> Path:
    shutil.copy(imgdir / "base.raw", tmp_path / "base.raw")
    shutil.copy(imgdir / name, tmp_path / name)
    return tmp_path / name


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _same_check(path: Path) -> object:
    """imgscope's check equals qemu-img check (JSON and exit code); returns imgscope's result."""
    rc, report, _ = qemu.check_json(path, _fmt(path.name))
    with imgscope.open(path) as img:
        res = img.check()
    assert res.exit_code() == rc
    if report is not None:
        assert res.qemu_json() == report
    return res


# ---------------------------------------------------------------- qemu compatibility

@pytest.mark.parametrize("name", ALL)
def test_info_matches_qemu(imgdir, name):
    assert _mine(imgdir / name) == _info(imgdir / name)


@pytest.mark.parametrize("name", ALL)
def test_map_matches_qemu(imgdir, name, backend):
    with imgscope.open(imgdir / name) as img:
        assert img.map_entries() == qemu.map_json(imgdir / name, _fmt(name))


@pytest.mark.parametrize("name", ALL)
def test_check_matches_qemu(imgdir, name):
    rc, report, _ = qemu.check_json(imgdir / name, _fmt(name))
    with imgscope.open(imgdir / name) as img:
        res = img.check()
    assert res.exit_code() == rc
    if name.endswith(".qcow"):
        assert rc == 63 and report is None and not res.supported
    else:
        assert res.qemu_json() == report


@pytest.mark.parametrize("name", ALL)
def test_guest_content_through_mapping(imgdir, tmp_path, name):
    """Host bytes of every data cluster (read via the guest map) equal qemu's converted raw output."""
    raw = tmp_path / "out.raw"
    qemu.qemu_img("convert", "-f", _fmt(name), "-O", "raw", str(imgdir / name), str(raw))
    data = raw.read_bytes()
    with imgscope.open(imgdir / name) as img:
        gm = img.guest_map()
        cs = gm.cluster_size
        blob = (imgdir / name).read_bytes()
        checked = 0
        for i in np.flatnonzero(gm.kind == model.DATA).tolist():
            n = min(cs, gm.virtual_size - i * cs)
            host = int(gm.host[i])
            got = blob[host:host + n].ljust(n, b"\0")
            assert hashlib.sha256(got).digest() == hashlib.sha256(data[i * cs:i * cs + n]).digest(), i
            checked += 1
        for i in np.flatnonzero(gm.kind == model.ZERO).tolist():
            assert not any(data[i * cs:(i + 1) * cs]), i
    assert checked > 0


def test_compressed_kinds(imgdir):
    with imgscope.open(imgdir / "o.qcow") as img:
        gm = img.guest_map()
        comp = np.flatnonzero(gm.kind == model.COMPRESSED)
        assert (comp * gm.cluster_size).tolist() == [8 * MiB]
        assert 0 < int(gm.length[comp[0]]) < gm.cluster_size
    with imgscope.open(imgdir / "oc.qcow") as img:
        assert int(np.count_nonzero(img.guest_map().kind == model.COMPRESSED)) > 0
        roles = img.clusters()["role"].value_counts()
        assert roles["compressed"] > 0 and roles["l2"] > 0


# ---------------------------------------------------------------- QED state, leaks and repair

def test_qed_need_check(imgdir):
    with imgscope.open(imgdir / "qd.qed") as img:
        assert img.dirty and img.h.features & QL.F_NEED_CHECK
        info = img.info_dict()
        assert info["dirty-flag"] is False and info["imgscope-need-check"] is True
        assert img.check().summary() == {"QED-HDR-001": 1}
    with imgscope.open(imgdir / "q.qed") as img:
        assert not img.dirty and img.backing() == ("base.raw", "raw")
        feats = img.features.set_index("name")["set"]
        assert feats["backing file"] and feats["backing format no probe"] and not feats["need check"]


def test_qed_leak_counting_matches_qemu_quirk(imgdir, tmp_path):
    """qemu's cluster index divides by cluster_size - 1: its extra leaks are QED-LEAK-002, the real ones -001."""
    res = _same_check(imgdir / "q4k.qed")
    assert res.summary() == {"QED-LEAK-002": 1}
    path = _copy(imgdir, "q4k.qed", tmp_path)
    with open(path, "ab") as f:
        f.write(b"\xaa" * 3 * 4096)
    res = _same_check(path)
    assert res.summary()["QED-LEAK-001"] == 3 and res.leaks == 4


def test_qed_repair_equals_qemu(imgdir, tmp_path):
    """-r leaks on a crashed image clears need-check; the file is byte-identical to qemu's repair."""
    mine = tmp_path / "mine.qed"
    theirs = tmp_path / "theirs.qed"
    shutil.copy(imgdir / "qd.qed", mine)
    shutil.copy(imgdir / "qd.qed", theirs)
    res = run_repair(str(mine), "leaks")
    rc, _, _ = qemu.check_json(theirs, "qed", repair="leaks")
    assert res.exit_code() == rc == 0
    assert mine.read_bytes() == theirs.read_bytes()
    with imgscope.open(mine) as img:
        assert not img.dirty and img.check().summary() == {}


# ---------------------------------------------------------------- damaged QED

def _qed_l1_offset(path: Path) -> tuple[int, int, int]:
    with imgscope.open(path) as img:
        return img.h.l1_table_offset, img.h.cluster_size, img.src.size


@pytest.mark.parametrize("index", [3, 0])
def test_qed_l1_entry_past_eof(imgdir, tmp_path, index):
    """L1[3] maps nothing of the 16 MiB guest; L1[0] loses the L2 table, whose clusters then leak."""
    path = _copy(imgdir, "q.qed", tmp_path)
    l1, cs, size = _qed_l1_offset(path)
    _patch(path, l1 + 8 * index, QL.TableEntry.build((size // cs + 10) * cs))
    res = _same_check(path)
    assert res.summary()["QED-L1-001"] == 1 and res.exit_code() == 2
    if index == 0:
        assert res.leaks > 0
        with imgscope.open(path) as img, pytest.raises(FormatError):
            img.map_entries()
        assert qemu.qemu_img("map", "--output=json", "-f", "qed", str(path), check=False).returncode == 1


def _l2_entries(path: Path) -> tuple[int, np.ndarray]:
    with imgscope.open(path) as img:
        t = img.tables
        i = int(np.flatnonzero(t.l1)[0])
        return int(t.l1[i]), t.store.tables[t.store.slot[i]]


def test_qed_duplicate_and_invalid_l2_entries(imgdir, tmp_path):
    path = _copy(imgdir, "q.qed", tmp_path)
    table, ent = _l2_entries(path)
    free = np.flatnonzero(ent == 0)
    data = ent[ent > 1]
    _patch(path, table + 8 * int(free[0]), QL.TableEntry.build(int(data[0])))           # duplicate reference
    _patch(path, table + 8 * int(free[1]), QL.TableEntry.build(int(data[1]) + 512))     # unaligned
    res = _same_check(path)
    assert res.summary() == {"QED-DUP-001": 1, "QED-L2-001": 1} and res.corruptions == 2


def test_qed_repair_all_drops_invalid_entries_like_qemu(imgdir, tmp_path):
    """-r all --allow-data-loss zeroes the invalid entries exactly as qemu's -r all does; without it nothing."""
    path = _copy(imgdir, "q.qed", tmp_path)
    l1, cs, size = _qed_l1_offset(path)
    table, ent = _l2_entries(path)
    _patch(path, l1 + 8 * 3, QL.TableEntry.build((size // cs + 10) * cs))
    _patch(path, table + 8 * int(np.flatnonzero(ent == 0)[0]), QL.TableEntry.build(size + 7 * cs))
    theirs = tmp_path / "theirs.qed"
    shutil.copy(path, theirs)
    before = path.read_bytes()
    res = run_repair(str(path), "all")
    assert res.exit_code() == 2 and path.read_bytes() == before
    res = run_repair(str(path), "all", allow_data_loss=True)
    rc, report, _ = qemu.check_json(theirs, "qed", repair="all")
    assert res.exit_code() == rc == 0 and res.corruptions_fixed == report["corruptions-fixed"] == 2
    assert path.read_bytes() == theirs.read_bytes()
    assert [x["guest_offset"] for x in res.plan.losses] == [int(np.flatnonzero(ent == 0)[0]) * cs]


# ---------------------------------------------------------------- damaged VDI

def _vdi_header(path: Path):
    return VL.Header.parse(path.read_bytes()[:VL.HEADER_SIZE])


def test_vdi_block_index_too_large(imgdir, tmp_path):
    path = _copy(imgdir, "v.vdi", tmp_path)
    h = _vdi_header(path)
    _patch(path, h.offset_bmap + 4 * 5, VL.BlockMapEntry.build(h.blocks_in_image + 3))
    res = _same_check(path)
    assert res.summary() == {"VDI-MAP-001": 1} and res.corruptions == 1


def test_vdi_duplicate_block(imgdir, tmp_path):
    path = _copy(imgdir, "v.vdi", tmp_path)
    h = _vdi_header(path)
    first = VL.BlockMapEntry.parse(path.read_bytes()[h.offset_bmap:h.offset_bmap + 4])
    _patch(path, h.offset_bmap + 4 * 7, VL.BlockMapEntry.build(first))
    res = _same_check(path)
    assert res.summary() == {"VDI-MAP-002": 1, "VDI-HDR-001": 1} and res.corruptions == 2


def test_vdi_allocated_count_and_unsupported_repair(imgdir, tmp_path):
    path = _copy(imgdir, "v.vdi", tmp_path)
    h = _vdi_header(path)
    h.blocks_allocated += 3
    _patch(path, 0, VL.Header.build(h))
    res = _same_check(path)
    assert res.summary() == {"VDI-HDR-001": 1} and res.exit_code() == 2
    rc, _, _ = qemu.check_json(path, "vdi", repair="all")
    assert rc == run_repair(str(path), "all").exit_code() == 63


def test_vdi_differencing_parent_by_uuid(imgdir, tmp_path):
    parent = _copy(imgdir, "v.vdi", tmp_path)
    child = tmp_path / "child.vdi"
    shutil.copy(imgdir / "vs.vdi", child)
    h = _vdi_header(child)
    h.image_type = VL.TYPE_DIFF
    h.uuid_link = _vdi_header(parent).uuid_image
    h.uuid_parent = _vdi_header(parent).uuid_last_snap
    _patch(child, 0, VL.Header.build(h))
    with imgscope.open(child) as img:
        assert img.backing() is None and img.is_diff
        assert img.parent_candidates() == [str(parent)]
        assert img.header["uuid_link"] == str(uuid.UUID(bytes_le=h.uuid_link))
        assert "VDI-HDR-002" in img.check().summary()
    assert qemu.qemu_img("info", str(child), check=False).returncode == 1


# ---------------------------------------------------------------- qcow v1 and malformed headers

def test_qcow_duplicate_cluster_is_reported(imgdir, tmp_path):
    path = _copy(imgdir, "o.qcow", tmp_path)
    with imgscope.open(path) as img:
        t = img.tables
        i = int(np.flatnonzero(t.l1)[0])
        ent = t.store.tables[t.store.slot[i]]
        j_free = int(np.flatnonzero(ent == 0)[0])
        dup = int(ent[(ent != 0) & ((ent & np.uint64(CL.OFLAG_COMPRESSED)) == 0)][0])
        table = int(t.l1[i])
    _patch(path, table + 8 * j_free, CL.TableEntry.build(dup))
    with imgscope.open(path) as img:
        res = img.check()
    assert res.exit_code() == 63 and res.summary() == {"QCOW1-DUP-001": 1}


@pytest.mark.parametrize("name, offset, data, structure", [
    ("q.qed", 4, QL.Header.subcons[1].build(3000), "qed header.cluster_size"),
    ("q.qed", 40, QL.TableEntry.build(0), "qed header.l1_table_offset"),
    ("o.qcow", 33, bytes([20]), "qcow header.l2_bits"),
    ("v.vdi", 0x178, VL.BlockMapEntry.build(1000), "vdi header.block_size"),
])
def test_malformed_header_names_structure(imgdir, tmp_path, name, offset, data, structure):
    path = _copy(imgdir, name, tmp_path)
    _patch(path, offset, data)
    with pytest.raises(FormatError) as exc:
        imgscope.open(path)
    assert exc.value.structure == structure


@pytest.mark.parametrize("name, cut", [("q.qed", 40), ("o.qcow", 40), ("o.qcow", 20), ("v.vdi", 0x100),
                                       ("v.vdi", 511)])
def test_truncated_header_opens_as_in_qemu(imgdir, tmp_path, name, cut):
    """qemu reads a header cut short with zeros past EOF: the image opens when what was lost is zero
    (a qcow cut at 40 bytes, a VDI missing its last header byte) and fails the header's checks
    otherwise.  imgscope opens exactly what qemu-img info opens, and names the structure when not."""
    fmt = {"qed": "qed", "qcow": "qcow", "vdi": "vdi"}[name.split(".")[1]]
    path = tmp_path / name
    path.write_bytes((imgdir / name).read_bytes()[:cut])
    opens = qemu.text("info", path, fmt).returncode == 0
    if opens:
        with imgscope.open(path, fmt) as img:
            assert img.info_dict()["virtual-size"] == qemu.info_json(path, fmt)["virtual-size"]
    else:
        with pytest.raises(FormatError) as exc:
            imgscope.open(path, fmt)
        assert exc.value.structure.startswith(fmt)


def test_clusters_roles(imgdir):
    with imgscope.open(imgdir / "q.qed") as img:
        df = img.clusters().set_index("host_offset")
        assert df.loc[0, "role"] == "header" and df.loc[img.h.l1_table_offset, "role"] == "l1"
        assert int((df["role"] == "data").sum()) == img.check().allocated_clusters
        assert df["refcount"].isna().all()
    with imgscope.open(imgdir / "v.vdi") as img:
        refs = img.reference_rows()
        assert int((refs.role == model.ROLE_BIT["data"]).sum()) == img.h.blocks_allocated
