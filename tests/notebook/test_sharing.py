"""Sharing numbers against histories whose exclusive/shared clusters are known by construction."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import imgscope
from imgscope.sharing import sharing

from .conftest import KiB, copy, create, qcheck, qimg, qio

CS = 64 * KiB


@pytest.fixture(scope="module")
def two_snapshots(nbdir: Path) -> Path:
    """s1: A0..A7; then A0,A1 overwritten + B0..B2 new -> s2; then C0 new (live)."""
    p = create(nbdir / "two.qcow2")
    qio(p, "write -P 1 0 512k")
    qimg("snapshot", "-c", "s1", p)
    qio(p, "write -P 2 0 128k", "write -P 3 1M 192k")
    qimg("snapshot", "-c", "s2", p)
    qio(p, "write -P 4 2M 64k")
    return p


def test_exact_counts(two_snapshots: Path, backend: str) -> None:
    with imgscope.open(two_snapshots) as img:
        sh = sharing(img)
    lay = sh.layers.set_index("layer")
    assert sh.unit == CS
    assert lay.loc[["snapshot:1", "snapshot:2", "active"], "clusters"].tolist() == [8, 11, 12]
    assert lay.loc[["snapshot:1", "snapshot:2", "active"], "exclusive_clusters"].tolist() == [2, 0, 1]
    assert lay.at["snapshot:1", "exclusive_bytes"] == 2 * CS
    assert lay.at["snapshot:1", "shared_with"] == "active, snapshot:2"
    m = sh.matrix
    assert (m.at["snapshot:1", "snapshot:2"], m.at["snapshot:1", "active"], m.at["snapshot:2", "active"]) == (6, 6, 11)
    assert (sh.matrix.to_numpy() == sh.matrix.to_numpy().T).all()
    # every used host unit appears once; per-unit layer counts add up to the diagonal
    assert sh.hosts["host_offset"].is_unique
    assert int(sh.hosts["n_layers"].sum()) == int(np.trace(sh.matrix.to_numpy()))
    excl = sh.hosts[sh.hosts["n_layers"] == 1]
    assert sorted(excl["layers"].astype(str).value_counts().items()) == [("active", 1), ("snapshot:1", 2)]


@pytest.mark.parametrize("snap", ["s1", "s2"])
def test_freed_matches_qemu_delete(two_snapshots: Path, tmp_path: Path, snap: str) -> None:
    """freed_bytes == clusters whose refcount qemu drops to 0 when it deletes the snapshot."""
    p = copy(two_snapshots, tmp_path)
    with imgscope.open(p) as img:
        lay = sharing(img).layers.set_index("name")
        before = int((img.clusters()["refcount"].fillna(0) > 0).sum())
    qimg("snapshot", "-d", snap, p)
    assert qcheck(p).get("leaks", 0) == 0 and qcheck(p).get("corruptions", 0) == 0
    with imgscope.open(p) as img:
        after = int((img.clusters()["refcount"].fillna(0) > 0).sum())
    assert lay.at[snap, "freed_bytes"] == (before - after) * CS
    assert lay.at[snap, "freed_bytes"] > lay.at[snap, "exclusive_bytes"]  # its L1 (and L2) tables go too


def test_backing_chain_layers(tmp_path: Path, backend: str) -> None:
    """base: 8 clusters; overlay rewrites 2 of them: base keeps 2 exclusive (shadowed) clusters."""
    d = tmp_path
    base = create(d / "base.qcow2")
    qio(base, "write -P 1 0 512k")
    top = create(d / "top.qcow2", backing="base.qcow2")
    qio(top, "write -P 2 0 128k")
    with imgscope.open(top) as img:
        sh = sharing(img)
    lay = sh.layers.set_index("layer")
    assert list(lay.index) == ["top.qcow2:active", "base.qcow2:active"]
    assert lay.at["base.qcow2:active", "kind"] == "backing"
    assert lay.loc[:, "clusters"].tolist() == [8, 8]
    assert lay.loc[:, "exclusive_clusters"].tolist() == [2, 2]
    assert sh.matrix.at["top.qcow2:active", "base.qcow2:active"] == 6
    assert lay.at["base.qcow2:active", "freed_bytes"] == 2 * CS
    assert set(sh.hosts["file"].astype(str)) == {str(top), str(base)}


def test_forest_shares_the_base(tmp_path: Path) -> None:
    """Two overlays of one base: the base is counted once and shared by both views."""
    d = tmp_path
    base = create(d / "base.qcow2")
    qio(base, "write -P 1 0 256k")
    a, b = create(d / "a.qcow2", backing="base.qcow2"), create(d / "b.qcow2", backing="base.qcow2")
    qio(a, "write -P 2 0 64k")
    qio(b, "write -P 3 64k 64k")
    with imgscope.open(a) as ia, imgscope.open(b) as ib:
        sh = sharing([ia, ib])
    assert len(sh.files) == 3
    m = sh.matrix
    assert m.at["a.qcow2:active", "b.qcow2:active"] == 2   # base clusters 2 and 3
    assert m.at["base.qcow2:active", "base.qcow2:active"] == 4
    assert sh.layers.set_index("layer").at["base.qcow2:active", "exclusive_clusters"] == 0


def test_raw_backing_uses_extents(tmp_path: Path) -> None:
    d = tmp_path
    qimg("create", "-q", "-f", "raw", d / "base.raw", 64 << 20)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 0 256k", str(d / "base.raw")], check=True,
                   capture_output=True)
    qimg("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "top.qcow2", 64 << 20, cwd=d)
    qio(d / "top.qcow2", "write -P 8 0 64k")
    with imgscope.open(d / "top.qcow2") as img:
        lay = sharing(img).layers.set_index("layer")
    assert lay.at["base.raw:active", "clusters"] == 4
    assert lay.at["base.raw:active", "exclusive_clusters"] == 1
    assert lay.at["top.qcow2:active", "clusters"] == 4


def test_guest_strip_and_repr(two_snapshots: Path) -> None:
    with imgscope.open(two_snapshots) as img:
        sh = sharing(img)
        strip = sh.guest_strip("snapshot:1")
        html = img._repr_html_()
    assert strip["exclusive"].sum() == 2 and (strip["file_index"] >= 0).sum() == 8
    assert "s2" in html and "qcow2" in html
    assert "exclusive_bytes" in sh._repr_html_()
