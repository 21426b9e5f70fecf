"""Fixtures of tests/unit: small qemu-made qcow2 images, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_qemu
from .damage import build_base


@pytest.fixture(scope="session")
def base_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 MiB, 4 KiB clusters: data, zero and compressed clusters and one snapshot (see damage.build_base)."""
    require_qemu()
    return build_base(tmp_path_factory.mktemp("base"))
