"""The widgets live in a real page: a notebook served by Voilà on loopback, rendered by headless Chromium.

Voilà serves its widget manager from its own package (no CDN), runs the notebook in a kernel and keeps
the kernel connected, so the test also changes a control in the page and sees the kernel's answer.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .browser import DevTools, colours, has_colour, ink_rows

CELL = """\
import imgscope
from IPython.display import display
from imgscope.tree import snapshot_tree
from imgscope.widgets import Report, SharingMap, SnapshotTree
path = {path!r}
img = imgscope.open(path)
display(SnapshotTree(snapshot_tree(path)))
display(SharingMap(img, progress=False))
display(Report(img, progress=False))
"""

#: the page is ready when every widget view is built and the images arrived
READY = """(() => {
  const t = document.body ? document.body.innerText : '';
  const imgs = document.querySelectorAll('img.widget-image').length;
  return !t.includes('Loading widget') && imgs >= 3 && t.includes('Fragmentation') ? imgs : 0;
})()"""

STATE = """JSON.stringify({
  text: document.body.innerText,
  images: document.querySelectorAll('img.widget-image').length,
  selects: [...document.querySelectorAll('select')].map(s => [...s.options].map(o => o.value)),
  tabs: [...document.querySelectorAll('.lm-TabBar-tabLabel, .p-TabBar-tabLabel')].map(e => e.innerText),
  svg: document.querySelectorAll('.widget-html svg').length,
  scripts: performance.getEntriesByType('resource').filter(r => r.initiatorType === 'script').map(r => r.name),
})"""

#: choose s1 in the SnapshotTree's node picker, as a person would
PICK_S1 = """(() => {
  const v = 's1 [snapshot:1]';
  const sel = [...document.querySelectorAll('select')].find(s => [...s.options].some(o => o.value === v));
  sel.value = v;
  sel.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"voila did not listen within {timeout} s:\n{log.read_text()[-3000:]}")


def _notebook(workdir: Path, image: Path) -> Path:
    """The notebook, and a kernel spec for this very interpreter (a system-wide python3 cannot be picked)."""
    nbformat = pytest.importorskip("nbformat")
    spec = workdir / "jupyter" / "kernels" / "imgscope-visual"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "imgscope",
                                                  "language": "python"}))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL.format(path=str(image)))])
    nb.metadata["kernelspec"] = {"name": "imgscope-visual", "display_name": "imgscope", "language": "python"}
    path = workdir / "widgets.ipynb"
    nbformat.write(nb, path)
    return path


def _capture(nb: Path, workdir: Path, shots: Path) -> tuple[dict, object, int]:
    """Serve the notebook with Voila on loopback, render it in Chromium; (page state, screenshot, port)."""
    workdir.mkdir()
    port, log = _free_port(), workdir / "voila.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "voila", "--no-browser", f"--port={port}",
                                 "--Voila.ip=127.0.0.1", "--show_tracebacks=True", str(nb)], cwd=nb.parent,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, log)
        with DevTools(1280, 1200) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for(READY, timeout=150)
            state = json.loads(page.evaluate(STATE))
            px = page.screenshot(shots / "widgets-voila.png")
            page.evaluate(PICK_S1)
            page.wait_for("document.body.innerText.includes('node snapshot:1')", timeout=60)
    finally:
        proc.terminate()   # voila shuts its kernels down on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return state, px, port


def test_widgets_in_voila(visual_image: Path, tmp_path: Path, shots: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("voila")
    pytest.importorskip("ipykernel")
    nb = _notebook(tmp_path, visual_image)
    for var, sub in (("JUPYTER_PATH", "jupyter"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # a browser or server hiccup (an OSError from the devtools socket or the profile dir) is retried
    # once; assertion failures about what the page shows are never retried
    try:
        state, px, port = _capture(nb, tmp_path / "try1", shots)
    except OSError:
        state, px, port = _capture(nb, tmp_path / "try2", shots)

    text = state["text"]
    assert "Error displaying widget" not in text and "Traceback" not in text, text[:2000]
    assert all(s.startswith(f"http://127.0.0.1:{port}/") for s in state["scripts"]), state["scripts"]
    # SnapshotTree: the graphviz drawing (or the text tree) and the node picker with its details
    assert "live: active" in text or "● active" in text
    assert ["active [active]", "s1 [snapshot:1]", "s2 [snapshot:2]"] in state["selects"]
    assert "node active" in text and "evidence" in text
    # SharingMap: layer list, colour-by control, heat map, host strip and guest strip images
    assert ["role", "refcount", "owner"] in state["selects"] and state["images"] >= 3
    # Report: one tab per section
    assert [t for t in state["tabs"] if t] == ["Summary", "Findings", "Leaks", "Fragmentation", "Sharing"]
    assert "leaks only" in text
    assert px.shape[1] == 1280 and px.shape[0] > 1500
    assert ink_rows(px) > 0.3 and colours(px) >= 10
    for c in ("#2ca02c", "#d62728", "#6baed6"):      # data and leaked clusters in the host strip, L2 tables
        assert has_colour(px, c), c
