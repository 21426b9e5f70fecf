"""imgscope's info / map / snapshots / check agree with qemu-img on every oracle image.

Every key qemu-img prints must have the same value in imgscope's output (actual-size
excepted); map extents and check counters/exit codes must be identical.  The qcow2
comparisons run on both decoder backends (C and numpy).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import imgscope

from oracle import images, qemu

ALL = sorted(images.KINDS)
NO_INFO_KEYS = {"actual-size"}


def _qemu_args(kind: str) -> dict:
    return {"fmt": images.FORMATS[kind], "secret": images.SECRETS.get(kind)}


def _with_secret_filename(report, path, kind):
    """With a LUKS secret qemu names the image by a json: pseudo-filename; compare with the path."""
    if isinstance(report, dict) and kind in images.SECRETS and "filename" in report:
        report = {**report, "filename": str(path)}
    return report


def _open(path, kind):
    return imgscope.open(path.absolute(), images.FORMATS[kind])


def _same_keys(theirs, ours, where=""):
    """Every key qemu prints has the same value in ours (recursively; lists element-wise)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        for k, v in theirs.items():
            if k in NO_INFO_KEYS:
                continue
            assert k in ours, f"{where}/{k} missing (qemu: {v!r})"
            _same_keys(v, ours[k], f"{where}/{k}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(theirs, ours)):
            _same_keys(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: imgscope {ours!r} != qemu {theirs!r}"


@pytest.mark.parametrize("kind", ALL)
def test_info(make_image, kind):
    path = make_image(kind).absolute()
    theirs = qemu.info_json(path, images.FORMATS[kind])  # info needs no LUKS secret
    with _open(path, kind) as img:
        _same_keys(theirs, img.info_dict())


@pytest.mark.parametrize("kind", ALL)
def test_info_backing_chain(make_image, kind):
    path = make_image(kind).absolute()
    theirs = qemu.info_json(path, images.FORMATS[kind], backing_chain=True)
    with _open(path, kind) as img:
        ours = [i.info_dict() for i in img.chain()]
    _same_keys(theirs, ours)


@pytest.mark.parametrize("kind", ALL)
def test_map(make_image, kind):
    path = make_image(kind).absolute()
    theirs = qemu.map_json(path, **_qemu_args(kind))
    with _open(path, kind) as img:
        assert img.map_entries() == theirs


@pytest.mark.parametrize("kind", ALL)
def test_check(make_image, kind):
    path = make_image(kind).absolute()
    rc, theirs, _ = qemu.check_json(path, **_qemu_args(kind))
    assert rc == images.EXPECTED_CHECK_RC[kind]
    with _open(path, kind) as img:
        res = img.check()
    assert res.exit_code() == rc
    if theirs is not None:
        assert res.qemu_json() == _with_secret_filename(theirs, path, kind)


@pytest.mark.parametrize("kind", [k for k in images.QCOW2_KINDS if k not in images.SECRETS])
def test_qcow2_both_backends(make_image, kind, backend):
    path = make_image(kind).absolute()
    rc, theirs, _ = qemu.check_json(path, "qcow2")
    with imgscope.open(path) as img:
        assert img.map_entries() == qemu.map_json(path, "qcow2")
        res = img.check()
        assert (res.exit_code(), res.qemu_json()) == (rc, theirs)
        clusters = img.clusters()
        assert len(clusters) >= res.image_end_offset // img.cluster_size


@pytest.mark.parametrize("kind", ["snapshots_1", "snapshots_50", "reference"])
def test_snapshots_cli_matches_qemu(make_image, kind):
    path = make_image(kind).absolute()
    theirs = qemu.info_json(path, "qcow2")["snapshots"]
    out = subprocess.run([sys.executable, "-m", "imgscope.cli", "snapshots", str(path), "--output", "json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == theirs
    rows = qemu.snapshot_list(path)  # qemu-img snapshot takes no -f
    with imgscope.open(path) as img:
        snaps = img.snapshots
    assert snaps["id"].tolist() == [r["id"] for r in rows]
    assert snaps["name"].tolist() == [r["tag"] for r in rows]


@pytest.mark.parametrize("command", ["info", "map", "check"])
def test_cli_json_equals_qemu(make_image, command):
    path = make_image("backing_chain").absolute()
    proc = subprocess.run([sys.executable, "-m", "imgscope.cli", command, str(path), "--output", "json"],
                          capture_output=True, text=True)
    ours = json.loads(proc.stdout)
    if command == "info":
        _same_keys(qemu.info_json(path, "qcow2"), ours)
    elif command == "map":
        assert ours == qemu.map_json(path, "qcow2")
    else:
        rc, theirs, _ = qemu.check_json(path, "qcow2")
        assert (proc.returncode, ours) == (rc, theirs)


@pytest.mark.parametrize("kind", ["reference", "compressed_zlib", "cluster_4k", "snapshots_50", "backing_chain"])
def test_guest_content_through_mapping(make_image, kind, tmp_path):
    """Reading each data cluster at the host offset imgscope maps it to gives qemu's guest bytes."""
    path = make_image(kind).absolute()
    raw = qemu.convert_raw(path, tmp_path / "guest.raw", "qcow2")
    with imgscope.open(path) as img, open(path, "rb") as f, open(raw, "rb") as g:
        cs = img.cluster_size
        m = img.mapping()
        data = m[(m["kind"] == "data")]
        assert len(data) > 0
        for row in data.itertuples(index=False):
            f.seek(int(row.host_offset))
            g.seek(int(row.guest_offset))
            n = min(cs, img.virtual_size - int(row.guest_offset))
            assert f.read(n) == g.read(n), hex(row.guest_offset)
