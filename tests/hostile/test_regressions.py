"""Crashes the fuzzers found, minimised (fuzz/minimize.py) and kept as gzipped images in regressions/.

Each must now go through the whole API (fuzz/exercise.py) without anything but
ImgscopeErrors, and give the answer named here.
"""
from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import pytest

import imgscope
from fuzz.exercise import exercise

HERE = Path(__file__).parent / "regressions"

#: file -> (call, expected prefix of its outcome); the fix is named in docs/security.md
EXPECT = {
    # np.arange over 2^52 guest clusters -> MemoryError; now the max_guest_clusters limit
    "qcow2-huge-virtual-size.qcow2.gz": ("mapping", "LimitError"),
    # duplicate snapshot ids made the clusters() owner categories collide (pandas ValueError)
    "qcow2-duplicate-snapshot-id.qcow2.gz": ("clusters", "ok"),
    # a host offset >= 2^63 in check findings: int64/uint64 concat became float, then OverflowError
    "qcow2-findings-offset-2^64.qcow2.gz": ("check", "ok"),
    # a VMDK grain directory sector offset * 512 >= 2^64 overflowed numpy uint64 in reference_rows
    "vmdk-gd-offset-2^64.vmdk.gz": ("clusters", "ok"),
    # a redundant grain directory sector offset * 512 >= 2^64 overflowed numpy uint64 in the VMDK check
    "vmdk-rgd-offset-2^64.vmdk.gz": ("check", "ok"),
    # blocks_in_image 3,146,752 in a 2 MiB VDI: 3.1 M findings; building their frame (a message per row)
    # took minutes and 2 GiB (atheris timeout); now the max_finding_rows limit
    "vdi-block-map-past-eof-3m-findings.vdi.gz": ("check", "LimitError"),
    # blocks_in_image 1,048,575 in a 2 MiB VDI: 1 M findings, under the limit.  Their structure labels were
    # a million strings made by check() itself (157 MiB traced, 4 s; the atheris run grew to its 3 GiB
    # limit); now labels are made only when the findings frame asks (check.Labels).  The frame itself is
    # over the tests' lowered max_finding_rows
    "vdi-block-map-past-eof-1m-findings.vdi.gz": ("check", "LimitError"),
}


def test_every_file_has_an_expectation():
    assert sorted(p.name for p in HERE.glob("*.gz")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_regression(name: str, tmp_path: Path, backend: str):
    path = tmp_path / name.removesuffix(".gz")
    path.write_bytes(gzip.decompress((HERE / name).read_bytes()))
    call, expected = EXPECT[name]
    result = exercise(path)
    assert result[call].startswith(expected), result
    if name == "vdi-block-map-past-eof-1m-findings.vdi.gz":
        tracemalloc.start()
        try:
            with imgscope.open(path) as img:
                res = img.check()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.summary()["VDI-MAP-002"] == 1046525 and peak < 100 << 20, peak  # 12 B of arrays per finding
    elif name.startswith("vdi-block-map"):  # the check itself, its counts and JSON stay available
        with imgscope.open(path) as img:
            res = img.check()
            assert res.corruptions > 1 << 21 and res.qemu_json()["corruptions"] == res.corruptions
            with pytest.raises(imgscope.LimitError) as exc:
                res.findings
        assert exc.value.limit == "max_finding_rows"
    elif expected == "LimitError":
        with imgscope.open(path) as img, pytest.raises(imgscope.LimitError) as exc:
            for layer in img.layer_names():
                img.mapping(layer)
        assert exc.value.limit == "max_guest_clusters"
