"""Build damaged qcow2 images for the repair tests and compare results with qemu-img.

Images come from qemu-img/qemu-io; damage is applied through imgscope's own
declarations (imgscope.formats.qcow2.layout) and encoders (imgscope.native).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

import imgscope
from imgscope import native
from imgscope.formats.qcow2 import layout as L

ENV = {**os.environ, "LC_ALL": "C"}
CRASH_WRITES = ("write -P 5 0 128k", "write -P 6 1M 64k")


def run(*argv: object, check: bool = True, **kw: object) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=kw.pop("env", ENV), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def create(path: Path, size: str = "4M", opts: str = "") -> Path:
    run("qemu-img", "create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), path, size)
    return path


def qemu_io(path: Path, *cmds: str) -> None:
    run("qemu-io", *[a for c in cmds for a in ("-c", c)], "-f", "qcow2", path)


def crash(path: Path, *cmds: str) -> None:
    """Run ``cmds`` then abort in one qemu-io: metadata not yet flushed stays stale."""
    proc = run("qemu-io", *[a for c in (*cmds, "abort") for a in ("-c", c)], "-f", "qcow2", path, check=False)
    assert proc.returncode == -signal.SIGABRT, proc


def snapshot(path: Path, name: str) -> None:
    run("qemu-img", "snapshot", "-c", name, path)


def dirty(path: Path, opts: str = "", snap: bool = False, compressed: bool = False) -> Path:
    """A lazy-refcounts image left dirty by a crash after allocating writes."""
    create(path, opts=",".join(o for o in ("lazy_refcounts=on", opts) if o))
    if snap:
        qemu_io(path, "write -P 3 0 64k", "write -P 4 2M 64k")
        snapshot(path, "s1")
    crash(path, *CRASH_WRITES, *(["write -c -P 7 3M 64k"] if compressed else []))
    return path


def qemu_check(path: Path, repair: str | None = None) -> tuple[int, dict | None]:
    mode = ["-U"] if repair is None else ["-r", repair]
    proc = run("qemu-img", "check", "--output=json", *mode, path, check=False)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def without_name(report: dict | None) -> dict | None:
    return None if report is None else {k: v for k, v in report.items() if k != "filename"}


def guest(path: Path, tmp: Path) -> dict[str, str]:
    """sha256 of the guest content of the active layer and of every internal snapshot."""
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)
    layers = {"active": []} | {f"snapshot:{s['id']}": ["-l", f"snapshot.id={s['id']}"]
                                for s in info.get("snapshots", [])}
    out = {}
    for name, extra in layers.items():
        raw = tmp / f"guest-{os.getpid()}.raw"
        run("qemu-img", "convert", "-U", "-O", "raw", *extra, path, raw)
        out[name] = hashlib.sha256(raw.read_bytes()).hexdigest()
        raw.unlink()
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def imgscope_cli(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "imgscope.cli", *args, check=False, env=env or ENV)


# ---------------------------------------------------------------------------- damage

def _pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def header(path: Path):  # noqa: ANN201 - construct Container
    return L.Header.parse(Path(path).read_bytes()[:4096])


def set_incompatible(path: Path, bits: int) -> None:
    h = header(path)
    h.incompatible_features |= bits
    _pwrite(path, 0, L.Header.build(h)[:L.V3_MIN_HEADER_LENGTH])


def add_refcount(path: Path, host_offset: int, delta: int) -> None:
    """Change one cluster's on-disk refcount through the refblock decoder/encoder."""
    with imgscope.open(path) as img:
        m, t = img.meta, img.tables
        cs, order = m.cluster_size, m.refcount_order
        per = cs * 8 >> order
        c = host_offset // cs
        block = int(t.reftable()[c // per]) & L.REFT_OFFSET_MASK
        raw = img.src.read(block, cs, "refblock")
    vals = native.refblock_decode(raw, order, per)
    vals[c % per] = np.uint64(int(vals[c % per]) + delta)
    _pwrite(path, block, native.refblock_encode(vals, order, cs))


def l2_entry(path: Path, guest_offset: int) -> tuple[int, int]:
    """(file offset of the active L2 entry mapping ``guest_offset``, its raw value)."""
    with imgscope.open(path) as img:
        m = img.meta
        cs, l2e = m.cluster_size, m.l2_entries
        esz = 16 if m.extended_l2 else 8
        l1 = img.tables.read_l1(m.header.l1_table_offset, m.header.l1_size, "l1")
        gc = guest_offset // cs
        l2 = int(l1[gc // l2e]) & L.L1E_OFFSET_MASK
        where = l2 + (gc % l2e) * esz
        return where, int.from_bytes(img.src.read(where, 8, "l2 entry"), "big")


def l1_entry(path: Path, index: int) -> tuple[int, int]:
    with imgscope.open(path) as img:
        where = img.meta.header.l1_table_offset + 8 * index
        return where, int.from_bytes(img.src.read(where, 8, "l1 entry"), "big")


def poke(path: Path, offset: int, value: int) -> None:
    _pwrite(path, offset, value.to_bytes(8, "big"))


def reftable_entry(path: Path, index: int = 0) -> tuple[int, int]:
    """(file offset of refcount table entry ``index``, its raw value)."""
    where = header(path).refcount_table_offset + 8 * index
    return where, int.from_bytes(Path(path).read_bytes()[where:where + 8], "big")
