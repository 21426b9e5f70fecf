"""Files smaller than one sector (issue #6): refused unless they carry a magic or `-f raw` is given.

qemu-img probes a 0- or 1-byte file as raw; imgscope says instead that no format matches, names
the file and its size and points at `-f raw`, which reads it exactly as qemu-img does.  A short
file that carries a format's magic is that format and fails (or opens) as that format; a backing
file named without a format is still probed as qemu probes it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import imgscope
from imgscope import cli
from imgscope.detect import MIN_RAW_SIZE
from imgscope.formats.qcow2 import layout as L
from imgscope.scan import scan
from oracle.qemu import check_json, info_json, map_json, qemu_img
from unit.damage import Qcow2Copy

from conftest import require_qemu

SIZES = [0, 1, MIN_RAW_SIZE - 1]
COMMANDS = ["info", "map", "snapshots", "check", "report"]


def _tiny(directory: Path, size: int, name: str = "tiny.img") -> Path:
    path = directory / name
    path.write_bytes(bytes(range(1, 256)) * 2 + b"\x01" * 2)  # no magic anywhere, 512 bytes
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def _refusal(path: Path, size: int) -> str:
    return f"{path}: {size}-byte file matches no image format"


@pytest.mark.parametrize("size", SIZES)
def test_open_refuses_tiny_file(tmp_path: Path, size: int):
    path = _tiny(tmp_path, size)
    with pytest.raises(imgscope.UnsupportedFormat) as info:
        imgscope.open(path)
    assert str(info.value).startswith(_refusal(path, size)) and "-f raw" in str(info.value)
    with imgscope.open(path, "raw") as img:
        assert img.format == "raw"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("size", SIZES)
def test_every_command_gives_one_clear_line(tmp_path: Path, size: int, command: str,
                                            capsys: pytest.CaptureFixture):
    path = _tiny(tmp_path, size)
    rc = cli.main([command, str(path)])
    out = capsys.readouterr()
    assert rc == 1 and out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0] == f"imgscope: {_refusal(path, size)} and is smaller than one " \
                                           f"512-byte sector; use -f raw (format='raw') to read it as raw anyway"


@pytest.mark.parametrize("size", SIZES)
def test_forced_raw_reads_tiny_file_like_qemu(tmp_path: Path, size: int, capsys: pytest.CaptureFixture):
    require_qemu()
    path = _tiny(tmp_path, size)
    for flag in ("-f", "--format"):
        assert cli.main(["info", flag, "raw", "--output", "json", str(path)]) == 0
        ours, theirs = json.loads(capsys.readouterr().out), info_json(path)
        assert (ours["format"], ours["virtual-size"]) == (theirs["format"], theirs["virtual-size"]) == \
            ("raw", -(-size // 512) * 512)
    assert cli.main(["map", "-f", "raw", "--output", "json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == map_json(path)
    assert cli.main(["check", "-f", "raw", "--output", "json", str(path)]) == check_json(path)[0] == 63
    capsys.readouterr()


def test_one_sector_without_magic_is_raw_like_qemu(tmp_path: Path):
    require_qemu()
    path = _tiny(tmp_path, MIN_RAW_SIZE)
    with imgscope.open(path) as img:
        assert img.format == info_json(path)["format"] == "raw"
        assert img.map_entries() == map_json(path)


def test_short_files_with_a_magic_stay_their_format(seed_images: dict[str, list[Path]], tmp_path: Path):
    """qemu-made images cut to less than a sector still carry their magic: they are that format."""
    seen = set()
    for fmt, paths in seed_images.items():
        for src in paths:
            if fmt == "raw" or src.name == "pf.vhd":  # raw has no magic; a fixed VHD's footer is at its end
                continue
            for size in (100, MIN_RAW_SIZE - 1):
                path = tmp_path / f"{size}-{src.name}"
                path.write_bytes(src.read_bytes()[:size])
                try:
                    with imgscope.open(path) as img:
                        assert img.format == fmt, (path, img.format)
                except imgscope.UnsupportedFormat as exc:
                    pytest.fail(f"{path}: {exc}")
                except imgscope.FormatError as exc:
                    assert exc.structure.startswith("vhd" if fmt == "vpc" else fmt), (path, exc)
                seen.add(fmt)
    assert seen >= {"qcow2", "qcow", "qed", "vdi", "vpc", "vhdx", "vmdk"}


def test_small_vmdk_descriptor_is_vmdk(tmp_path: Path):
    """A monolithicFlat descriptor is a text file of a few hundred bytes: its text, not its size, decides."""
    require_qemu()
    path = tmp_path / "flat.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", path, "1M")
    assert path.stat().st_size < MIN_RAW_SIZE
    with imgscope.open(path) as img:
        assert img.format == info_json(path)["format"] == "vmdk"
        assert img.map_entries() == map_json(path)


def test_tiny_backing_file_without_format_is_probed_as_raw_like_qemu(tmp_path: Path):
    """A backing file the image names without a format is probed as qemu probes it (raw when tiny)."""
    require_qemu()
    _tiny(tmp_path, 1, "base.raw")
    made = tmp_path / "made.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", made, "64k")
    top = Qcow2Copy(made, tmp_path / "top.qcow2")
    [pos] = [off for off, eh in top.extensions() if eh.type == L.EXT_BACKING_FORMAT]
    top.set_extension(pos, type=0x6D697373)  # an unknown extension now: no backing format stated
    assert "backing-filename-format" not in info_json(top.path)
    with imgscope.open(top.path) as img:
        chain = img.chain()
        assert [i.format for i in chain] == ["qcow2", "raw"] and not img.backing_error
        assert img.map_entries() == map_json(top.path)


def test_scan_records_the_error_per_image(tmp_path: Path):
    require_qemu()
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", fleet / "good.qcow2", "1M")
    tiny = _tiny(fleet, 1, "tiny.img")
    df = scan([str(fleet)], jobs=1)
    rows = {Path(p).name: e for p, e in zip(df["path"], df["error"])}
    assert set(rows) == {"good.qcow2", "tiny.img"}
    assert pd.isna(rows["good.qcow2"])
    assert rows["tiny.img"].startswith(f"UnsupportedFormat: {_refusal(tiny, 1)}")


def test_cli_scan_and_tree_keep_going(tmp_path: Path, capsys: pytest.CaptureFixture):
    require_qemu()
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", fleet / "good.qcow2", "1M")
    tiny = _tiny(fleet, 0, "empty.img")
    assert cli.main(["scan", "--no-check", "-j", "1", "--output", "json", str(fleet)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["error"] is None for r in rows] == [False, True]  # sorted: empty.img, good.qcow2
    assert _refusal(tiny, 0) in rows[0]["error"]
    assert cli.main(["tree", "--output", "json", str(fleet)]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert [n["file"] for n in tree["nodes"]] and all("empty.img" not in n["file"] for n in tree["nodes"])
    assert any(_refusal(tiny, 0) in note for note in tree["notes"]), tree["notes"]
