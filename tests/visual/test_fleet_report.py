"""The fleet report (``imgscope scan --report``) on a generated fleet: numbers against the scan frame,
the page in headless Chromium."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import require_qemu
from imgscope.cli import main
from imgscope.report.fleet import STATUSES, fleet_report, render_fleet_html
from imgscope.report.summary import human_size
from imgscope.scan import scan
from oracle.qemu import qemu_img, qemu_io
from scan.fleet import build

from .browser import colours, dump_dom, has_colour, ink_rows, screenshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOP = 5


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/scan/fleet.py's 60 images, plus three overlays sharing one backing file."""
    require_qemu()
    work = tmp_path_factory.mktemp("fleet-report")
    build(work, size=60)
    shared = work / "fleet" / "shared"
    shared.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", shared / "base.qcow2", "64M")
    qemu_io("qcow2", shared / "base.qcow2", "write -P 1 0 1M")
    for i in range(3):
        qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", f"ov{i}.qcow2", "64M",
                 cwd=shared)
    return work / "fleet"


@pytest.fixture(scope="module")
def frame(fleet: Path) -> pd.DataFrame:
    return scan([str(fleet)], jobs=2)


def _rows(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if v is pd.NA or v is None else v) for k, v in r.items()}
            for r in df.astype(object).to_dict(orient="records")]


def test_numbers_match_the_scan_frame(frame: pd.DataFrame) -> None:
    rows = _rows(frame)
    rep = fleet_report(frame, top=TOP)
    t = rep.totals
    assert t["images"] == len(rows) > 60
    assert t["unreadable"] == sum(r["error"] is not None for r in rows) >= 1
    assert t["readable"] + t["unreadable"] == t["images"]
    for key, col in (("virtual_bytes", "virtual_size"), ("file_bytes", "file_size"),
                     ("allocated_bytes", "allocated_bytes"), ("leaked_bytes", "leaked_bytes"),
                     ("leaked_clusters", "leaks")):
        assert t[key] == sum(r[col] or 0 for r in rows), key
    assert t["dirty"] == sum(r["dirty"] is True for r in rows) >= 5
    assert t["with_leaks"] == sum((r["leaks"] or 0) > 0 for r in rows) >= 3
    assert t["with_corruptions"] == sum((r["corruptions"] or 0) > 0 for r in rows) >= 3
    assert t["leaked_bytes"] > 0 and rep.status.sum() == t["images"]
    assert list(rep.status.index) == list(STATUSES) and rep.status["unreadable"] == t["unreadable"]
    assert int(rep.by_format.to_numpy().sum()) == t["images"]

    def worst(col: str) -> list[str]:
        hit = [r for r in rows if (r[col] or 0) > 0]
        return [r["path"] for r in sorted(hit, key=lambda r: (-r[col], r["path"]))][:TOP]
    assert rep.leaked["path"].tolist() == worst("leaked_bytes")
    assert rep.fragmented["path"].tolist() == worst("fragmented_pct")
    assert rep.corrupt["path"].tolist() == worst("corruptions")
    assert rep.unreadable["path"].tolist() == sorted(r["path"] for r in rows if r["error"] is not None)[:TOP]

    backing = rep.backing.set_index("backing_file")
    shared = [f for f in backing.index if f.endswith("/shared/base.qcow2")]
    assert len(shared) == 1 and backing.at[shared[0], "overlays"] == 3 and backing.at[shared[0], "exists"]
    assert rep.backing["overlays"].iloc[0] == 3                   # most shared first
    assert int(rep.backing["overlays"].sum()) == sum(bool(r["backing_file"]) for r in rows)

    feats = dict(zip(rep.features["feature"], rep.features["images"]))
    for name in ("dirty bit", "need check"):
        assert feats[name] == sum(name in (r["incompatible_features"] or "").split(",") for r in rows) > 0
    numbers = rep.numbers
    assert numbers["totals"] == t and numbers["worst"]["leaked"][0]["path"] == rep.leaked["path"].iloc[0]


def test_fleet_page_in_chromium(frame: pd.DataFrame, tmp_path: Path, shots: Path) -> None:
    rep = fleet_report(frame, top=TOP)
    page = tmp_path / "fleet.html"
    page.write_text(render_fleet_html(rep), encoding="utf-8")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    dom = dump_dom(page.as_uri())
    t = rep.totals
    assert f"<th>images</th><td>{t['images']}</td>" in dom
    assert f"<td>{human_size(t['leaked_bytes'])} ({t['leaked_clusters']} clusters)</td>" in dom
    assert f"<th>dirty</th><td>{t['dirty']}</td>" in dom
    for h in ("Totals", "Worst offenders", "Backing files", "Incompatible features"):
        assert f"<h2>{h}</h2>" in dom
    assert "<td>shared/base.qcow2</td>" in dom                  # paths shown relative to the fleet
    assert html.escape(rep.unreadable["error"].iloc[0], quote=False) in dom
    px = screenshot(page.as_uri(), shots / "fleet.png", 1280, 2000)
    assert ink_rows(px) > 0.3 and colours(px) >= 8
    for c in ("#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f"):     # clean, corruptions, leaks, unreadable bars
        assert has_colour(px, c), c


def test_cli_scan_report(fleet: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared.html"
    assert main(["scan", str(fleet / "shared"), "-j", "1", "--report", str(out), "--output", "csv"]) == 0
    page = out.read_text()
    assert "<th>images</th><td>4</td>" in page
    assert re.search(r"<td>base\.qcow2</td>\s*<td>qcow2</td>\s*<td>3</td>", page)   # 3 overlays, one base
