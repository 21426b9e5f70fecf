"""Execute the notebooks in notebooks/ (jupytext Markdown) against images made during the run."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import HISTORY_PARENTS, qcheck

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, workdir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Execute ``name`` and return every text, stream and HTML output joined (errors fail the test)."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # a kernel spec for this very interpreter, so a system-wide "python3" kernel cannot be picked instead
    spec = workdir / "jupyter" / "kernels" / "imgscope-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "imgscope test",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(workdir / "jupyter"))
    nb = jupytext.read(NOTEBOOKS / name)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="imgscope-test",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            for mime in ("text/plain", "text/html", "image/svg+xml"):
                out.append(o.get("data", {}).get(mime, ""))
    return "\n".join(out)


def _line(text: str, prefix: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):].strip()


def test_tour(history_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_notebook("tour.md", tmp_path, {"IMGSCOPE_NB_IMAGE": str(history_image)}, monkeypatch)
    assert "imgscope qcow2 image" in text and "active + 5 snapshot(s)" in text
    shown = json.loads(_line(text, "qemu-json:"))
    q = qcheck(history_image)
    assert shown["allocated-clusters"] == q["allocated-clusters"]
    assert shown.get("fragmented-clusters", 0) == q.get("fragmented-clusters", 0)


def test_snapshot_forensics(nbdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_notebook("snapshot_forensics.md", tmp_path, {"IMGSCOPE_NB_DIR": str(tmp_path)}, monkeypatch)
    assert eval(_line(text, "parents:")) == HISTORY_PARENTS   # noqa: S307 - our own notebook's dict
    assert _line(text, "best candidate:") == "s3 262144"      # 2 data clusters, its own L2 table and its L1
    assert ("<svg" in text) or ("showing a text tree" in text)
    assert (tmp_path / "forensics.qcow2").exists()


def test_dirty_shutdown(tmp_path: Path, nbdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_notebook("dirty_shutdown.md", tmp_path, {"IMGSCOPE_NB_DIR": str(tmp_path)}, monkeypatch)
    assert _line(text, "dirty:") == "True"
    assert _line(text, "exit code:") == "2"
    assert "Q2-RC-003" in _line(text, "problems:") and "Q2-HDR-001" in _line(text, "problems:")
    assert _line(text, "repairable by -r leaks:") == "False"
    assert qcheck(tmp_path / "dirty.qcow2").get("corruptions", 0) > 0
    if "repaired:" in text:
        assert _line(text, "after repair exit code:") == "0"
        fixed = qcheck(tmp_path / "dirty-fixed.qcow2")
        assert fixed.get("corruptions", 0) == 0 and fixed.get("leaks", 0) == 0
    assert os.path.exists(tmp_path / "dirty.qcow2")
