"""What every builder of tests/formats/foreign/ shares: sizes, deterministic data, writes at offsets and
the qemu tools (used only to make a starting image that is then rewritten)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SECTOR = 512


def pattern(tag: str, n: int) -> bytes:
    """``n`` bytes of deterministic, incompressible-looking data named by ``tag``."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{tag}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def pwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b" if path.exists() else "w+b") as f:
        f.seek(offset)
        f.write(data)


def qemu_img(*args: str, cwd: Path) -> None:
    subprocess.run(["qemu-img", *args], cwd=cwd, check=True, capture_output=True)


def qemu_io(fmt: str, name: str, *cmds: str, cwd: Path) -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    subprocess.run([*argv, name], cwd=cwd, check=True, capture_output=True)
