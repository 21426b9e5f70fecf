"""Backing-file policy for names read from untrusted images (imgscope.chain.resolve_backing_path)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import imgscope
from imgscope import chain
from imgscope.chain import BackingRefused, resolve_backing_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "child.qcow2").write_bytes(b"x")
    (tmp_path / "img" / "base.raw").write_bytes(b"y")
    (tmp_path / "img" / "sub").mkdir()
    (tmp_path / "img" / "sub" / "deep.raw").write_bytes(b"z")
    (tmp_path / "secret.raw").write_bytes(b"s")
    return tmp_path


def test_inside_directory_is_followed(tree: Path):
    child = str(tree / "img" / "child.qcow2")
    assert resolve_backing_path(child, "base.raw") == str(tree / "img" / "base.raw")
    assert resolve_backing_path(child, "sub/deep.raw") == str(tree / "img" / "sub" / "deep.raw")
    assert resolve_backing_path(child, str(tree / "img" / "base.raw")) == str(tree / "img" / "base.raw")


@pytest.mark.parametrize("name", ["../secret.raw", "sub/../../secret.raw", "/etc/hostname"])
def test_outside_directory_is_refused_by_default(tree: Path, name: str):
    with pytest.raises(BackingRefused, match="outside the image's directory"):
        resolve_backing_path(str(tree / "img" / "child.qcow2"), name)


def test_allow_outside(tree: Path):
    child = str(tree / "img" / "child.qcow2")
    assert resolve_backing_path(child, "../secret.raw", allow_outside=True) == str(tree / "img" / "../secret.raw")


def test_symlink_is_resolved_before_the_check(tree: Path):
    os.symlink(tree / "secret.raw", tree / "img" / "innocent.raw")
    with pytest.raises(BackingRefused, match="outside"):
        resolve_backing_path(str(tree / "img" / "child.qcow2"), "innocent.raw")
    os.symlink(tree / "img" / "base.raw", tree / "img" / "alias.raw")
    assert resolve_backing_path(str(tree / "img" / "child.qcow2"), "alias.raw").endswith("alias.raw")


@pytest.mark.parametrize("name,why", [("json:{}", "json:"), ("nbd:localhost:1", "protocol"),
                                      ("file:base.raw", "protocol"), ("", "empty"), ("a\0b", "NUL")])
def test_pseudo_names_refused(tree: Path, name: str, why: str):
    with pytest.raises(BackingRefused, match=why):
        resolve_backing_path(str(tree / "img" / "child.qcow2"), name, allow_outside=True)


def test_special_files_refused_even_when_outside_allowed(tree: Path):
    os.mkfifo(tree / "img" / "pipe")
    child = str(tree / "img" / "child.qcow2")
    with pytest.raises(BackingRefused, match="FIFO"):
        resolve_backing_path(child, "pipe")
    with pytest.raises(BackingRefused, match="device"):
        resolve_backing_path(child, "/dev/null", allow_outside=True)
    with pytest.raises(BackingRefused, match="directory"):
        resolve_backing_path(child, "sub")


def _qcow2_with_backing(d: Path, name: str) -> Path:
    from conftest import require_qemu
    require_qemu()
    base = d / "outside-base.raw"
    base.write_bytes(b"\x11" * 65536)
    top = d / "img" / "top.qcow2"
    top.parent.mkdir(exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", str(top), "64k"],
                   check=True)
    return top


def test_chain_records_refusal_and_cli_option(tmp_path: Path):
    top = _qcow2_with_backing(tmp_path, "../outside-base.raw")
    with imgscope.open(top) as img:
        assert len(img.chain()) == 1 and "outside" in img.backing_error
        img.map_entries()  # reads as if unbacked, no exception
    with imgscope.open(top) as img:
        assert [i.format for i in img.chain(allow_outside=True)] == ["qcow2", "raw"]
    cmd = [sys.executable, "-m", "imgscope.cli"]
    refused = subprocess.run([*cmd, "info", "--chain", "--output", "json", str(top)], capture_output=True, text=True)
    assert refused.returncode == 0 and "imgscope-backing-error" in refused.stdout
    allowed = subprocess.run([*cmd, "--allow-backing-outside", "info", "--chain", "--output", "json", str(top)],
                             capture_output=True, text=True)
    assert allowed.returncode == 0 and "imgscope-backing-error" not in allowed.stdout
    assert '"format": "raw"' in allowed.stdout


def test_process_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    top = _qcow2_with_backing(tmp_path, "../outside-base.raw")
    monkeypatch.setattr(chain, "ALLOW_OUTSIDE", True)
    with imgscope.open(top) as img:
        assert len(img.chain()) == 2
