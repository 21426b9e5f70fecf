"""Leak, fragmentation and HTML-report numbers against qemu-img check and known layouts."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import imgscope
from imgscope.cli import main
from imgscope.report.fragmentation import frag_report
from imgscope.report.leaks import leak_report
from imgscope.sharing import sharing

from .conftest import KiB, copy, create, qcheck, qimg, qio

CS = 64 * KiB


def _fragmented(d: Path) -> Path:
    p = create(d / "frag.qcow2")
    qio(p, "write -P 1 1M 64k", "write -P 2 0 128k", "write -P 3 5M 64k", "write -P 4 128k 64k",
        "write -c -P 5 8M 64k", "write -z 9M 64k", "write -P 6 60M 64k")
    qimg("snapshot", "-c", "s", p)
    qio(p, "write -P 7 1M 64k", "write -P 8 2M 256k")
    return p


def test_fragmentation_matches_qemu(tmp_path: Path, backend: str) -> None:
    p = _fragmented(tmp_path)
    q = qcheck(p)
    with imgscope.open(p) as img:
        fr = frag_report(img)
    act = fr.layers.set_index("layer").loc["active"]
    assert act["allocated_clusters"] == q["allocated-clusters"]
    assert act["fragmented_clusters"] == q.get("fragmented-clusters", 0)
    assert act["compressed_clusters"] == q.get("compressed-clusters", 0)
    assert fr.qemu_fragmented_pct == round(100 * q.get("fragmented-clusters", 0) / q["allocated-clusters"], 2)
    assert len(fr.layers) == 2


def test_runs_and_seeks_known_layout(tmp_path: Path) -> None:
    p = create(tmp_path / "seq.qcow2")
    qio(p, "write -P 1 0 256k")                       # 4 clusters, host-contiguous
    qio(p, "write -P 2 2M 64k", "write -P 3 1M 64k")  # host order 2M then 1M: guest order jumps back
    with imgscope.open(p) as img:
        fr = frag_report(img)
    act = fr.layers.set_index("layer").loc["active"]
    assert dict(zip(fr.runs["run_length"], fr.runs["runs"])) == {1: 2, 4: 1}
    assert (act["runs"], act["longest_run_clusters"], act["seeks"]) == (3, 4, 3)
    assert act["fragmented_clusters"] == qcheck(p).get("fragmented-clusters", 0)
    order = fr.order
    assert list(order["guest_offset"] // CS) == [0, 1, 2, 3, 16, 32]


def test_free_holes_after_snapshot_delete(tmp_path: Path) -> None:
    p = create(tmp_path / "holes.qcow2")
    qio(p, "write -P 1 0 512k")
    qimg("snapshot", "-c", "s1", p)
    qio(p, "write -P 2 0 256k", "write -P 3 4M 64k")
    with imgscope.open(p) as img:
        freed = int(sharing(img).layers.set_index("name").at["s1", "freed_bytes"])
        assert len(frag_report(img).holes) == 0
    qimg("snapshot", "-d", "s1", p)
    end = qcheck(p)["image-end-offset"]
    with imgscope.open(p) as img:
        holes = frag_report(img).holes
    assert holes["bytes"].sum() >= freed > 0
    assert int(holes["end"].max()) <= end


def test_leaks_of_a_dropped_snapshot(leaky_image: Path, tmp_path: Path) -> None:
    q = qcheck(leaky_image)
    with imgscope.open(leaky_image) as img:
        rep = leak_report(img)
    assert rep.leaked_clusters == q["leaks"] == 11
    assert (rep.unreferenced_clusters, rep.overcounted_clusters) == (7, 4)
    by = rep.ranges.groupby("likely", observed=True)["clusters"].sum().to_dict()
    assert by == {"former L1 table": 1, "former L2 table": 1, "data of a deleted snapshot": 4, "orphaned data": 1}
    assert set(rep.ranges["location"]) == {"inside"} and rep.tail_bytes == 0
    assert rep.reclaim_bytes == 7 * CS
    # what qemu's -r leaks really does: frees exactly the unreferenced clusters, does not shrink the file
    p = copy(leaky_image, tmp_path)
    with imgscope.open(p) as img:
        before = int((img.clusters()["refcount"] > 0).sum())
    size = p.stat().st_size
    assert qimg("check", "-r", "leaks", p, check=False).returncode == 0
    with imgscope.open(p) as img:
        after = int((img.clusters()["refcount"] > 0).sum())
    assert (before - after) * CS == rep.reclaim_bytes and p.stat().st_size == size


def test_tail_leak_of_a_failed_snapshot(tmp_path: Path) -> None:
    """refcount_bits=1 cannot count a snapshot: qemu leaks the L1 copy it allocated at the end."""
    p = create(tmp_path / "r1.qcow2", 16 << 20, "refcount_bits=1")
    qio(p, "write -P 1 0 192k")
    assert qimg("snapshot", "-c", "s", p, check=False).returncode != 0
    assert qcheck(p)["leaks"] == 1
    with imgscope.open(p) as img:
        rep = leak_report(img)
    r = rep.ranges.iloc[0]
    assert (r["location"], r["likely"], rep.tail_bytes) == ("tail", "former L1 table", CS)


def test_dirty_image_report(tmp_path: Path) -> None:
    p = create(tmp_path / "dirty.qcow2", 16 << 20, "lazy_refcounts=on")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 128k", "-c", "abort", str(p)], capture_output=True)
    with imgscope.open(p) as img:
        rep = leak_report(img)
    assert not rep.repairable and any("-r all" in n for n in rep.notes)


def test_html_report_is_standalone(history_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(history_image), "-o", str(out), "--output", "json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    page = out.read_text()
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|iframe)\b", page)
    srcs = re.findall(r"src=['\"]([^'\"]*)", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for section in ("Summary", "Findings", "Leaks", "Fragmentation", "Snapshots and sharing"):
        assert f"<h2>{section}</h2>" in page
    q = qcheck(history_image)
    assert numbers["check"]["allocated-clusters"] == q["allocated-clusters"]
    assert numbers["fragmentation"]["layers"][0]["fragmented_clusters"] == q.get("fragmented-clusters", 0)
    assert {r["layer"] for r in numbers["sharing"]} == {"active"} | {f"snapshot:{i}" for i in range(1, 6)}
    assert "s4 [snapshot:4]" in page      # the inferred tree, as text


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium not installed")
def test_html_report_renders_in_chromium(leaky_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(leaky_image), "-o", str(out)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", out.as_uri()], capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000


def test_widgets(history_image: Path) -> None:
    pytest.importorskip("ipywidgets")
    from imgscope.tree import snapshot_tree
    from imgscope.widgets import Report, SharingMap, SnapshotTree
    w = SnapshotTree(snapshot_tree(history_image))
    w.select("snapshot:4")
    assert "snapshot:1" in w.details.value and "clusters in common" in w.details.value
    with imgscope.open(history_image) as img:
        m = SharingMap(img, progress=False)
        m.guest.value = "snapshot:3"
        m.color.value = "refcount"
        m.zoom.value = (0, 8)
        m.layers.value = ("active", "snapshot:2")
        for box in (m.matrix_out, m.host_out, m.guest_out):
            assert bytes(box.children[0].value).startswith(b"\x89PNG")
        r = Report(img)
    assert r.titles == ("Summary", "Findings", "Leaks", "Fragmentation", "Sharing")


def test_report_for_image_without_snapshots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = create(tmp_path / "plain.qcow2")
    qio(p, "write -P 1 0 64k")
    assert main(["report", str(p)]) == 0
    assert "0 leaks" in capsys.readouterr().out
    assert shutil.which("qemu-img")
