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

#: (seed, format), picked from `python tests/formats/random_history.py SEED FMT` so that together they
#: cover QED (cluster sizes 4 KiB-1 MiB, > 4 GiB, backing qcow2/vmdk/vdi, rebase, resize, crash), qcow v1
#: (backing raw/qed/vmdk, crash, convert-in), VDI (static, > 4 GiB, crash, convert-in), every VMDK
#: subformat (zeroed_grain, compat6, delta disks, > 4 GiB split extents), VHD (> 4 GiB, fixed, force_size)
#: and VHDX (fixed, block/log sizes, > 4 GiB) in about a second each
SEEDS = [(2, "qed"), (3, "qed"), (6, "qed"), (16, "qed"), (24, "qed"), (30, "qed"),
         (7, "qcow"), (8, "qcow"), (12, "qcow"), (17, "qcow"),
         (1, "vdi"), (4, "vdi"), (27, "vdi"), (37, "vdi"),
         (7, "vmdk"), (9, "vmdk"), (19, "vmdk"), (29, "vmdk"), (36, "vmdk"),
         (1, "vpc"), (5, "vpc"), (16, "vpc"),
         (8, "vhdx"), (11, "vhdx"), (14, "vhdx"), (24, "vhdx")]


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
        qemu-io -f qcow -c 'write -z 4387328 4608' -c 'write -P 0x62 4375552 8918' top.qcow
        qemu-io -f qcow -c 'write -P 0x9a 8342868 2048' top.qcow
    """, "qcow", "top.qcow")
    assert RH.compare(tmp_path, "qcow", "top.qcow") == []


def test_vmdk_stream_units_smaller_than_a_grain_name_the_whole_stream(tmp_path):
    """A streamOptimized disk whose size is not a multiple of the grain maps in units smaller than the
    grain: every unit of a compressed grain must carry the grain's marker offset and stream length (it
    used to get marker + k * unit, an offset inside the deflate stream)."""
    require_qemu()
    _replay(tmp_path, """
        qemu-img create -q -f qcow2 src.qcow2 18440704
        qemu-io -f qcow2 -c 'write -P 0x18 18380973 59731' src.qcow2
        qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized,compat6=on src.qcow2 top.vmdk
    """, "vmdk", "top.vmdk")
    import numpy as np

    import imgscope
    from imgscope import model
    with imgscope.open(tmp_path / "top.vmdk") as img:
        gm = img.guest_map()
        grain = img.extents_list[0].grain
        assert gm.cluster_size == 512 < grain
        comp = np.flatnonzero(gm.kind == model.COMPRESSED)
        assert len(comp)
        per_grain = comp * gm.cluster_size // grain
        for g in np.unique(per_grain).tolist():
            units = comp[per_grain == g]
            assert len(set(gm.host[units].tolist())) == 1 and len(set(gm.length[units].tolist())) == 1
    assert RH.compare(tmp_path, "vmdk", "top.vmdk") == []
