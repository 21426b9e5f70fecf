"""Snapshot-tree inference on scripted histories (snapshot, revert with -a, write, snapshot again)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import imgscope
from imgscope.cli import main
from imgscope.tree import DotMissing, snapshot_tree

from .conftest import HISTORY_PARENTS, create, qimg, qio


def test_history_parents(history_image: Path, backend: str) -> None:
    tree = snapshot_tree(history_image)
    nodes = tree.nodes.set_index("node")
    got = {n: (None if str(p) == "<NA>" else p) for n, p in nodes["parent"].items()}
    assert got == HISTORY_PARENTS
    assert tree.roots() == ["snapshot:1"]
    inferred = nodes[nodes["edge"] == "inferred"]
    assert (inferred["confidence"] > 0.5).all(), inferred[["confidence", "evidence"]]
    assert nodes.at["active", "live"] and not nodes["live"].drop("active").any()
    assert nodes.at["snapshot:3", "exclusive_bytes"] == 128 * 1024   # written only before s3


def test_linear_history_without_writes_is_ambiguous(tmp_path: Path) -> None:
    """Identical snapshots carry no evidence: the edge is kept linear but its confidence says so."""
    p = create(tmp_path / "same.qcow2")
    qio(p, "write -P 1 0 64k")
    for s in ("a", "b", "c"):
        qimg("snapshot", "-c", s, p)
    nodes = snapshot_tree(p).nodes.set_index("name")
    assert nodes.at["b", "parent"] == "snapshot:1" and nodes.at["c", "parent"] == "snapshot:2"
    assert nodes.at["c", "confidence"] == 0.5          # tie between a and b
    assert "tie" in nodes.at["c", "evidence"]


def test_directory_forest(tmp_path: Path) -> None:
    """base (with snapshots) <- two overlays; one overlay has its own snapshot."""
    base = create(tmp_path / "base.qcow2")
    qio(base, "write -P 1 0 256k")
    qimg("snapshot", "-c", "b1", base)
    qio(base, "write -P 2 0 64k")
    a = create(tmp_path / "a.qcow2", backing="base.qcow2")
    b = create(tmp_path / "b.qcow2", backing="base.qcow2")
    qio(a, "write -P 3 1M 64k")
    qimg("snapshot", "-c", "a1", a)
    qio(a, "write -P 4 2M 64k")
    qio(b, "write -P 5 3M 64k")
    (tmp_path / "notes.txt").write_text("not an image\n")
    tree = snapshot_tree(tmp_path)
    nodes = tree.nodes.set_index("node")
    assert nodes.at["base.qcow2:active", "parent"] == "base.qcow2:snapshot:1"
    assert nodes.at["a.qcow2:snapshot:1", "parent"] == "base.qcow2:active"
    assert nodes.at["a.qcow2:snapshot:1", "edge"] == "backing"
    assert nodes.at["a.qcow2:active", "parent"] == "a.qcow2:snapshot:1"
    assert nodes.at["b.qcow2:active", "parent"] == "base.qcow2:active"
    assert tree.roots() == ["base.qcow2:snapshot:1"]
    assert not nodes.at["base.qcow2:active", "live"] and nodes.at["b.qcow2:active", "live"]
    assert any("notes.txt" in n for n in tree.notes)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
def test_cli_svg_and_json(history_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tree.svg"
    assert main(["tree", str(history_image), "-o", str(out)]) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "live: active" in svg and "s5 (5)" in svg
    assert "└── s5" in capsys.readouterr().out
    assert main(["tree", str(history_image), "--output", "json"]) == 0
    parents = {n["node"]: n["parent"] for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert parents == HISTORY_PARENTS


def test_missing_dot_degrades_to_text(history_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))   # no `dot` on PATH
    out = tmp_path / "tree.svg"
    assert main(["tree", str(history_image), "-o", str(out)]) == 0
    cap = capsys.readouterr()
    assert "`dot` binary is not installed" in cap.err and "text tree" in cap.err
    assert "● active [active] (live)" in cap.out and not out.exists()
    tree = snapshot_tree(history_image)
    with pytest.raises(DotMissing):
        tree.pipe("svg")
    bundle = tree._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and "showing a text tree" in bundle["text/html"]


def test_tree_of_open_image_keeps_it_open(history_image: Path) -> None:
    with imgscope.open(history_image) as img:
        tree = snapshot_tree(img)
        assert img.src.fd >= 0
        strip = tree.sharing.guest_strip("active")
    assert int((strip["file_index"] >= 0).sum()) == 16 + 4 + 1   # s2's data plus the live write
