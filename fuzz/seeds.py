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


def _cowd_seed(d: Path) -> tuple[str, str]:
    """An ESX redo log: vmfsSparse (COWD) extent, 1 MiB, grain 1 sector, on no parent."""
    from tests.formats.foreign.vmdk import _grains, cowd, vmdk_descriptor
    sectors = 2048
    cowd(d / "r-delta.vmdk", sectors, _grains("cowd", 1, [0, 1, 7, sectors - 1]), 1)
    (d / "r.vmdk").write_bytes(vmdk_descriptor("vmfsSparse", [f'RW {sectors} VMFSSPARSE "r-delta.vmdk"']))
    return "r.vmdk", "r-delta.vmdk"


def _sesparse_seed(d: Path) -> tuple[str, str]:
    """An ESXi 6.5+ snapshot: seSparse extent (zero, unmapped and allocated grains) on a 1 MiB flat parent."""
    from tests.formats.foreign.vmdk import _grains, sesparse, vmdk_descriptor
    from tests.formats.foreign.common import pattern
    sectors = 2048
    (d / "base-flat.vmdk").write_bytes(pattern("base", sectors * 512))
    (d / "base.vmdk").write_bytes(vmdk_descriptor("vmfs", [f'RW {sectors} VMFS "base-flat.vmdk"']))
    sesparse(d / "s-sesparse.vmdk", sectors, _grains("se", 8, [0, 3, sectors // 8 - 1]), zero=(1,), unmapped=(2,))
    (d / "s.vmdk").write_bytes(vmdk_descriptor("seSparse", [f'RW {sectors} SESPARSE "s-sesparse.vmdk"'],
                                               parent_cid="fffffffe", extra='parentFileNameHint="base.vmdk"'))
    return "s.vmdk", "s-sesparse.vmdk"


#: format -> builders of multi-file images other products write, which qemu-img cannot make: each fills
#: an empty directory and returns (the file to open, the file the fuzzer mutates)
FOREIGN: dict[str, list] = {"vmdk": [_cowd_seed, _sesparse_seed]}


def make_foreign_seeds(outdir: str | Path, formats: list[str]) -> dict[str, list[tuple[Path, str, str]]]:
    """Build the FOREIGN seeds of ``formats``: format -> [(directory, file to open, file to mutate)]."""
    import sys
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # the builders live with the tests that check them against qemu-img
        sys.path.insert(0, root)
    out: dict[str, list[tuple[Path, str, str]]] = {}
    for fmt in formats:
        for build in FOREIGN.get(fmt, []):
            d = Path(outdir) / "foreign" / build.__name__.strip("_")
            names = d / ".names"
            if not names.exists():
                tmp = d.with_name(d.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                (tmp / ".names").write_text("\n".join(build(tmp)))
                shutil.rmtree(d, ignore_errors=True)
                tmp.rename(d)
            top, mutated = names.read_text().split("\n")
            out.setdefault(fmt, []).append((d, top, mutated))
    return out


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
