"""The single-image HTML report in headless Chromium: a screenshot with the report's colours, and the DOM
holding qemu-img check's numbers."""
from __future__ import annotations

from pathlib import Path

from imgscope.cli import main
from imgscope.report.plots import ROLE_COLORS
from oracle.qemu import check_json

from .browser import colours, dump_dom, has_colour, ink_rows, screenshot


def test_report_screenshot_and_dom(visual_image: Path, tmp_path: Path, shots: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(visual_image), "-o", str(page)]) == 0
    px = screenshot(page.as_uri(), shots / "report.png", 1280, 2000)
    assert px.shape == (2000, 1280, 3)
    assert ink_rows(px) > 0.3, "page is (nearly) blank"
    assert colours(px) >= 10
    assert (px == 255).all(axis=2).mean() > 0.5      # white page, not a dark error screen
    # the host-file strip: every role this image has, in its legend colour
    for role in ("header", "l1", "l2", "refcount_block", "snapshot_table", "data", "compressed", "leaked"):
        assert has_colour(px, ROLE_COLORS[role]), role
    assert has_colour(px[1200:], "#2ca02c")           # the order scatter's data points, further down

    rc, q, _ = check_json(visual_image, "qcow2")
    assert rc == 3 and q["leaks"] == 1                # the oracle agrees: one leaked cluster
    dom = dump_dom(page.as_uri())
    for key in ("allocated-clusters", "fragmented-clusters", "compressed-clusters", "leaks", "image-end-offset"):
        assert f"<th>{key.replace('-', ' ')}</th><td>{q[key]}</td>" in dom, key
    pct = 100 * q["fragmented-clusters"] / q["allocated-clusters"]
    assert f"<b>{pct:.2f}%</b> fragmented" in dom
    assert "<span class=\"warn\">leaks only</span> (exit code 3)" in dom
    for h in ("Summary", "Findings", "Leaks", "Fragmentation", "Snapshots and sharing"):
        assert f"<h2>{h}</h2>" in dom
    assert "s2 [snapshot:2]" in dom and "● active [active] (live)" in dom
    assert dom.count("<img ") == 4 and "data:image/png;base64," in dom
