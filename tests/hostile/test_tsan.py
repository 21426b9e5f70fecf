"""The threaded check kernels under ThreadSanitizer: native/fuzz/tsan_threads.c, built with clang
-fsanitize=thread together with native/check.c, compares each threaded kernel with its serial run on
preallocated-like, random and shared table layouts; any data race report fails the test."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed (make fuzz-deps)")


def test_threaded_kernels_have_no_data_races(tmp_path: Path) -> None:
    exe = tmp_path / "tsan_threads"
    subprocess.run(["clang", "-O1", "-g", "-fsanitize=thread", "-pthread", "-std=c99", "-Wall", "-Wextra", "-Werror",
                    f"-I{NATIVE}", str(NATIVE / "fuzz" / "tsan_threads.c"), str(NATIVE / "check.c"), "-o", str(exe)],
                   check=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600,
                          env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66"})
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("references") == 3, proc.stdout
