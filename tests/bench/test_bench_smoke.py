"""Keep benchmarks/run.py from rotting: run it on tiny images (seconds, not minutes)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_qemu

ROOT = Path(__file__).resolve().parents[2]


def test_bench_harness_small(tmp_path: Path) -> None:
    require_qemu()
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--small", "--runs", "1",
                           "--warmup", "0", "--only", "snap1000,dirty", "--work", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    by = {(r["image"], r["what"]): r for r in rows}
    # both tools ran and were timed, and imgscope agreed with qemu-img on the exit code
    for what in ("map --output json", "info --output json", "check --output json"):
        r = by[("snap1000", what)]
        assert r["imgscope"] > 0 and r["qemu"] > 0 and r["ratio"] > 0
        assert r["note"].endswith("rc 0/0"), r["note"]
    assert by[("dirty", "check --output json")]["note"].endswith("rc 2/2")
    snap = by[("snap1000", "open + .snapshots (in-process)")]
    assert 0 < snap["imgscope"] < 5 and snap["target"] == "<= 40 ms"
    assert "image" in proc.stdout and "ratio" in proc.stdout
