"""Resource limits: stated defaults, raising them (API, env, CLI), and bounded memory on absurd headers."""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import imgscope
from imgscope import limits
from imgscope.formats.qcow2 import layout as L
from unit.damage import Qcow2Copy, build_base


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import require_qemu
    require_qemu()
    return build_base(tmp_path_factory.mktemp("limits"))


def _copy(base: Path, tmp_path: Path) -> Qcow2Copy:
    return Qcow2Copy(base, tmp_path / "x.qcow2")


def test_defaults_follow_qemu():
    assert limits.DEFAULTS["max_l1_bytes"] == 32 << 20
    assert limits.DEFAULTS["max_reftable_bytes"] == 8 << 20
    assert limits.DEFAULTS["max_snapshots"] == 65536
    assert limits.DEFAULTS["max_snapshot_extra"] == 1024
    assert limits.DEFAULTS["max_descriptor_bytes"] == 1 << 20


def test_parse_units_and_errors():
    assert limits.parse("max_l1_bytes=64M, max_chain_depth=3") == {"max_l1_bytes": 64 << 20, "max_chain_depth": 3}
    assert limits.parse("max_metadata_bytes=2GiB") == {"max_metadata_bytes": 2 << 30}
    with pytest.raises(imgscope.ImgscopeError, match="unknown limit 'nope'"):
        limits.parse("nope=1")
    with pytest.raises(imgscope.ImgscopeError, match="not a size"):
        limits.parse("max_l1_bytes=lots")


def test_override_restores():
    before = dict(limits.LIMITS)
    with limits.override(max_l1_bytes=1):
        assert limits.LIMITS["max_l1_bytes"] == 1
    assert limits.LIMITS == before


def test_limit_error_names_the_limit(base: Path, tmp_path: Path):
    img = _copy(base, tmp_path)
    img.set_header(l1_size=2**31)
    with pytest.raises(imgscope.LimitError) as exc:
        imgscope.open(img.path)
    e = exc.value
    assert (e.limit, e.value, e.maximum, e.structure, e.offset) == ("max_l1_bytes", 2**34, 32 << 20,
                                                                     "qcow2 header.l1_size", 36)
    assert "max_l1_bytes" in str(e)


@pytest.mark.parametrize("field,value,limit", [
    ("l1_size", 2**32 - 1, "max_l1_bytes"),
    ("refcount_table_clusters", 2**32 - 1, "max_reftable_bytes"),
    ("nb_snapshots", 2**32 - 1, "max_snapshots"),
])
def test_huge_claims_fail_fast_without_allocating(base: Path, tmp_path: Path, field: str, value: int, limit: str):
    """A header claiming a 2^32-entry table (2^35+ bytes) fails before anything near that is allocated."""
    img = _copy(base, tmp_path)
    img.set_header(**{field: value})
    with limits.override(**{k: v for k, v in limits.DEFAULTS.items()}):
        tracemalloc.start()
        try:
            with pytest.raises(imgscope.LimitError) as exc:
                imgscope.open(img.path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert exc.value.limit == limit
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_huge_virtual_size_is_bounded(base: Path, tmp_path: Path):
    """A 1 TiB virtual disk with 4 KiB clusters (2^28 guest clusters, a valid 4 MiB L1): per-cluster maps
    stop at max_guest_clusters instead of allocating ~14 GiB."""
    img = _copy(base, tmp_path)
    with limits.override(max_guest_clusters=1 << 20):
        h = img.header()
        need = -(-(1 << 40) // (img.cluster_size * img.cluster_size // 8))
        img.set_header(size=1 << 40, l1_size=need)
        img.write(h.l1_table_offset + 8 * h.l1_size, bytes(8 * need - 8 * h.l1_size))  # zero L1 entries
        tracemalloc.start()
        try:
            with imgscope.open(img.path) as opened, pytest.raises(imgscope.LimitError) as exc:
                opened.mapping()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert exc.value.limit == "max_guest_clusters"
    assert peak < 64 << 20


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgscope.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=60)


def test_cli_limit_option_and_env(base: Path, tmp_path: Path):
    img = _copy(base, tmp_path)
    img.set_header(l1_size=(64 << 20) // 8)
    p = _cli("info", str(img.path))
    assert p.returncode == 1 and "max_l1_bytes=33554432" in p.stderr and "Traceback" not in p.stderr
    raised = _cli("--limit", "max_l1_bytes=128M", "info", str(img.path))
    assert "max_l1_bytes" not in raised.stderr  # past the limit: the next check (L1 past EOF) speaks
    env = _cli("info", str(img.path), env={"IMGSCOPE_LIMITS": "max_l1_bytes=128M"})
    assert env.stderr == raised.stderr
    bad = _cli("--limit", "max_l1_bytes=huge", "info", str(img.path))
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
