"""A short run (about a minute) of every fuzz harness — only where the fuzz tooling is installed.

Where clang/libFuzzer/atheris are missing this module is skipped with the reason
(``make test`` and ``make fuzz`` install them; ``make fuzz`` runs each harness for
FUZZ_SECONDS).  Corpora and crash files go to a temporary directory here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import run

MISSING = run.tooling_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"fuzz tooling not installed: {MISSING}")


def _fresh(call: str, work: Path, *args: object) -> run.Result:
    """``run.<call>(*args)`` in a new interpreter, with WORK = ``work`` and a fixed seed (reproducible in CI:
    a crash found here is found again).  A program started from this process would inherit its RSS
    high-water mark (Linux carries the vfork parent's into the child's ru_maxrss), so a test worker that
    once grew past 1 GiB (under AddressSanitizer they do) would make libFuzzer's -rss_limit_mb stop
    a harness at its first check; a fresh interpreter is small."""
    code = ("import dataclasses, json, sys; from pathlib import Path; from fuzz import run; "
            "run.WORK, run.SEED = Path(sys.argv[1]), 1; "
            f"print(json.dumps(dataclasses.asdict(run.{call}(*json.loads(sys.argv[2])))))")
    p = subprocess.run([sys.executable, "-c", code, str(work), json.dumps(args)], capture_output=True, text=True,
                       cwd=run.ROOT, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    return run.Result(**json.loads(p.stdout.splitlines()[-1]))


def test_every_native_function_has_a_harness():
    header = (run.NATIVE / "imgscope_native.h").read_text()
    import re
    functions = set(re.findall(r"\bisn_(\w+)\s*\(", header))
    covered = set()
    for h in run.native_harnesses():
        covered |= set(re.findall(r"\bisn_(\w+)\s*\(", (run.NATIVE / "fuzz" / f"fuzz_{h}.c").read_text()))
    assert functions <= covered, functions - covered


@pytest.mark.parametrize("harness", run.native_harnesses())
def test_native_harness_short_run(harness: str, tmp_path: Path):
    res = _fresh("run_native", tmp_path, harness, 2)
    assert not res.crashed, res.detail
    assert res.execs > 100


def test_python_harness_short_run(tmp_path: Path):
    """40 inputs (a count, not a time: under AddressSanitizer on a loaded machine 15 s gave 2 inputs)."""
    from fuzz.seeds import RECIPES, registered_formats
    res = _fresh("run_python", tmp_path, [f for f in registered_formats() if f in RECIPES], 600, 40)
    assert not res.crashed, res.detail
    assert res.execs >= 40
