"""Damaged qcow2 images: imgscope fails cleanly (FormatError naming structure and offset) or,
when only a table is damaged, opens the image and reports what qemu-img check reports."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import imgscope
from imgscope import cli
from oracle.qemu import check_json, info_json

from .damage import HEADER_DAMAGES, NOT_DETECTED, TABLE_DAMAGES, Qcow2Copy, exercise

IMGSCOPE = Path(sys.executable).with_name("imgscope")
PEAK_BYTES = 64 << 20  # no damage may make imgscope allocate more than this


def _damaged(base: Path, tmp_path: Path, name: str) -> tuple[Path, str, int | None]:
    img = Qcow2Copy(base, tmp_path / f"{name}.qcow2")
    structure, offset = HEADER_DAMAGES[name](img)
    return img.path, structure, offset


def _fmt(name: str) -> str | None:
    return "qcow2" if name in NOT_DETECTED else None


@pytest.fixture
def non_regular(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    kind = request.param
    if kind == "fifo":
        p = tmp_path / "fifo"
        os.mkfifo(p)
        return p
    if kind == "directory":
        return tmp_path
    p = Path("/dev/zero")
    assert stat.S_ISCHR(p.stat().st_mode)
    return p


NON_REGULAR = ["fifo", "directory", "dev_zero"]


# ---------------------------------------------------------------- library

@pytest.mark.parametrize("name", sorted(HEADER_DAMAGES))
def test_header_damage_is_a_format_error(base_qcow2: Path, tmp_path: Path, name: str) -> None:
    path, structure, offset = _damaged(base_qcow2, tmp_path, name)
    tracemalloc.start()
    try:
        with pytest.raises(imgscope.FormatError) as info:
            exercise(path, _fmt(name))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert (err.structure, err.offset) == (structure, offset), str(err)
    assert str(err).startswith(structure)
    assert peak < PEAK_BYTES, f"{name}: {peak} bytes allocated"


@pytest.mark.parametrize("name", sorted(NOT_DETECTED))
def test_tiny_files_need_format_raw(base_qcow2: Path, tmp_path: Path, name: str) -> None:
    """Without -f, a file too short for any magic is refused (qemu-img probes it as raw; format="raw" reads it)."""
    path, _, _ = _damaged(base_qcow2, tmp_path, name)
    with pytest.raises(imgscope.UnsupportedFormat, match=re.escape(f"{path}: {path.stat().st_size}-byte file")):
        imgscope.open(path)
    with imgscope.open(path, "raw") as img:
        assert img.format == info_json(path)["format"] == "raw"


@pytest.mark.parametrize("non_regular", NON_REGULAR, indirect=True)
def test_non_regular_files_are_refused(non_regular: Path) -> None:
    with pytest.raises(imgscope.ImgscopeError) as info:
        imgscope.open(non_regular)
    assert not isinstance(info.value, imgscope.FormatError)
    assert str(non_regular) in str(info.value)
    with pytest.raises(imgscope.ImgscopeError):
        imgscope.open(non_regular, "qcow2")


# ---------------------------------------------------------------- command line

def _assert_one_error_line(rc: int, stderr: str, expect: str) -> None:
    lines = stderr.splitlines()
    assert rc == 1
    assert len(lines) == 1, stderr
    assert lines[0].startswith("imgscope: ") and expect in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name", sorted(HEADER_DAMAGES))
def test_cli_reports_one_line(base_qcow2: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture) -> None:
    path, structure, offset = _damaged(base_qcow2, tmp_path, name)
    fmt = ["-f", _fmt(name)] if _fmt(name) else []
    for command in ("info", "map", "check", "snapshots"):
        rc = cli.main([command, *fmt, str(path)])
        out = capsys.readouterr()
        where = f"{structure} at offset {offset:#x}" if offset is not None else structure
        _assert_one_error_line(rc, out.err, where)
        assert out.out == ""


@pytest.mark.parametrize("non_regular", NON_REGULAR, indirect=True)
def test_cli_non_regular(non_regular: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["info", str(non_regular)])
    _assert_one_error_line(rc, capsys.readouterr().err, str(non_regular))


def test_cli_debug_raises(base_qcow2: Path, tmp_path: Path) -> None:
    path, structure, _ = _damaged(base_qcow2, tmp_path, "version_4")
    with pytest.raises(imgscope.FormatError, match=structure):
        cli.main(["--debug", "info", str(path)])


@pytest.mark.parametrize("name", ["truncated_header", "l1_size_2^31-1", "snapshot_extra_data_5000"])
def test_cli_subprocess(base_qcow2: Path, tmp_path: Path, name: str) -> None:
    path, structure, _ = _damaged(base_qcow2, tmp_path, name)
    proc = subprocess.run([IMGSCOPE, "info", path], capture_output=True, text=True, timeout=60)
    _assert_one_error_line(proc.returncode, proc.stderr, structure)
    proc = subprocess.run([IMGSCOPE, "--debug", "info", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("imgscope.errors.") and structure in last, last


def test_cli_subprocess_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([IMGSCOPE, "info", fifo], capture_output=True, text=True, timeout=60)
    _assert_one_error_line(proc.returncode, proc.stderr, str(fifo))


# ---------------------------------------------------------------- damage inside tables

@pytest.mark.parametrize("name", sorted(TABLE_DAMAGES))
def test_table_damage_is_reported_like_qemu(base_qcow2: Path, tmp_path: Path, name: str, backend: str) -> None:
    img = Qcow2Copy(base_qcow2, tmp_path / f"{name}.qcow2")
    problem = TABLE_DAMAGES[name](img)
    exercise(img.path)
    with imgscope.open(img.path) as opened:
        res = opened.check()
    assert problem in res.summary(), res.summary()
    rc, report, _ = check_json(img.path)
    assert res.exit_code() == rc
    if report is not None:  # qemu prints no JSON when the check ends in an internal error
        mine = res.qemu_json()
        for key in ("check-errors", "corruptions", "leaks", "image-end-offset", "total-clusters",
                    "allocated-clusters", "fragmented-clusters", "compressed-clusters"):
            assert mine.get(key, 0) == report.get(key, 0), (key, mine, report)
