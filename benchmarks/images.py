"""Benchmark images, built with qemu-img/qemu-io and cached in the work directory.

Each builder writes ``<name>.qcow2`` plus ``<name>.json`` (the parameters it was
built with and how long the build took).  An image is rebuilt only when the
parameters change, so the slow ones (1,000 snapshots) are paid for once.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark image is (``full`` for the real run, ``small`` for the smoke test)."""

    tib_size: str = "1T"           # preallocation=metadata, 64 KiB clusters -> 16 Mi clusters
    snap_size: str = "64G"
    snapshots: int = 1000
    snap_group: int = 20           # snapshots per group; scattered writes between groups
    snap_writes: int = 100         # 4 KiB writes per group
    scatter_clusters: int = 1 << 19  # 4 KiB clusters of the scattered image (every other one holds data)
    dirty_size: str = "128G"       # preallocation=metadata for the first half, then lazy writes + abort
    dirty_writes: int = 2000


FULL = Sizes()
SMALL = Sizes(tib_size="1G", snap_size="1G", snapshots=12, snap_group=4, snap_writes=10,
              scatter_clusters=2048, dirty_size="2G", dirty_writes=50)


def _run(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({proc.returncode}): {proc.stderr.strip()[:500]}")


def _qemu_io(path: Path, commands: list[str], *, allow_fail: bool = False, cache: str | None = "unsafe") -> None:
    """Run qemu-io commands fed through stdin (no argv limit); cache=unsafe (no flushes) unless told
    (None: qemu-io's default, writethrough)."""
    script = "\n".join(commands) + "\nquit\n"
    proc = subprocess.run(["qemu-io", *(["-t", cache] if cache else []), "-f", "qcow2", str(path)], input=script,
                          capture_output=True, text=True)
    if proc.returncode != 0 and not allow_fail:
        raise RuntimeError(f"qemu-io on {path} failed: {proc.stderr.strip()[:500]}")


def _size_bytes(s: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def build_tib(path: Path, sz: Sizes) -> None:
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", str(path), sz.tib_size])


def build_snapshots(path: Path, sz: Sizes) -> None:
    """Scattered 4 KiB writes, then a group of snapshots, repeated: snapshots share most data."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), sz.snap_size])
    rng = random.Random(1)
    ncl = _size_bytes(sz.snap_size) // 65536
    made = 0
    while made < sz.snapshots:
        _qemu_io(path, [f"write -P {made % 251} {rng.randrange(ncl) * 65536} 4k" for _ in range(sz.snap_writes)])
        for _ in range(min(sz.snap_group, sz.snapshots - made)):
            made += 1
            _run(["qemu-img", "snapshot", "-c", f"s{made}", str(path)])


def build_scattered(path: Path, sz: Sizes) -> None:
    """Every other 4 KiB cluster holds data: ``scatter_clusters`` extents, converted from a sparse raw file."""
    raw = path.with_suffix(".raw")
    block = bytes([0xA5]) * 4096
    with open(raw, "wb") as f:
        f.truncate(sz.scatter_clusters * 4096)
        for i in range(0, sz.scatter_clusters, 2):
            f.seek(i * 4096)
            f.write(block)
    try:
        _run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=4096", "-t", "unsafe", str(raw), str(path)])
    finally:
        raw.unlink()


def build_dirty(path: Path, sz: Sizes) -> None:
    """Millions of preallocated clusters, then lazy-refcount writes past them and an abort (dirty bit set)."""
    half = _size_bytes(sz.dirty_size) // 2
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata,lazy_refcounts=on", str(path),
          str(half)])
    _run(["qemu-img", "resize", "-q", str(path), sz.dirty_size])
    rng = random.Random(2)
    ncl = half // 65536
    cmds = [f"write -P 9 {half + rng.randrange(ncl) * 65536} 4k" for _ in range(sz.dirty_writes)]
    # writethrough (qemu-io's default): each L2 update reaches the file; the lazy refcounts die with the abort
    _qemu_io(path, cmds + ["abort"], allow_fail=True, cache=None)


BUILDERS = {"tib": build_tib, "snap1000": build_snapshots, "scattered": build_scattered, "dirty": build_dirty}


#: version of build_dirty (bump when a builder changes, so its cached image is rebuilt)
BUILD_VERSION = 2


def ensure(name: str, work: Path, sz: Sizes, log=print) -> tuple[Path, dict]:
    """Path of image ``name`` (built if missing or built with other sizes) and its build record."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.qcow2"
    stamp = work / f"{name}.json"
    params = {**asdict(sz), "builder": BUILD_VERSION} if name == "dirty" else asdict(sz)
    if path.exists() and stamp.exists():
        rec = json.loads(stamp.read_text())
        if rec.get("params") == params:
            return path, {**rec, "cached": True}
    for p in (path, stamp):
        p.unlink(missing_ok=True)
    log(f"building {name} ...")
    t0 = time.perf_counter()
    BUILDERS[name](path, sz)
    rec = {"params": params, "build_seconds": round(time.perf_counter() - t0, 2)}
    stamp.write_text(json.dumps(rec))
    log(f"built {name} in {rec['build_seconds']} s")
    return path, {**rec, "cached": False}
