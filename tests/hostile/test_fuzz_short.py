"""A short run (about a minute) of every fuzz harness — only where the fuzz tooling is installed.

``make test`` does not install clang/libFuzzer/atheris, so there this module is
skipped with the reason; ``make fuzz`` installs them and runs each harness for
FUZZ_SECONDS.  Corpora and crash files go to a temporary directory here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import run

MISSING = run.tooling_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"fuzz tooling not installed: {MISSING}")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(run, "WORK", tmp_path)
    monkeypatch.setattr(run, "SEED", 1)  # reproducible in CI: a crash found here is found again
    return tmp_path


def test_every_native_function_has_a_harness():
    header = (run.NATIVE / "imgscope_native.h").read_text()
    import re
    functions = set(re.findall(r"\bisn_(\w+)\s*\(", header))
    covered = set()
    for h in run.native_harnesses():
        covered |= set(re.findall(r"\bisn_(\w+)\s*\(", (run.NATIVE / "fuzz" / f"fuzz_{h}.c").read_text()))
    assert functions <= covered, functions - covered


@pytest.mark.parametrize("harness", run.native_harnesses())
def test_native_harness_short_run(harness: str, work: Path):
    res = run.run_native(harness, 2)
    assert not res.crashed, res.detail
    assert res.execs > 100


def test_python_harness_short_run(work: Path):
    from fuzz.seeds import RECIPES, registered_formats
    res = run.run_python([f for f in registered_formats() if f in RECIPES], 15)
    assert not res.crashed, res.detail
    assert res.execs > 10
