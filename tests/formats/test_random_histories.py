"""imgscope's CLI against qemu-img on random qemu-made histories (tests/formats/random_history.py),
plus one regression test per bug those histories found.

The fixed seeds cover every format (QED, qcow v1, VDI, VMDK subformats, VHD, VHDX) with backing files,
conversions, crashes and resizes; ``tests/formats/run_random.py`` runs hundreds more locally.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conftest import require_qemu

from . import random_history as RH

#: (seed, format): chosen so that together they exercise backing files (raw, qcow2, vmdk, qed...),
#: convert-in, crashes, QED resize/rebase and the VMDK/VHD/VHDX subformats, and all run in seconds
SEEDS = [(1, "qed"), (2, "qed"), (14, "qed"), (28, "qed"), (32, "qed"),
         (3, "qcow"), (4, "qcow"), (21, "qcow"), (22, "qcow"),
         (7, "vdi"), (13, "vdi"), (36, "vdi"),
         (9, "vmdk"), (11, "vmdk"), (12, "vmdk"), (25, "vmdk"), (40, "vmdk"),
         (5, "vpc"), (6, "vpc"), (29, "vpc"),
         (19, "vhdx"), (20, "vhdx"), (24, "vhdx"), (26, "vhdx"), (27, "vhdx")]


@pytest.mark.parametrize("seed,fmt", SEEDS, ids=[f"{f}-{s}" for s, f in SEEDS])
def test_random_history(seed, fmt, tmp_path):
    require_qemu()
    h = RH.generate(seed, fmt)
    r = RH.run_history(h, tmp_path)
    assert r.error is None, h.script()
    assert r.ok, "\n".join(map(str, r.mismatches)) + "\n--- history:\n" + h.script()


def _replay(tmp_path: Path, script: str, fmt: str, target: str) -> Path:
    h = RH.History(0, fmt, target, [RH.Op(shlex.split(line)) for line in script.strip().splitlines()])
    h.replay(tmp_path)
    return tmp_path / target


# ---------------------------------------------------------------- regressions

def test_qed_table_size_1_is_refused_like_qemu(tmp_path):
    """qemu-img creates a QED with table_size=1 but cannot open it (its table offset test rejects every
    one-cluster table): check and check -r exit 1 without JSON, as qemu-img; info and map still work."""
    require_qemu()
    _replay(tmp_path, """
        qemu-img create -q -f qed -o cluster_size=8192,table_size=1 top.qed 1000000
        qemu-io -f qed -c 'write -P 0x11 0 10000' top.qed
    """, "qed", "top.qed")
    q = RH.run_qemu("qemu-img", "check", "--output=json", "-U", "top.qed", cwd=tmp_path)
    assert q.returncode == 1 and not q.stdout.strip()
    rc, out, _ = RH.run_imgscope("check", "--output", "json", "top.qed", cwd=tmp_path)
    assert (rc, out.strip()) == (1, "")
    rc, out, _ = RH.run_imgscope("check", "-r", "all", "--output", "json", "top.qed", cwd=tmp_path)
    assert (rc, out.strip()) == (1, "")
    rc, out, _ = RH.run_imgscope("info", "--output", "json", "top.qed", cwd=tmp_path)
    assert rc == 0 and json.loads(out)["virtual-size"] == 1000448


def test_qed_size_not_a_cluster_multiple_is_fine(tmp_path):
    """qemu only wants whole sectors (qed_is_image_size_valid): no QED-HDR-003, same check as qemu."""
    require_qemu()
    _replay(tmp_path, """
        qemu-img create -q -f qed top.qed 1000001
        qemu-io -f qed -c 'write -P 0x22 999000 1000' top.qed
    """, "qed", "top.qed")
    assert RH.compare(tmp_path, "qed", "top.qed") == []
    import imgscope
    with imgscope.open(tmp_path / "top.qed") as img:
        assert img.meta.qemu_refuses == [] and "QED-HDR-003" not in img.check().summary()


def test_content_check_reads_unbuffered(tmp_path):
    """Harness regression: the zero scan's lseek must not leave a stale buffered read behind
    (a qcow v1 over raw whose map alternates data and zero extents)."""
    require_qemu()
    _replay(tmp_path, """
        qemu-img create -q -f raw base.raw 13425152
        qemu-img create -q -f qcow -b base.raw -F raw top.qcow 9309843
        qemu-io -f qcow -c 'write -z 4387328 4608' -c 'write -P 0x62 4375552 8918' -c 'write -P 0x9a 8342868 2048' top.qcow
    """, "qcow", "top.qcow")
    assert RH.compare(tmp_path, "qcow", "top.qcow") == []
