"""Shared fixtures: run tests on both decoder backends and find qemu-img."""
from __future__ import annotations

import os
import shutil

import pytest

from imgscope import native


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("IMGSCOPE_FORCE_NATIVE") == "1" and not native.available:
        raise pytest.UsageError("IMGSCOPE_FORCE_NATIVE=1 but the native extension is not built")


@pytest.fixture(params=["native", "python"])
def backend(request: pytest.FixtureRequest):
    """Run the test once with the C decoders and once with their numpy twins."""
    if request.param == "native" and not native.available:
        pytest.skip("native extension not built")
    with native.use(request.param):
        yield request.param


def require_qemu() -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-img/qemu-io missing in CI (make test installs qemu-utils)")
        pytest.skip("qemu-img/qemu-io not installed")
