"""Sanity checks of the oracle image factory and of the qemu helpers, against qemu-img itself."""

import shutil

import pytest

from oracle import images, qemu

MiB = 1 << 20


@pytest.mark.parametrize("kind", list(images.KINDS))
def test_kind_builds_and_checks_as_expected(make_image, kind):
    path = make_image(kind)
    fmt, secret = images.FORMATS[kind], images.SECRETS.get(kind)
    rc, report, stderr = qemu.check_json(path, fmt, secret=secret)
    assert rc == images.EXPECTED_CHECK_RC[kind], stderr
    assert (report is None) == (rc == 63), stderr
    info = qemu.info_json(path, fmt, secret=secret)
    assert info["format"] == fmt
    assert info["virtual-size"] <= 256 * MiB
    assert sum(f.stat().st_blocks * 512 for f in path.parent.iterdir()) <= 20 * MiB


def test_make_reuses_a_built_image(make_image):
    first = make_image("v3")
    mtime = first.stat().st_mtime_ns
    assert make_image("v3") == first
    assert first.stat().st_mtime_ns == mtime


def test_snapshot_list_matches_info(make_image):
    path = make_image("snapshots_50")
    rows = qemu.snapshot_list(path)
    assert [(r["id"], r["tag"]) for r in rows] == [(s["id"], s["name"]) for s in qemu.info_json(path)["snapshots"]]
    assert len(rows) == 50


def test_snapshot_content_differs_where_rewritten(make_image, tmp_path):
    path = make_image("snapshots_1")
    cs = qemu.info_json(path)["cluster-size"]
    now = qemu.cluster_hashes(qemu.convert_raw(path, tmp_path / "now.raw"), cs)
    then = qemu.cluster_hashes(qemu.convert_raw(path, tmp_path / "then.raw", snapshot=1), cs)
    assert len(now) == len(then) == images.SIZE // cs
    assert [i for i, (a, b) in enumerate(zip(now, then)) if a != b] == [0, 1]


def test_backing_chain_has_three_layers(make_image):
    path = make_image("backing_chain")
    assert [i["format"] for i in qemu.info_json(path, backing_chain=True)] == ["qcow2", "qcow2", "raw"]
    assert {e["depth"] for e in qemu.map_json(path)} == {0, 1, 2}


def test_repair_fixes_the_lazy_refcounts_crash(make_image, tmp_path):
    path = shutil.copy(make_image("lazy_crash"), tmp_path / "crash.qcow2")
    assert qemu.check_json(path, repair="all")[0] == 0
    assert qemu.check_json(path)[0] == 0
    assert not qemu.info_json(path)["dirty-flag"]
