"""imgscope's human output is qemu-img 7.2's, byte for byte: stdout and stderr apart, and the exit code.

For every oracle image: ``info``, ``info --backing-chain``, ``map``, ``check`` and ``snapshot -l``
(``imgscope snapshots``); ``check -r`` on copies; ``check`` on the malformed corpus's damaged images.
Only two things may differ, and each is checked rather than ignored:

* an error line starts with the program's name: ``qemu-img: `` there, ``imgscope: `` here;
* after qemu's stdout imgscope may print its own block (findings and facts qemu-img does not show),
  and does exactly when it has such findings or facts.

"disk size" is not masked: imgscope computes it from st_blocks as qemu does.  Known differences are
listed in ``KNOWN`` as strict xfails (each one fails the suite the day it is fixed).
"""
from __future__ import annotations

import shutil

import pytest

import imgscope
from imgscope import cli
from imgscope.catalogue import QEMU_TEXT
from imgscope.check import IMGSCOPE_ONLY
from imgscope.commands.check import print_human
from imgscope.repair import run_repair

from oracle import images, qemu
from oracle.qemu_text import COMMANDS, INFO_ONLY, text_diff

ALL = sorted(images.KINDS)


def ours(capsys, *argv: str) -> tuple[str, str, int]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return out, err, rc


def assert_same(theirs, out: str, err: str, rc: int, own_expected: bool, marker: str) -> None:
    """imgscope's (out, err, rc) equals qemu-img's CompletedProcess up to the two allowed differences."""
    diff = text_diff((theirs.stdout, theirs.stderr, theirs.returncode), (out, err, rc), marker, own_expected)
    assert diff is None, diff


def _secret(kind: str, command: str) -> str | None:
    """qemu-img needs the LUKS secret to open an encrypted image for anything but info."""
    return images.SECRETS.get(kind) if command in ("map", "check", "snapshot") else None


def _own_info(path, fmt: str, chain: bool) -> bool:
    with imgscope.open(path, fmt) as img:
        imgs = img.chain() if chain else [img]
        infos = [i.info_dict() for i in imgs]
        broken = chain and imgs[-1].backing_error
    return bool(broken) or any(k.startswith("imgscope-") and v not in (None, False)
                               for i in infos for k, v in i.items())


def _own_check(res) -> bool:
    return any(b["problem"] not in QEMU_TEXT for b in res.batches) or bool(res.repaired and res.notes)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", ALL)
def test_human_equals_qemu(make_image, capsys, kind, command):
    path = make_image(kind).absolute()
    fmt = images.FORMATS[kind]
    qargs, iargs = COMMANDS[command]
    theirs = qemu.text(qargs[0], path, fmt, *qargs[1:], secret=_secret(kind, command))
    out, err, rc = ours(capsys, *iargs, str(path), *([] if command == "snapshot" else ["-f", fmt]))
    if command in ("info", "chain"):
        own, marker = _own_info(path, fmt, command == "chain"), INFO_ONLY
    elif command == "check":
        with imgscope.open(path, fmt) as img:
            own, marker = _own_check(img.check()), IMGSCOPE_ONLY
    else:
        own, marker = False, IMGSCOPE_ONLY
    assert_same(theirs, out, err, rc, own, marker)


REPAIRS = [("refcount_1_leak", "leaks"), ("refcount_1_leak", "all"), ("lazy_crash", "leaks"), ("lazy_crash", "all"),
           ("lazy_crash_snapshots", "all"), ("qed_crash", "leaks"), ("v3", "all"), ("vdi", "all"), ("vhd", "all")]
#: -r leaks on an image that needs a rebuild: qemu's fatal error is "Check failed: Input/output error",
#: imgscope's repair reports its own reason
REBUILD_REFUSED = pytest.mark.xfail(strict=True, reason="repair error text for a refused rebuild")


@pytest.mark.parametrize("kind,mode", [pytest.param(k, m, marks=REBUILD_REFUSED if (k, m) == ("lazy_crash", "leaks")
                                                          else ())
                                       for k, m in REPAIRS])
def test_repair_human_equals_qemu(make_image, capsys, tmp_path, kind, mode):
    src = make_image(kind)
    fmt = images.FORMATS[kind]
    copies = []
    for who in ("qemu", "imgscope"):  # the same file name: both tools print it
        (tmp_path / who).mkdir()
        copies.append(shutil.copy(src, tmp_path / who / src.name))
    theirs = qemu.text("check", copies[0], fmt, "-r", mode)
    for stream in ("stdout", "stderr"):
        setattr(theirs, stream, getattr(theirs, stream).replace(str(copies[0]), str(copies[1])))
    capsys.readouterr()
    res = run_repair(str(copies[1]), mode, fmt=fmt)  # what `imgscope check -r MODE` runs and prints
    print_human(res, mode, qemu_messages=True)
    out, err = capsys.readouterr()
    assert_same(theirs, out, err, res.exit_code(), _own_check(res), IMGSCOPE_ONLY)


# ---------------------------------------------------------------- damaged images (tests/malformed, tests/unit)

def _damaged() -> list[tuple[str, str, object]]:
    """(name, qemu format, build(cache, dest) -> path): the corpus defects check() reports, and the
    table damages of tests/unit/damage.py."""
    from malformed.generate import build, corpus
    from unit.damage import TABLE_DAMAGES, Qcow2Copy, build_base
    out = [(d.name, d.fmt, lambda cache, dest, d=d: build(d, cache, dest)) for d in corpus() if d.finding]

    def table(damage):
        def make(cache, dest):
            base = cache / "table-base" / "base.qcow2"
            if not base.exists():
                base.parent.mkdir(exist_ok=True)
                build_base(base.parent)
            dest.mkdir(parents=True, exist_ok=True)
            damage(Qcow2Copy(base, dest / "t.qcow2"))
            return dest / "t.qcow2"
        return make
    return out + [(f"table-{name}", "qcow2", table(fn)) for name, fn in TABLE_DAMAGES.items()]


#: what imgscope does not reproduce yet, and why
KNOWN = {
    "hdr-bitmaps-autoclear-clear": "qemu's open-time bitmap warning lines",
    "l2-shared-refcount-overflow": "overflow findings are rows per saturated cluster, not qemu's events",
    "table-refblock_unaligned": "qemu's 'Image is corrupt' event line",
}
DAMAGED = _damaged()


@pytest.fixture(scope="module")
def damaged_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("damaged-bases")


@pytest.mark.parametrize("name,fmt,make", [
    pytest.param(n, f, m, id=n, marks=pytest.mark.xfail(strict=True, reason=KNOWN[n]) if n in KNOWN else ())
    for n, f, m in DAMAGED])
def test_check_human_on_damaged(oracle_dir, damaged_cache, capsys, tmp_path, name, fmt, make):
    path = make(damaged_cache, tmp_path / name).absolute()
    theirs = qemu.text("check", path, fmt, "-U")
    out, err, rc = ours(capsys, "check", "--qemu-messages", "-f", fmt, str(path))
    with imgscope.open(path, fmt) as img:
        own = _own_check(img.check())
    assert_same(theirs, out, err, rc, own, IMGSCOPE_ONLY)


def test_check_default_groups_findings(make_image, capsys, tmp_path):
    """Without --qemu-messages the thousand lines qemu prints for a crashed lazy-refcounts image become one
    line per class with its count (and the dirty-bit note); stdout is still qemu's summary, byte for byte."""
    path = make_image("lazy_crash").absolute()
    theirs = qemu.text("check", path, "qcow2", "-U")
    per_cluster = theirs.stderr.splitlines()
    out, err, rc = ours(capsys, "check", "-f", "qcow2", str(path))
    assert rc == theirs.returncode == 2 and out == theirs.stdout
    with imgscope.open(path, "qcow2") as img:
        res = img.check()
    counts = {}
    for b in res.batches:
        counts[b["problem"]] = counts.get(b["problem"], 0) + b["n"]
    lines = err.splitlines()
    assert lines[0].startswith("findings by class")
    for pid, n in counts.items():  # one line per class, with qemu's count of lines for it
        assert sum(1 for ln in lines if ln.split()[:1] == [pid] and f" {n} x " in ln) == 1
    assert len(lines) < len(per_cluster)
    assert any("rebuilds the refcounts" in ln for ln in lines)
    leaked = sum(1 for ln in per_cluster if ln.startswith(("ERROR cluster", "Leaked cluster")))
    assert leaked == sum(n for pid, n in counts.items() if pid.startswith("Q2-RC"))


def test_check_human_vmdk_grain_past_eof(make_image, capsys, tmp_path):
    """qemu's VMDK check stops at the first grain past EOF: one ERROR line, then "Check failed" (exit 1)."""
    path = shutil.copy(make_image("vmdk_sparse"), tmp_path / "t.vmdk")
    with open(path, "r+b") as f:  # cut the last grain (written at 32 MiB) off the end of the file
        f.truncate(f.seek(0, 2) - 70000)
    theirs = qemu.text("check", path, "vmdk")
    assert "points after EOF" in theirs.stderr
    out, err, rc = ours(capsys, "check", "--qemu-messages", "-f", "vmdk", str(path))
    with imgscope.open(path, "vmdk") as img:
        own = _own_check(img.check())
    assert_same(theirs, out, err, rc, own, IMGSCOPE_ONLY)


def test_snapshot_tags_padded_in_bytes(make_image, capsys, tmp_path):
    """qemu pads TAG to 16 bytes of UTF-8 (C's %-16s) and lets longer tags push the columns right."""
    path = shutil.copy(make_image("snapshots_1"), tmp_path / "t.qcow2")
    for tag in ("café-ünï", "a-tag-longer-than-sixteen-bytes"):
        qemu.qemu_img("snapshot", "-c", tag, path)
    for qargs, iargs in (COMMANDS["snapshot"], COMMANDS["info"]):
        theirs = qemu.text(qargs[0], path, "qcow2", *qargs[1:])
        assert "café-ünï" in theirs.stdout
        assert_same(theirs, *ours(capsys, *iargs, str(path)), False, IMGSCOPE_ONLY)
