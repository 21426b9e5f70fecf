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
