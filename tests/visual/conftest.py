"""Images for the visual tests, built with qemu-img/qemu-io (the oracle), and where screenshots go."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import require_qemu
from oracle.qemu import qemu_img, qemu_io
from scan.fleet import _leak

#: (writes before s1, writes before s2, writes after s2): out-of-order and compressed writes fragment the
#: file, rewrites after each snapshot give every layer exclusive clusters
HISTORY = (["write -P 1 4M 64k", "write -P 2 0 128k", "write -P 3 2M 64k", "write -c -P 4 8M 64k"],
           ["write -P 5 0 64k", "write -P 6 12M 256k", "write -P 7 1M 64k"],
           ["write -P 8 64k 64k", "write -P 9 20M 128k"])


@pytest.fixture(scope="session")
def visual_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB qcow2 with snapshots s1 -> s2 -> live, fragmentation, a compressed cluster and one leaked
    cluster at the tail (an aborted allocation)."""
    require_qemu()
    p = tmp_path_factory.mktemp("visual") / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", p, "64M")
    for i, writes in enumerate(HISTORY):
        qemu_io("qcow2", p, *writes)
        if i < 2:
            qemu_img("snapshot", "-c", f"s{i + 1}", p)
    _leak(p)
    return p


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $IMGSCOPE_SCREENSHOTS when set (to look at them), else the test's tmp dir."""
    d = Path(os.environ.get("IMGSCOPE_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d
