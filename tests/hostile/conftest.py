"""Fixtures of tests/hostile: seed images for the fuzzers' mutation engine (fuzz/)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the fuzz/ helpers are not installed with the package

from conftest import require_qemu  # noqa: E402


@pytest.fixture(scope="session")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """fuzz/seeds.py's images for every registered format, built once per session."""
    require_qemu()
    from fuzz.seeds import make_seeds
    return make_seeds(tmp_path_factory.mktemp("seeds"))
