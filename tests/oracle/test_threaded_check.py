"""The threaded check kernels on images big enough to use them, against qemu-img check.

The threads start only with at least four regions of 2^16 counters, i.e. a file of 2^18 clusters or
more: 512-byte clusters and a 160 MiB metadata-preallocated image give 330,000 clusters and 5,120 L2
tables.  Each image is checked with one thread and with two; both must equal qemu-img's JSON and
exit code.
"""
from __future__ import annotations

import pytest

import imgscope
from imgscope import native
from oracle import images, qemu

pytestmark = pytest.mark.skipif(not qemu.available(), reason="qemu-img not installed")
MiB = 1 << 20


def _big(d, name: str, opts: str = "") -> object:
    path = d / name
    qemu.qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size=512,preallocation=metadata{opts}", path,
                  "160M")
    return path


def _preallocated(d):
    return _big(d, "prealloc.qcow2")


def _snapshots_and_writes(d):
    """Shared tables (weights 2 and 3), COPIED flags cleared and set again by copy-on-write."""
    path = _big(d, "snaps.qcow2")
    qemu.qemu_img("snapshot", "-c", "s1", path)
    qemu.qemu_io("qcow2", path, "write -P 0x5a 0 64k", "write -P 0x6b 100M 64k")
    qemu.qemu_img("snapshot", "-c", "s2", path)
    qemu.qemu_io("qcow2", path, "write -P 0x7c 150M 4k", "write -P 0x11 3M 1M")
    return path


def _dirty(d):
    """lazy_refcounts and qemu-io aborted after copy-on-write: new clusters with refcount 0 past EOF."""
    path = _big(d, "dirty.qcow2", ",lazy_refcounts=on")
    qemu.qemu_img("snapshot", "-c", "s1", path)
    images._crash("qcow2", path, "write -P 0x5a 1M 256k", "write -P 0x6b 120M 64k")
    return path


@pytest.fixture(scope="module", params=[_preallocated, _snapshots_and_writes, _dirty])
def big_image(request, tmp_path_factory):
    return request.param(tmp_path_factory.mktemp("threaded"))


def test_threaded_check_equals_qemu(big_image, monkeypatch):
    rc, theirs, _ = qemu.check_json(big_image.absolute(), "qcow2")
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("IMGSCOPE_THREADS", threads)
        with imgscope.open(big_image.absolute()) as img:
            nclusters = img.src.size // img.cluster_size
            ntables = img.src.size // img.cluster_size // 64
            res = img.check()
        results[threads] = (res.exit_code(), res.qemu_json(), res.summary())
        assert (res.exit_code(), res.qemu_json()) == (rc, theirs)
    assert results["1"] == results["2"]
    if native.available:  # the images are big enough for the threaded kernels
        assert native._lib.isn_l2_scan_scratch(nclusters, 2, 2, min(ntables, 256)) > 0
