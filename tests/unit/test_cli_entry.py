"""The console script (``cli.entry``): read-only commands end with ``os._exit`` after flushing, others
with ``sys.exit``; either way stdout, stderr and the exit code are ``cli.main``'s."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import imgscope
from conftest import require_qemu
from imgscope import cli

SCRIPT = Path(sys.executable).parent / "imgscope"


def _script(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess:
    # buffered output, as from a terminal-less run: what os._exit would lose without the flush
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"COLUMNS": "100"}
    argv = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "imgscope.cli"]
    return subprocess.run([*argv, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    """A qcow2 image with one leaked cluster (a refcount raised by hand): check exits 3."""
    require_qemu()
    p = tmp_path_factory.mktemp("entry") / "leaky.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(p), "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", str(p)], capture_output=True, check=True)
    with imgscope.open(p) as img:
        block = int(img.tables.reftable()[0])
        end = -(-p.stat().st_size // img.meta.cluster_size)
    with open(p, "r+b") as f:  # one more cluster at the end of the file: a refcount of 1, no reference
        f.truncate((end + 1) * img.meta.cluster_size)
        f.seek(block + 2 * end)
        f.write((1).to_bytes(2, "big"))
    return p


@pytest.mark.parametrize("argv", [("check", "--output", "json"), ("check",), ("info", "--output", "json"),
                                  ("map", "--output", "json"), ("snapshots",)])
def test_read_only_commands_print_and_exit_as_main(leaky, capsys, argv) -> None:
    capsys.readouterr()
    rc = cli.main([*argv, str(leaky)])
    out, err = capsys.readouterr()
    got = _script(*argv, str(leaky))
    assert (got.stdout, got.stderr, got.returncode) == (out, err, rc)
    if argv[0] == "check":
        assert rc == 3 and out


def test_repair_runs_to_a_normal_exit(leaky, tmp_path) -> None:
    """``check -r`` writes: it is not cut short by os._exit, and its result is on disk afterwards."""
    q = tmp_path / "r.qcow2"
    q.write_bytes(leaky.read_bytes())
    assert _script("check", "-r", "leaks", "--output", "json", str(q)).returncode == 0
    assert _script("check", "--output", "json", str(q)).returncode == 0


def test_closed_pipe_is_not_an_error(leaky) -> None:
    """The reader leaving early (``imgscope map … | head -1``): no traceback, no 'Exception ignored'."""
    argv = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "imgscope.cli"]
    p = subprocess.Popen([*argv, "map", str(leaky)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # nobody reads
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0
    assert b"Traceback" not in err and b"Exception ignored" not in err
