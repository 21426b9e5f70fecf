"""Crash safety, undo log and locking of imgscope repair."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_qemu
from repair_helpers import (ENV, add_refcount, copy, dirty, guest, imgscope_cli, l2_entry, qemu_check, qemu_io, run,
                            sha256, snapshot, without_name)

import imgscope.repair as repair_mod
from imgscope.errors import ImageInUse, RepairError
from imgscope.formats.qcow2 import layout as L
from imgscope.lock import exclusive_for_repair, probe
from imgscope.repair import run_repair

pytestmark = pytest.mark.usefixtures("qemu")


@pytest.fixture(scope="module")
def qemu() -> None:
    require_qemu()


def _shared_low(p: Path) -> Path:
    """Snapshot + rewrites, then a shared cluster's refcount lowered and another raised (in-place fix)."""
    run("qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
    qemu_io(p, "write -P 1 0 128k", "write -c -P 2 1M 64k")
    snapshot(p, "s1")
    qemu_io(p, "write -P 9 0 4k", "write -P 8 3M 64k")
    add_refcount(p, l2_entry(p, 64 << 10)[1] & L.L2E_OFFSET_MASK, -1)
    add_refcount(p, l2_entry(p, 3 << 20)[1] & L.L2E_OFFSET_MASK, +1)
    return p


CRASH_CASES = {"dirty-snapshot": (lambda p: dirty(p, snap=True), []),
               "shared-low-in-place": (_shared_low, []),
               "shared-low-rebuild": (_shared_low, ["--rebuild"])}


@pytest.mark.parametrize("case", sorted(CRASH_CASES))
def test_crash_after_every_write(tmp_path: Path, case: str) -> None:
    build, opts = CRASH_CASES[case]
    orig = build(tmp_path / "orig.qcow2")
    content = guest(orig, tmp_path)
    nwrites = len(run_repair(str(orig), "all", dry_run=True, rebuild=bool(opts)).plan.writes)
    assert nwrites >= 1
    for n in range(1, nwrites + 1):
        img = copy(orig, tmp_path / f"kill{n}.qcow2")
        proc = imgscope_cli("repair", img, *opts, env={**ENV, repair_mod.KILL_ENV: str(n)})
        assert proc.returncode == 137, proc.stderr
        rc, report = qemu_check(img)
        if rc in (0, 3) and not report.get("corruptions"):
            assert guest(img, tmp_path) == content, f"crash after write {n}: guest data changed"
            continue
        res = run_repair(str(img), "all")
        assert res.exit_code() == 0, f"rerun after a crash after write {n}: {res.qemu_json()}"
        assert qemu_check(img)[0] == 0
        assert guest(img, tmp_path) == content, f"crash after write {n}, then rerun: guest data changed"


def test_undo_restores_byte_identical(tmp_path: Path) -> None:
    img = dirty(tmp_path / "d.qcow2", snap=True)
    before, size = sha256(img), img.stat().st_size
    undo = tmp_path / "repair.undo"
    res = run_repair(str(img), "all", undo_file=str(undo))
    assert res.exit_code() == 0 and sha256(img) != before and img.stat().st_size > size
    proc = imgscope_cli("undo", undo)
    assert proc.returncode == 0, proc.stderr
    assert (sha256(img), img.stat().st_size) == (before, size)


def test_undo_after_crash(tmp_path: Path) -> None:
    """The default undo log survives a crash and restores the original file."""
    img = dirty(tmp_path / "d.qcow2", snap=True)
    before = sha256(img)
    proc = imgscope_cli("repair", img, env={**ENV, repair_mod.KILL_ENV: "3"})
    assert proc.returncode == 137
    (log,) = tmp_path.glob(".d.qcow2.*.imgscope-undo")
    assert sha256(img) != before
    assert imgscope_cli("undo", log).returncode == 0
    assert sha256(img) == before


def test_default_undo_log_removed(tmp_path: Path) -> None:
    img = dirty(tmp_path / "d.qcow2")
    assert run_repair(str(img), "all").exit_code() == 0
    assert not list(tmp_path.glob("*.imgscope-undo"))


def test_failure_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error during the writes restores the original bytes; the corrupt bit is never set."""
    img = dirty(tmp_path / "d.qcow2", snap=True)
    before = sha256(img)
    real, calls = repair_mod._pwrite_all, []

    def failing(fd: int, data: bytes, offset: int) -> None:
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(repair_mod, "_pwrite_all", failing)
    with pytest.raises(RepairError, match="restored unchanged"):
        run_repair(str(img), "all")
    assert sha256(img) == before
    assert not list(tmp_path.glob("*.imgscope-undo"))


def _hold_open(img: Path) -> subprocess.Popen:
    """A qemu-io holding ``img`` open read-write, waiting for commands on stdin."""
    p = subprocess.Popen(["qemu-io", "-f", "qcow2", str(img)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    p.stdin.write("read 0 512\n")
    p.stdin.flush()
    for _ in range(10):  # prompt and echo may come first; the answer proves the image is open
        line = p.stdout.readline()
        if not line or "read 512/512" in line:
            break
    assert "read 512/512" in line, p.stderr.read() if p.poll() is not None else line
    return p


def test_refuses_image_in_use(tmp_path: Path) -> None:
    img = _shared_low(tmp_path / "s.qcow2")
    holder = _hold_open(img)
    try:
        before = sha256(img)  # qemu-io may rewrite a header when it opens; from here on it is idle
        assert "qemu-io" in probe(img)
        proc = imgscope_cli("repair", img)
        assert proc.returncode == 1
        assert "in use" in proc.stderr and "qemu-io" in proc.stderr and "Traceback" not in proc.stderr
        with pytest.raises(ImageInUse):
            run_repair(str(img), "all")
        assert imgscope_cli("check", "-r", "all", img).returncode == 1
        assert sha256(img) == before
    finally:
        holder.stdin.close()
        holder.terminate()
        holder.wait()
    assert probe(img) is None


def test_repair_locks_keep_qemu_out(tmp_path: Path) -> None:
    img = dirty(tmp_path / "d.qcow2")
    fd = os.open(img, os.O_RDWR)
    try:
        with exclusive_for_repair(fd, str(img)):
            proc = run("qemu-img", "info", img, check=False)
            assert proc.returncode != 0 and "lock" in proc.stderr
            assert run("qemu-io", "-c", "read 0 512", "-f", "qcow2", img, check=False).returncode != 0
        assert run("qemu-img", "info", img, check=False).returncode == 0
    finally:
        os.close(fd)


def test_forced_rebuild_counts_like_qemu(tmp_path: Path, backend: str) -> None:
    """--rebuild writes a fresh structure where qemu corrects in place: same counters, the file may grow."""
    img = _shared_low(tmp_path / "s.qcow2")
    theirs = copy(img, tmp_path / "t.qcow2")
    content = guest(img, tmp_path)
    res = run_repair(str(img), "all", rebuild=True)
    assert any(w.phase == 2 for w in res.plan.writes)
    rc_q, j_q = qemu_check(theirs, "all")
    ours = without_name(res.qemu_json())
    assert ours.pop("image-end-offset") >= j_q.pop("image-end-offset")
    assert (res.exit_code(), ours) == (rc_q, without_name(j_q))
    assert qemu_check(img)[0] == 0 and guest(img, tmp_path) == content


def test_undo_refuses_changed_image(tmp_path: Path) -> None:
    img = dirty(tmp_path / "d.qcow2")
    before, size = sha256(img), img.stat().st_size
    undo = tmp_path / "u.undo"
    run_repair(str(img), "all", undo_file=str(undo))
    qemu_io(img, "write -P 0x42 3M 64k")  # the image is used after the repair: a new cluster is counted
    proc = imgscope_cli("undo", undo)
    assert proc.returncode == 1 and "changed after the repair" in proc.stderr
    assert sha256(img) != before
    assert imgscope_cli("undo", "--force", undo).returncode == 0  # restores the logged ranges and the length only
    assert img.stat().st_size == size


def test_undo_log_damage_is_reported(tmp_path: Path) -> None:
    img = dirty(tmp_path / "d.qcow2")
    undo = tmp_path / "u.undo"
    run_repair(str(img), "all", undo_file=str(undo))
    after = sha256(img)
    data = bytearray(undo.read_bytes())
    undo.write_bytes(bytes(data[:-8]))  # no trailer: the log was never completed, nothing to undo
    proc = imgscope_cli("undo", undo)
    assert proc.returncode == 0 and "unchanged" in proc.stdout and sha256(img) == after
    data[200] ^= 0xFF  # inside the first record
    undo.write_bytes(bytes(data))
    proc = imgscope_cli("undo", undo)
    assert proc.returncode == 1 and "undo log" in proc.stderr and sha256(img) == after
    undo.write_bytes(b"not an undo log")
    assert imgscope_cli("undo", undo).returncode == 1
