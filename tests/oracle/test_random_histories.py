"""Random qcow2 histories (tests/oracle/random_history.py) compared with qemu-img through imgscope's CLI,
plus the minimal histories of every disagreement the long campaigns found (docs/testing.md)."""
from __future__ import annotations

import shlex

import pytest

from oracle import random_history as rh

#: fixed seeds: a quick sample of what `run_random.py` runs by the hundred
SEEDS = list(range(1, 26))


@pytest.fixture(autouse=True)
def _qemu(oracle_dir):
    """oracle_dir skips (or fails under CI=true) without qemu-img/qemu-io."""


@pytest.mark.parametrize("seed", SEEDS)
def test_random_history(seed, tmp_path):
    work = tmp_path / "h"
    h = rh.generate(seed, work, n_ops=4, checkpoint=lambda h: rh.compare(work, h.top, h.steps[-1].luks,
                                                                        all_files=False))
    diffs = h.diffs or rh.compare(work, h.top, h.steps[-1].luks, repair=seed % 4 == 0, snapmap=seed % 5 == 0)
    assert not diffs, f"seed {seed}:\n{h.script()}\n" + "\n".join(diffs)


def _replay(tmp_path, script: str) -> tuple:
    steps = [rh.Step(shlex.split(line), "") for line in script.strip().splitlines()]
    for s in steps:
        p = rh.run(s.argv, tmp_path)
        assert p.returncode in (0, -6), (s.argv, p.stderr)
    return tmp_path


def test_zero_size_map(tmp_path):
    """qemu-img map of a 0-byte disk prints one entry of length 0 (imgscope printed [])."""
    _replay(tmp_path, """
qemu-img create -q -f qcow2 z.qcow2 0
qemu-img create -q -f raw z.raw 0
""")
    assert rh.compare_image(tmp_path, "z.qcow2") == []
    out = rh.imgscope(tmp_path, "map", "--output", "json", "-f", "raw", str(tmp_path / "z.raw"))  # 0 bytes: no probing
    theirs = rh.run(["qemu-img", "map", "--output=json", "-f", "raw", str(tmp_path / "z.raw")], tmp_path)
    assert out.stdout == theirs.stdout


@pytest.mark.parametrize("raw", ["on", "off"])
def test_data_file_metadata_preallocation_map(tmp_path, raw):
    """With an external data file qemu still detects metadata preallocation (refcounted metadata
    clusters vs. the qcow2 file's allocation) and then splits data extents at the *data file's*
    holes; imgscope skipped both for data-file images."""
    _replay(tmp_path, f"""
qemu-img create -q -f qcow2 -o data_file=data0.raw,data_file_raw={raw},preallocation=metadata img0.qcow2 256M
qemu-io -c 'write -P 7 141612173 835839' -f qcow2 img0.qcow2
qemu-img bitmap --add -f qcow2 img0.qcow2 bm1
""")
    assert rh.compare_image(tmp_path, "img0.qcow2") == []


def test_rebuild_places_refblocks_like_qemu(tmp_path):
    """qemu's refcount rebuild puts refblock k at the first free cluster at or after k's own range
    ("don't allocate a cluster in a refblock already written"), growing the file when that range is
    full; imgscope used the first free cluster anywhere, so image-end-offset after -r all differed."""
    _replay(tmp_path, """
qemu-img create -q -f qcow2 -o cluster_size=1024,refcount_bits=64,lazy_refcounts=on img0.qcow2 1M
qemu-io -c 'write -P 216 139264 31232' -c 'write -P 32 716800 3072' -c 'write -P 193 657564 2659' -c 'write -P 68 900096 1024' -f qcow2 img0.qcow2
qemu-io -c 'discard 41325 516756' -c 'write -c -P 92 702464 1024' -c abort -f qcow2 img0.qcow2
qemu-io -c 'discard 703488 1024' -c 'write -z 677888 3072' -c 'write -P 91 166879 670618' -c 'write -P 91 949248 1024' -c abort -f qcow2 img0.qcow2
""")
    rc = rh.run(["qemu-img", "check", "-f", "qcow2", "img0.qcow2"], tmp_path).returncode
    assert rc == 2  # a cluster in use with refcount 0: check -r all rebuilds the refcount structure
    assert rh.compare_image(tmp_path, "img0.qcow2") == []
    assert rh.compare_repair(tmp_path, "img0.qcow2") == []


def test_rebuild_reuses_leaked_clusters_like_qemu(tmp_path):
    """A leaked cluster (on-disk refcount 2, no reference: compressed clusters rewritten before a lazy-refcount
    crash) is free for qemu's rebuild; imgscope refused clusters with an on-disk refcount and grew the file."""
    _replay(tmp_path, """
qemu-img create -q -f qcow2 -o cluster_size=131072,refcount_bits=64 img0.qcow2 2101248
qemu-io -c 'write -c -P 224 131072 131072' -c 'write -c -P 0 0 131072' -f qcow2 img0.qcow2
qemu-img amend -f qcow2 -o lazy_refcounts=on img0.qcow2
qemu-io -c 'write -P 84 1042118 115370' -c 'write -P 241 524288 131072' -c 'write -P 237 655360 131072' -c 'write -P 15 1441792 393216' -f qcow2 img0.qcow2
qemu-io -c 'write -P 0x5a 126099 118185' -c 'write -P 0x5b 1125888 18432' -c abort -f qcow2 img0.qcow2
""")
    assert rh.compare_image(tmp_path, "img0.qcow2") == []
    assert rh.compare_repair(tmp_path, "img0.qcow2") == []


def test_luks_texts_name_the_image_like_qemu(tmp_path):
    """Harness regression: qemu-img info needs no key and names the image by its path; only map/check/snapshot
    get --image-opts (qemu then says json:{...}, with escaped quotes in its JSON filename)."""
    _replay(tmp_path, """
qemu-img create -q -f qcow2 --object secret,id=sec0,data=abc123 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.hash-alg=sha512 img0.qcow2 4M
qemu-io --object secret,id=sec0,data=abc123 -c 'write -P 7 0 70000' --image-opts driver=qcow2,file.filename=img0.qcow2,encrypt.key-secret=sec0
""")
    assert rh.compare_image(tmp_path, "img0.qcow2", luks=True) == []
