"""Fixtures giving tests qemu-built oracle images (see images.py); qemu-img/qemu-io must be installed."""

import os

import pytest

from oracle import images, qemu


@pytest.fixture(scope="session")
def oracle_dir(tmp_path_factory):
    """Session directory the oracle images are built into. Skips when qemu-img/qemu-io are missing,
    except under CI=true, where that is a failure."""
    if not qemu.available():
        reason = "qemu-img and qemu-io are needed for oracle tests (Debian/Ubuntu: apt-get install qemu-utils)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return tmp_path_factory.mktemp("oracle")


@pytest.fixture(scope="session")
def make_image(oracle_dir):
    """``make_image(kind)`` builds (once per session) the image ``kind`` of images.KINDS and returns its path."""
    return lambda kind: images.make(kind, oracle_dir)
