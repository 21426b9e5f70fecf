"""Images with known histories, built with qemu-img/qemu-io (the oracle), for the notebook-layer tests."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require_qemu

KiB, MiB = 1 << 10, 1 << 20


def qimg(*args: object, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=check)


def qio(path: Path, *cmds: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        argv += ["-c", c]
    subprocess.run([*argv, str(path)], capture_output=True, check=True)


def qcheck(path: Path) -> dict:
    out = qimg("check", "--output=json", "-U", path, check=False)
    return json.loads(out.stdout) if out.stdout.strip() else {}


def create(path: Path, size: int = 64 * MiB, opts: str = "", backing: str | None = None) -> Path:
    args = ["create", "-q", "-f", "qcow2"] + (["-o", opts] if opts else [])
    args += ["-b", backing, "-F", "qcow2"] if backing else []
    qimg(*args, path.name, size, cwd=path.parent)
    return path


def history(d: Path) -> Path:
    """s1 -> s2 -> s3; goto s1 -> s4 -> s5; goto s2 -> live (writes).  The true tree is known."""
    p = create(d / "h.qcow2")
    steps = [("write -P 1 0 1M", "s1"), ("write -P 2 1M 256k", "s2"), ("write -P 3 4M 128k", "s3"),
             ("goto s1", None), ("write -P 4 8M 192k", "s4"), ("write -P 5 12M 64k", "s5"), ("goto s2", None),
             ("write -P 6 16M 64k", None)]
    for cmd, snap in steps:
        if cmd.startswith("goto"):
            qimg("snapshot", "-a", cmd.split()[1], p)
            continue
        qio(p, cmd)
        if snap:
            qimg("snapshot", "-c", snap, p)
    return p


HISTORY_PARENTS = {"snapshot:1": None, "snapshot:2": "snapshot:1", "snapshot:3": "snapshot:2",
                   "snapshot:4": "snapshot:1", "snapshot:5": "snapshot:4", "active": "snapshot:2"}


def drop_last_snapshot(path: Path) -> None:
    """Forget every snapshot table entry without freeing anything (a broken deletion): the snapshots'
    exclusive clusters, tables and the table itself leak.  Built with imgscope's own header declaration."""
    from imgscope.formats.qcow2 import layout as L
    with open(path, "r+b") as fh:
        h = L.Header.parse(fh.read(4096))
        h.nb_snapshots = 0
        h.snapshots_offset = 0
        fh.seek(0)
        fh.write(L.Header.build(h))


@pytest.fixture(scope="session")
def nbdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_qemu()
    return tmp_path_factory.mktemp("nb")


@pytest.fixture(scope="session")
def history_image(nbdir: Path) -> Path:
    d = nbdir / "history"
    d.mkdir()
    return history(d)


@pytest.fixture(scope="session")
def leaky_image(nbdir: Path) -> Path:
    """8 clusters, snapshot, overwrite 4 + 1 new, then the snapshot entry is dropped: 7 clusters leak."""
    d = nbdir / "leaky"
    d.mkdir()
    p = create(d / "lk.qcow2")
    qio(p, "write -P 1 0 512k")
    qimg("snapshot", "-c", "s1", p)
    qio(p, "write -P 2 0 256k", "write -P 3 1M 64k")
    drop_last_snapshot(p)
    return p


def copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst_dir / src.name))
