"""Small real images, made by qemu-img/qemu-io, that the fuzzers start from.

One list of recipes per format; a format is seeded only when imgscope has a
driver for it (``imgscope.formats.registry.DRIVERS``), so new drivers are fuzzed as soon as
they register.  Images are tiny (virtual sizes of a few MiB, small clusters)
so that each mutated copy is cheap to write and to check.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: format -> [(file name, qemu-img create options, size, qemu-io commands, snapshot names)]
RECIPES: dict[str, list[tuple[str, str, str, list[str], list[str]]]] = {
    "qcow2": [
        ("v3.qcow2", "cluster_size=4096", "4M",
         ["write -P 1 0 8k", "write -z 64k 4k", "write -c -P 2 128k 4k", "write -P 3 1M 4k"], ["s1"]),
        ("v2.qcow2", "compat=0.10,cluster_size=4096", "2M", ["write -P 4 0 4k", "write -P 5 512k 4k"], ["s1", "s2"]),
        ("xl2.qcow2", "extended_l2=on,cluster_size=16384", "4M",
         ["write -P 6 4k 4k", "write -z 64k 2k", "write -c -P 7 128k 16k"], []),
        ("rc1.qcow2", "refcount_bits=1,cluster_size=4096", "1M", ["write -P 8 0 8k"], []),
        ("rc64.qcow2", "refcount_bits=64,cluster_size=4096,lazy_refcounts=on", "1M", ["write -P 9 0 8k"], ["s1"]),
    ],
    "raw": [("r.raw", "", "64k", ["write -P 1 0 4k"], [])],
    "qed": [("q.qed", "cluster_size=4096", "4M", ["write -P 1 0 4k", "write -z 64k 4k"], [])],
    "qcow": [("o.qcow", "", "1M", ["write -P 1 0 4k"], [])],
    "vdi": [("v.vdi", "", "2M", ["write -P 1 0 4k", "write -P 2 1M 4k"], [])],
    "vpc": [("p.vhd", "", "2M", ["write -P 1 0 4k", "write -P 2 1M 512"], []),
            ("pf.vhd", "subformat=fixed", "1M", [], [])],
    "vhdx": [("h.vhdx", "block_size=1M", "4M", ["write -P 1 0 4k"], [])],
    "vmdk": [("ms.vmdk", "subformat=monolithicSparse", "2M", ["write -P 1 0 4k", "write -P 2 1M 4k"], []),
             ("so.vmdk", "subformat=streamOptimized", "1M", ["write -P 3 0 64k"], [])],
}


def registered_formats() -> list[str]:
    """Formats imgscope has a driver for (that imports), in a stable order."""
    from imgscope.formats import registry
    out = []
    for name in registry.DRIVERS:
        try:
            registry.driver(name)
        except ImportError:  # a driver being written: not fuzzable yet
            continue
        out.append(name)
    return sorted(out)


def make_seeds(outdir: str | Path, formats: list[str] | None = None) -> dict[str, list[Path]]:
    """Build the seed images of ``formats`` (default: every registered one) under ``outdir``."""
    if shutil.which("qemu-img") is None:
        raise RuntimeError("qemu-img is needed to build seed images")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, list[Path]] = {}
    for fmt in formats or registered_formats():
        for name, opts, size, writes, snaps in RECIPES.get(fmt, []):
            path = out / name
            if not path.exists():
                _build(path, fmt, opts, size, writes, snaps)
            seeds.setdefault(fmt, []).append(path)
    return seeds


def _build(path: Path, fmt: str, opts: str, size: str, writes: list[str], snaps: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _run("qemu-img", "create", "-q", "-f", fmt, *(["-o", opts] if opts else []), str(tmp), size)
    if writes:
        args = [a for w in writes for a in ("-c", w)]
        _run("qemu-io", "-f", fmt, *args, str(tmp))
    for s in snaps:
        _run("qemu-img", "snapshot", "-c", s, str(tmp))
        _run("qemu-io", "-f", fmt, "-c", f"write -P 0x{len(s):x}{len(snaps)} 0 4k", str(tmp))
    tmp.rename(path)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
