"""imgscope.io.Source's prefetch: one posix_fadvise per run of adjacent ranges inside the file."""
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
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: seen.append((off, n)))
    src.prefetch([65536, 0, 8192, 4096, 4096, 1 << 20, 1 << 21, 131072], 4096)
    assert seen == [(4096, 8192), (65536, 4096), (131072, 4096)]
