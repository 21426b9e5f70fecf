"""A generated fleet of small images of mixed formats, states and damages."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

from oracle import images

#: oracle kinds the fleet is made of (clean, snapshots, dirty, chains, other formats)
BASE_KINDS = ["v3", "v2", "snapshots_1", "lazy_crash", "lazy_crash_snapshots", "backing_chain", "compressed_zlib",
              "qed", "qed_crash", "vdi", "vmdk_sparse", "vhd", "vhdx", "qcow1"]


def _leak(path: Path) -> None:
    """Append a cluster whose refcount is raised but that nothing references (an aborted allocation)."""
    with open(path, "r+b") as f:
        h = f.read(104)
        cs = 1 << struct.unpack(">I", h[20:24])[0]
        order = struct.unpack(">I", h[96:100])[0] if struct.unpack(">I", h[4:8])[0] >= 3 else 4
        assert order == 4
        rt = struct.unpack(">Q", h[48:56])[0]
        n = -(-f.seek(0, 2) // cs)
        f.truncate((n + 1) * cs)
        f.seek(rt)
        rb = struct.unpack(">Q", f.read(8))[0]
        f.seek(rb + 2 * n)
        f.write(struct.pack(">H", 1))


def build(workdir: Path, size: int = 200) -> list[Path]:
    """``size`` images: copies of the base kinds (every other copy of "v3" given a leak), plus broken files."""
    base = {}
    for kind in BASE_KINDS:
        base[kind] = images.make(kind, workdir / "base")
    fleet = workdir / "fleet"
    fleet.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    (fleet / "empty.qcow2").write_bytes(b"")
    (fleet / "garbage.qcow2").write_bytes(b"QFI\xfb" + b"\x00\x00\x00\x03" + b"\xff" * 20)
    out += [fleet / "empty.qcow2", fleet / "garbage.qcow2"]
    kinds = list(base)
    i = 0
    while len(out) < size:
        kind = kinds[i % len(kinds)]
        src = base[kind]
        dst_dir = fleet / f"{i:04d}-{kind}"
        shutil.copytree(src.parent, dst_dir)
        top = dst_dir / src.name
        if kind == "v3" and (i // len(kinds)) % 2 == 0:
            _leak(top)
        out.append(top)
        i += 1
    return out
