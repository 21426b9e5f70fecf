"""The malformed-image corpus (generate.py): each defect gives exactly the answer it documents.

Also the CLI contract for hostile paths: a 0-byte file, a 1-byte file (with or
without a forced format), a FIFO and /dev/zero each give exit 1 and one line on stderr,
never a traceback, and nothing blocks.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import imgscope
import imgscope.catalogue
from imgscope.formats.registry import DRIVERS
from conftest import require_qemu

from .generate import Defect, build, corpus

DEFECTS = corpus()
CALLS = ("info_dict", "mapping", "map_entries", "check")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_qemu()
    return tmp_path_factory.mktemp("bases")


def first_error(path: Path, fmt: str | None = None) -> Exception | None:
    """Open (as ``fmt``, else probed) and run the main calls; the first ImgscopeError, or None."""
    try:
        with imgscope.open(path, fmt) as img:
            img.info_dict()
            img.mapping()
            img.map_entries()
            img.check()
    except imgscope.ImgscopeError as exc:
        return exc
    return None


def test_corpus_is_large_and_distinct():
    names = [d.name for d in DEFECTS]
    assert len(names) == len(set(names))
    assert len(DEFECTS) >= 60
    for d in DEFECTS:
        assert sum(x is not None for x in (d.error, d.limit, d.finding, d.backing)) == 1, d.name


def _forced(defect: Defect) -> str | None:
    """The format to open a defect as: probing finds a fixed VHD's footer-only layout as raw (qemu's rule)."""
    return "vpc" if defect.base == "vpc-fixed" else None


@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_defect(defect: Defect, cache: Path, tmp_path: Path):
    path = build(defect, cache, tmp_path / "img")
    if defect.error or defect.limit:
        exc = first_error(path, _forced(defect))
        assert isinstance(exc, imgscope.FormatError), f"expected a FormatError, got {exc!r}"
        assert "\n" not in str(exc)
        if defect.limit:
            assert isinstance(exc, imgscope.LimitError) and exc.limit == defect.limit, exc
        else:
            assert exc.structure.startswith(defect.error), exc
        return
    with imgscope.open(path, _forced(defect)) as img:
        if defect.backing:
            chain = img.chain()
            assert len(chain) == 1 or chain[-1].backing_error, chain
            err = chain[-1].backing_error
            assert err and defect.backing in err, err
            img.map_entries()  # the image itself stays readable
            return
        res = img.check()
        assert defect.finding in " ".join(res.summary()), res.summary()


@pytest.mark.parametrize("defect", [d for d in DEFECTS if d.limit], ids=lambda d: d.name)
def test_limit_can_be_raised(defect: Defect, cache: Path, tmp_path: Path):
    """Raising the named limit moves past it (to another error or success), proving the limit was the stop."""
    path = build(defect, cache, tmp_path / "img")
    with imgscope.limits.override(**{defect.limit: 2**64}):
        exc = first_error(path)
    assert not (isinstance(exc, imgscope.LimitError) and exc.limit == defect.limit)


# ---------------------------------------------------------------------------- CLI on hostile paths

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgscope.cli", *args], capture_output=True, text=True, timeout=60)


def _one_line_error(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgscope: "), p.stderr


@pytest.mark.parametrize("fmt", sorted(DRIVERS.keys() - {"raw"}))
@pytest.mark.parametrize("size", [0, 1])
def test_cli_tiny_file_forced_format(tmp_path: Path, size: int, fmt: str):
    path = tmp_path / "tiny.img"
    path.write_bytes(b"\x01" * size)
    _one_line_error(_cli("info", "-f", fmt, str(path)))


@pytest.mark.parametrize("size", [0, 1])
def test_cli_tiny_file_without_format(tmp_path: Path, size: int):
    """Without -f, a 0- or 1-byte file is refused (qemu-img calls it raw; `-f raw` does too: test_tiny_files)."""
    path = tmp_path / "tiny.img"
    path.write_bytes(b"\x01" * size)
    p = _cli("info", str(path))
    _one_line_error(p)
    assert f"{path}: {size}-byte file" in p.stderr and "-f raw" in p.stderr


@pytest.mark.parametrize("command", ["info", "check", "map"])
def test_cli_fifo_never_blocks(tmp_path: Path, command: str):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _one_line_error(_cli(command, str(fifo)))  # a blocking open would hit the 60 s timeout


@pytest.mark.parametrize("command", ["info", "check", "map"])
def test_cli_dev_zero(command: str):
    _one_line_error(_cli(command, "/dev/zero"))


def test_cli_directory(tmp_path: Path):
    _one_line_error(_cli("info", str(tmp_path)))


def test_fifo_open_is_nonblocking(tmp_path: Path):
    """Even if a FIFO replaces the file between stat and open, Source's open returns at once and refuses it."""
    from imgscope.io import _open_regular
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(imgscope.ImgscopeError, match="special file"):
        _open_regular(str(fifo), os.O_RDONLY)


QEMU_COUNTED = [d for d in DEFECTS if d.fmt == "qcow2" and d.finding
                and imgscope.catalogue.CATALOGUE[d.finding].counter is not None]


@pytest.mark.parametrize("defect", QEMU_COUNTED, ids=lambda d: d.name)
def test_qemu_counts_the_same(defect: Defect, cache: Path, tmp_path: Path):
    """For findings qemu-img check counts too, imgscope's qemu-compatible numbers equal the oracle's."""
    import json
    path = build(defect, cache, tmp_path / "img")
    q = subprocess.run(["qemu-img", "check", "--output=json", "-f", "qcow2", str(path)], capture_output=True,
                       text=True)
    with imgscope.open(path) as img:
        res = img.check()
    assert res.exit_code() == q.returncode, (res.qemu_json(), q.stdout, q.stderr)
    if q.stdout.strip():
        theirs = json.loads(q.stdout)
        ours = res.qemu_json()
        for key in ("corruptions", "leaks", "check-errors"):
            assert ours.get(key, 0) == theirs.get(key, 0), (key, ours, theirs)
