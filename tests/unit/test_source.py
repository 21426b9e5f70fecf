"""imgscope.io.Source's prefetch: one posix_fadvise per run of adjacent ranges inside the file, and none
when the ranges are already in the page cache."""
from __future__ import annotations

import os

import pytest

from imgscope.io import Source


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(1 << 20))
    s = Source(p)
    yield s
    s.close()


def test_prefetch_merges_adjacent_ranges_and_skips_outside_ones(src, monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(Source, "_cached", lambda self, ranges: False)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: seen.append((off, n)))
    src.prefetch([65536, 0, 8192, 4096, 4096, 1 << 20, 1 << 21, 131072], 4096)
    assert seen == [(4096, 8192), (65536, 4096), (131072, 4096)]


def test_prefetch_asks_nothing_for_cached_ranges_and_everything_otherwise(src, monkeypatch) -> None:
    if not hasattr(os, "RWF_NOWAIT"):
        pytest.skip("no RWF_NOWAIT: every prefetch is asked for")
    os.pread(src.fd, 1 << 20, 0)  # every page cached
    assert src._cached([(0, 4096), (512 << 10, 4096)])
    os.fsync(src.fd)
    os.posix_fadvise(src.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the cache
    if src._cached([(512 << 10, 4096)]):
        pytest.skip("this file system keeps the pages cached")
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: seen.append((off, n)))
    src.prefetch([8192, 512 << 10], 4096)
    assert seen == [(8192, 4096), (512 << 10, 4096)]
    os.pread(src.fd, 1 << 20, 0)
    seen.clear()
    src.prefetch([8192, 512 << 10], 4096)
    assert seen == []
