"""qemu-img's command-line options imgscope accepts too: map --start-offset/--max-length, -U, check -q.

Each is compared with qemu-img on oracle images (JSON and human output, exit code).
"""
from __future__ import annotations

import json
import shutil

import pytest

from imgscope import cli

from oracle import images, qemu
from oracle.qemu_text import JSON_COMMANDS, json_text_diff
from oracle.test_human import ours

#: kinds with extents of every sort: data, zero, backing files, compressed, several layers
KINDS = ["v3", "zero_clusters", "backing_chain", "extended_l2_backing", "compressed_zlib", "fragmented", "qed",
         "vmdk_2gb", "vdi", "vhd"]
#: (start offset, max length) as qemu parses them: unaligned, past the end, suffixes, zero length
WINDOWS = [("1000", "70000"), ("512K", "1M"), ("65535", None), ("0", "0"), ("3", "1"), ("1G", None), ("64M", "4k"),
           ("4194303", "2")]


@pytest.mark.parametrize("kind", KINDS)
def test_map_window_equals_qemu(make_image, capsys, kind):
    path = make_image(kind).absolute()
    fmt = images.FORMATS[kind]
    for start, length in WINDOWS:
        opts = ["--start-offset", start] + (["--max-length", length] if length is not None else [])
        for output in ("json", "human"):
            theirs = qemu.text("map", path, fmt, "-U", f"--output={output}", *opts)
            out, err, rc = ours(capsys, "map", "-U", "-f", fmt, "--output", output, *opts, str(path))
            assert (rc, out) == (theirs.returncode, theirs.stdout), (start, length, output)


def test_map_rejects_what_qemu_rejects(make_image, capsys):
    path = make_image("v3").absolute()
    for bad in ("-1", "12Q", "", "1.5M"):
        assert qemu.text("map", path, "qcow2", f"--start-offset={bad}").returncode != 0
        with pytest.raises(SystemExit) as e:
            cli.main(["map", f"--start-offset={bad}", str(path)])
        assert e.value.code != 0


@pytest.mark.parametrize("kind", ["v3", "refcount_1_leak", "lazy_crash", "vhd"])
def test_check_quiet_and_force_share(make_image, capsys, kind):
    """-q drops the summary (stdout) only; -U is accepted for reading, refused with -r (qemu's rule)."""
    path = make_image(kind).absolute()
    fmt = images.FORMATS[kind]
    theirs = qemu.text("check", path, fmt, "-q", "-U")
    out, err, rc = ours(capsys, "check", "-q", "-U", "--qemu-messages", "-f", fmt, str(path))
    assert theirs.stdout == out == "" and rc == theirs.returncode
    assert err.replace("imgscope: ", "qemu-img: ") == theirs.stderr


def test_force_share_with_repair_is_refused(make_image, capsys, tmp_path):
    path = shutil.copy(make_image("refcount_1_leak"), tmp_path / "t.qcow2")
    before = path.read_bytes()
    theirs = qemu.text("check", path, "qcow2", "-U", "-r", "leaks")
    out, err, rc = ours(capsys, "check", "-U", "-r", "leaks", str(path))
    assert rc == theirs.returncode == 1
    assert "force-share=on can only be used with read-only images" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", sorted(images.KINDS))
def test_json_text_is_byte_identical(make_image, capsys, kind):
    """info, info --backing-chain and check print qemu-img's JSON text itself: same keys in qemu's
    order, same values, same indentation (imgscope-only keys only when they say something)."""
    path = make_image(kind).absolute()
    fmt = images.FORMATS[kind]
    for name, (qargs, iargs) in JSON_COMMANDS.items():
        secret = images.SECRETS.get(kind) if qargs[0] == "check" else None
        theirs = qemu.text(qargs[0], path, fmt, "-U", *qargs[1:], secret=secret)
        out, _, rc = ours(capsys, *iargs, "-f", fmt, str(path))
        # with a secret qemu-img needs --image-opts for the key, and then names the image by its options
        diff = json_text_diff((theirs.stdout, theirs.returncode), (out, rc), str(path) if secret else None)
        assert diff is None, f"{name}: {diff}"


@pytest.mark.parametrize("kind", ["vhd", "qcow1"])
def test_check_json_without_a_check_says_why(make_image, capsys, kind):
    """qemu-img check --output=json prints no JSON for a format without a check (exit 63) but says so on
    stderr; imgscope printed nothing at all."""
    path = make_image(kind).absolute()
    fmt = images.FORMATS[kind]
    theirs = qemu.text("check", path, fmt, "--output=json")
    out, err, rc = ours(capsys, "check", "-f", fmt, "--output", "json", str(path))
    assert (rc, out) == (theirs.returncode, theirs.stdout) == (63, "")
    assert err.replace("imgscope: ", "qemu-img: ") == theirs.stderr


def test_check_json_of_an_image_qemu_refuses_says_why(make_image, capsys, tmp_path):
    """A dynamic VHD whose footer checksum is wrong: qemu refuses to open it (exit 1, the reason on
    stderr, no JSON), and so does imgscope's JSON check (it printed nothing)."""
    from imgscope.formats.vpc import layout as PL
    path = shutil.copy(make_image("vhd"), tmp_path / "t.vhd")
    raw = bytearray(path.read_bytes())
    for footer in (0, len(raw) - PL.FOOTER_SIZE):  # the copy at 0 and the trailing footer
        at = footer + PL.FOOTER_CHECKSUM_AT
        raw[at:at + 4] = (int.from_bytes(raw[at:at + 4], "big") ^ 1).to_bytes(4, "big")
    path.write_bytes(bytes(raw))
    theirs = qemu.text("check", path, "vpc", "--output=json")
    out, err, rc = ours(capsys, "check", "-f", "vpc", "--output", "json", str(path))
    assert (rc, out) == (theirs.returncode, theirs.stdout)
    assert rc == 1 and err.replace("imgscope: ", "qemu-img: ") == theirs.stderr != ""
    # info still shows the image, with qemu's reason for refusing it (qemu-img info fails)
    refused = qemu.text("info", path, "vpc", "--output=json")
    out, err, rc = ours(capsys, "info", "-f", "vpc", "--output", "json", str(path))
    assert refused.returncode == 1 and rc == 0
    assert refused.stderr.strip().endswith(": " + json.loads(out)["imgscope-qemu-refuses"])


def test_check_json_that_failed_says_so(make_image, capsys, tmp_path):
    """An unaligned refcount block: qemu-img check prints its JSON (check-errors) and, on stderr,
    "Check failed" (exit 1); imgscope's JSON check printed nothing on stderr."""
    from imgscope.formats.qcow2 import layout as L
    path = shutil.copy(make_image("v3"), tmp_path / "t.qcow2")
    raw = bytearray(path.read_bytes())
    rt = L.Header.parse(bytes(raw[:4096])).refcount_table_offset
    raw[rt:rt + 8] = (int.from_bytes(raw[rt:rt + 8], "big") + 512).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    theirs = qemu.text("check", path, "qcow2", "--output=json")
    out, err, rc = ours(capsys, "check", "-f", "qcow2", "--output", "json", str(path))
    assert (rc, out) == (theirs.returncode, theirs.stdout) and rc == 1 and json.loads(out)["check-errors"] > 0
    assert err.splitlines()[-1].replace("imgscope: ", "qemu-img: ") == theirs.stderr.splitlines()[-1] \
        == "qemu-img: Check failed"


@pytest.mark.parametrize("field,value,info_refused", [
    ("compression_type", 254, True),                      # qemu: unknown compression type
    ("incompatible_features", 1 << 3, True),              # compression bit with zlib
    ("autoclear_features", 1 << 1, False),                # data-file-raw without a data file
    ("incompatible_features", 1 << 2, False),             # an external data file nobody names
])
def test_check_refuses_what_qemu_will_not_open(make_image, capsys, tmp_path, field, value, info_refused):
    """qcow2_do_open's refusals the header decides: check exits 1 with qemu's reason (it counted these
    images); info shows the image, noting the reason where qemu-img info refuses it too."""
    from imgscope.formats.qcow2 import layout as L
    path = shutil.copy(make_image("v3"), tmp_path / "t.qcow2")
    raw = bytearray(path.read_bytes())
    h = L.Header.parse(bytes(raw[:4096]))
    h[field] = value if field == "compression_type" else h[field] | value
    head = L.Header.build(h)
    raw[:len(head)] = head
    path.write_bytes(bytes(raw))
    theirs = qemu.text("check", path, "qcow2", "--output=json")
    out, err, rc = ours(capsys, "check", "-f", "qcow2", "--output", "json", str(path))
    assert (rc, out) == (theirs.returncode, theirs.stdout) and rc == 1
    assert err.replace("imgscope: ", "qemu-img: ") == theirs.stderr
    qinfo = qemu.text("info", path, "qcow2", "--output=json")
    out, err, rc = ours(capsys, "info", "-f", "qcow2", "--output", "json", str(path))
    assert rc == 0 and (qinfo.returncode == 1) == info_refused == ("imgscope-qemu-refuses" in json.loads(out))
