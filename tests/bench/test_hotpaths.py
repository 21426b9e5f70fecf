"""The optimised qcow2 hot paths: native block-status runs equal their numpy twin, and
streamed walks (tiny chunks, so every chunk boundary is crossed) equal qemu-img."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import imgscope
from conftest import require_qemu
from imgscope import native
from imgscope.formats.qcow2 import check as qcheck
from imgscope.formats.qcow2 import tables as qtables


@pytest.mark.parametrize("sub", [1, 32])
@pytest.mark.parametrize("crypto", [False, True])
def test_unit_runs_native_equals_numpy(sub: int, crypto: bool) -> None:
    if not native.available:
        pytest.skip("native extension not built")
    rng = np.random.default_rng(sub + crypto)
    n = 5000
    kind = rng.integers(0, 5, n).astype(np.uint8)
    kind[1000:3000] = native.NORMAL  # long runs with contiguous offsets, to be merged
    host = (np.arange(n, dtype=np.uint64) << np.uint64(16)) * (rng.integers(0, 8, n) > 0).astype(np.uint64)
    alloc = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32) if sub > 1 else None
    zero = (rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32) & np.uint32(0x0F0F0F0F)) if sub > 1 \
        else None
    got = {}
    for be in ("native", "python"):
        with native.use(be):
            got[be] = native.unit_runs(kind, host, alloc, zero, sub, 65536, crypto)
    for a, b in zip(got["native"], got["python"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert 1 < len(got["native"][0]) < n * sub


def _qemu_json(*args: str) -> tuple[int, object]:
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None


@pytest.fixture
def scattered(tmp_path):
    """Small clusters, scattered writes, a zero cluster, snapshots and a compressed cluster."""
    require_qemu()
    p = tmp_path / "s.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(p), "64M"], check=True)
    cmds = [f"write -P {i % 200 + 1} {(i * 7919 % 16000) * 4096} 4k" for i in range(300)]
    cmds += ["write -z 8M 64k", "write -c -P 9 9M 4k"]
    subprocess.run(["qemu-io", "-t", "unsafe", "-f", "qcow2", str(p)], input="\n".join(cmds) + "\n",
                   capture_output=True, text=True, check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "a", str(p)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", str(p)], capture_output=True, check=True)
    return p


def test_streamed_walks_equal_qemu(scattered, backend, monkeypatch) -> None:
    monkeypatch.setattr(qtables, "CHUNK_ENTRIES", 1024)  # 2 tables per chunk
    monkeypatch.setattr(qcheck, "CHUNK_ENTRIES", 1024)
    rc, theirs = _qemu_json("check", "--output=json", str(scattered))
    _, qmap = _qemu_json("map", "--output=json", str(scattered))
    with imgscope.open(scattered) as img:
        assert img.map_entries() == qmap
        res = img.check()
        assert (res.exit_code(), res.qemu_json()) == (rc, theirs)
        gm = img.guest_map()
        store = img.tables.store  # the whole-image decode the streamed guest map must equal
        slots = img.tables.slots(img.tables.l2_offsets(img.tables.layer_l1(None)[0]))
        idx = (slots[:, None] * img.tables.l2e + np.arange(img.tables.l2e)).reshape(-1)[:len(gm.kind)]
        assert np.array_equal(gm.kind, store.kind[idx]) and np.array_equal(gm.host, store.host[idx])
        assert np.array_equal(gm.length, store.length[idx]) and gm.length.dtype == np.uint32
