"""`imgscope check --replay`: what qemu's automatic repair on a read-write open would write."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from conftest import require_qemu


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _replay(path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "imgscope.cli", "check", "--replay", "--output", "json", str(path)],
                          capture_output=True, text=True)
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def dirty(tmp_path):
    require_qemu()
    p = tmp_path / "dirty.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", str(p), "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 128k", "-c", "write -P 6 1M 64k", "-c", "abort",
                    str(p)], capture_output=True)
    return p


def test_replay_writes_nothing_and_predicts_qemus_open_repair(dirty, tmp_path):
    before = _sha(dirty)
    rc, out = _replay(dirty)
    assert _sha(dirty) == before  # forensic mode never writes
    assert rc == 2 and out["check"]["corruptions"] == 6
    repair = out["open-repair"]
    reasons = [w["reason"] for w in repair["writes"]]
    assert any("dirty bit" in r for r in reasons) and repair["writes"][-1]["structure"].endswith("incompatible_features")
    assert repair["after"]["check-errors"] == 0 and "corruptions" not in repair["after"]
    # qemu's own open-time repair: open the copy read-write and let qemu-io close it
    copy = tmp_path / "copy.qcow2"
    shutil.copy(dirty, copy)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read 0 512", str(copy)], check=True, capture_output=True)
    theirs = json.loads(subprocess.run(["qemu-img", "check", "--output=json", str(copy)], capture_output=True,
                                       text=True).stdout)
    assert theirs.get("corruptions", 0) == 0 and theirs.get("leaks", 0) == 0
    assert repair["corruptions-fixed"] == 3  # as `qemu-img check -r all` counts the same repair


def test_replay_on_a_clean_image_says_qemu_would_not_repair(tmp_path):
    require_qemu()
    p = tmp_path / "clean.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(p), "16M"], check=True)
    rc, out = _replay(p)
    assert rc == 0 and out["open-repair"] is None
    human = subprocess.run([sys.executable, "-m", "imgscope.cli", "check", "--replay", str(p)], capture_output=True,
                           text=True).stdout
    assert "without repairing" in human
