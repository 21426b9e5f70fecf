"""The native decoders under AddressSanitizer + UBSan (skipped without gcc's libasan).

fuzz/asan.py builds the extension with ``-fsanitize=address,undefined`` into a
temporary directory (never over the in-tree build) and asan_probe.py runs in a
subprocess on it with the runtime preloaded.  The canary proves the sanitizer
is live (a deliberate overread must abort); the hostile run must finish clean.
``make asan-test`` runs the whole suite on the same build.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import asan

PROBE = Path(__file__).with_name("asan_probe.py")


@pytest.fixture(scope="module")
def asan_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if asan.runtime() is None:
        pytest.skip("gcc's AddressSanitizer runtime (libasan) is not installed")
    try:
        dest = asan.build(tmp_path_factory.mktemp("asan"))
    except RuntimeError as exc:
        pytest.skip(f"sanitizer build not possible here: {exc}")
    return asan.env_for(dest)


def _probe(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROBE), mode], capture_output=True, text=True, env=env, timeout=300)


def test_sanitizer_is_live(asan_env):
    p = _probe("canary", asan_env)
    assert p.returncode != 0 and "AddressSanitizer: heap-buffer-overflow" in p.stderr, p.stderr[-2000:]


def test_native_functions_on_hostile_buffers(asan_env):
    p = _probe("hostile", asan_env)
    assert p.returncode == 0 and "hostile ok" in p.stdout, (p.stdout[-1000:], p.stderr[-3000:])


def test_children_of_a_sanitizer_run(asan_env):
    """Python children (xdist workers, the imgscope CLI that tests start) load the sanitizer build too;
    other programs (qemu-img deadlocks under ASan) start without the preloaded runtime."""
    script = ("import subprocess, sys; "
              "py = subprocess.run([sys.argv[1], '-c', 'import os, imgscope._native as n; "
              "print(n.__file__, bool(os.environ.get(\"LD_PRELOAD\")))'], capture_output=True, text=True); "
              "sh = subprocess.run(['sh', '-c', 'echo \"[$LD_PRELOAD]\"'], capture_output=True, text=True); "
              "cli = subprocess.run([sys.argv[2], '--version'], capture_output=True, text=True); "
              "print(py.stdout.strip(), sh.stdout.strip(), cli.returncode, sep='\\n')")
    imgscope_cli = Path(sys.executable).with_name("imgscope")
    p = subprocess.run([sys.executable, "-c", script, sys.executable, str(imgscope_cli)], capture_output=True,
                       text=True, env=asan_env, timeout=120)
    py, sh, cli = p.stdout.splitlines()
    ext = Path(asan_env["PYTHONPATH"].split(":")[0]) / "ext"
    assert py.startswith(str(ext)) and py.endswith(" True"), (py, p.stderr[-2000:])
    assert sh == "[]" and cli == "0", (sh, cli)
