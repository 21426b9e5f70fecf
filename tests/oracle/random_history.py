"""Seeded random image histories built with qemu-img/qemu-io only, and their differential comparison.

A *history* is a list of concrete qemu-img / qemu-io command lines run in one directory
(``generate(seed, workdir)`` builds one, choosing each step from the real state of the
image after the previous one; ``replay(steps, workdir)`` runs a recorded list again).
It starts with ``qemu-img create`` of a qcow2 with random options (compat, cluster
size, refcount width, lazy refcounts, extended L2, compression type, preallocation,
external data file, raw/qcow2 backing file, LUKS) and continues with random guest
writes (patterns, zero writes with and without unmap, compressed clusters, discards),
internal snapshots (create/apply/delete), resizes, amends, rebases, commits, bitmaps,
converts, new overlays and crashes (``-c abort``).

``compare(workdir, top)`` then runs imgscope's CLI (``imgscope info/map/check/snapshots
--output json``, as a user would) against ``qemu-img info/map/check --output=json`` on
every qcow2 file of the directory and returns the disagreements as strings; with
``repair=True`` it also compares ``imgscope check -r all`` with ``qemu-img check -r all``
on two copies (JSON, exit code, clean re-check, identical guest content), and
``snapmap=True`` compares ``imgscope map -l SNAP`` with ``qemu-img map`` of a copy on
which the snapshot was applied.

Nothing here imports imgscope: it is judged through its command line.
See docs/testing.md and tests/oracle/run_random.py.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oracle import qemu_text

KiB, MiB = 1 << 10, 1 << 20
SECRET = "abc123"
SECRET_OBJ = f"secret,id=sec0,data={SECRET}"
IMGSCOPE = str(Path(sys.executable).with_name("imgscope"))
_ENV = {**os.environ, "LC_ALL": "C"}
NO_INFO_KEYS = {"actual-size"}
#: qemu-img check exit codes seen by compare_image (what kinds of states were compared)
STATS: dict[str, int] = {}


@dataclass
class Step:
    """One command line. ``top``: the image later steps work on (changes after convert/overlay/commit)."""

    argv: list[str]
    top: str
    luks: bool = False      # the image named by ``top`` is LUKS-encrypted (for compare)
    crash: bool = False     # expected to die of SIGABRT

    def text(self) -> str:
        return " ".join(_quote(a) for a in self.argv)


def _quote(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_=.,:/+" for c in a) else "'" + a.replace("'", "'\\''") + "'"


@dataclass
class History:
    seed: int
    steps: list[Step] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)  # found by a checkpoint during generation

    @property
    def top(self) -> str:
        return self.steps[-1].top

    def script(self) -> str:
        return "\n".join(s.text() for s in self.steps)


def run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    for _ in range(3):  # creating a LUKS key times PBKDF2: on a loaded machine qemu can read a 0 ms sample
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=_ENV, timeout=timeout)
        if "accurate CPU usage" not in p.stderr:
            break
    return p


# ----------------------------------------------------------------------------- qemu helpers

def _img_args(name: str, luks: bool, fmt: str = "qcow2") -> list[str]:
    if not luks:
        return ["-f", fmt, name]
    return ["--object", SECRET_OBJ, "--image-opts",
            f"driver={fmt},file.filename={name.replace(',', ',,')},encrypt.key-secret=sec0"]


def qinfo(cwd: Path, name: str, chain: bool = False) -> dict | list | None:
    p = run(["qemu-img", "info", "--output=json", "-U", *(["--backing-chain"] if chain else []), name], cwd)
    if p.returncode:
        return None
    return json.loads(p.stdout)


# ----------------------------------------------------------------------------- the generator

class _Gen:
    def __init__(self, seed: int, workdir: Path) -> None:
        self.rng = random.Random(seed)
        self.d = workdir
        self.h = History(seed)
        self.top = "img0.qcow2"
        self.luks = False
        self.n_files = 0
        self.snap_counter = 0
        self.bm_counter = 0

    # -------------------------------------------------------------- bookkeeping
    def new_name(self, ext: str = "qcow2", stem: str = "img") -> str:
        self.n_files += 1
        return f"{stem}{self.n_files}.{ext}"

    def do(self, argv: list[str], top: str | None = None, crash: bool = False, luks: bool | None = None) -> bool:
        step = Step([str(a) for a in argv], top or self.top, self.luks if luks is None else luks, crash)
        p = run(step.argv, self.d)
        if p.returncode != 0 and not (crash and p.returncode == -signal.SIGABRT):
            return False  # a refused command changes nothing worth recording
        self.h.steps.append(step)
        self.top = step.top
        self.luks = step.luks
        return True

    def io(self, *cmds: str, crash: bool = False) -> bool:
        flags = [a for c in cmds for a in ("-c", c)]
        if crash:
            flags += ["-c", "abort"]
        return self.do(["qemu-io", *flags, *_img_args(self.top, self.luks)], crash=crash)

    def info(self) -> dict:
        return qinfo(self.d, self.top) or {}

    # -------------------------------------------------------------- random values
    def size(self) -> int:
        r = self.rng.random()
        if r < 0.15:
            return self.rng.randrange(1, 4096) * 512           # odd sizes, sector granular
        if r < 0.25:
            return self.rng.choice([1, 2, 3, 5, 7]) * MiB + self.rng.choice([0, 512, 4096, 65536 + 512])
        return self.rng.choice([1, 4, 16, 32, 64, 128, 256]) * MiB

    def cluster_size(self) -> int:
        return 1 << self.rng.choice([9, 10, 12, 14, 15, 16, 16, 16, 16, 17, 18, 20, 21])

    def range_(self, vsize: int, cs: int) -> tuple[int, int]:
        """A random (offset, length) inside the disk: aligned, unaligned, crossing clusters."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.35:  # cluster aligned
            n = max(1, vsize // cs)
            c = rng.randrange(n)
            k = rng.choice([1, 1, 1, 2, 3, 8])
            off, ln = c * cs, k * cs
        elif kind < 0.6:  # sector aligned
            s = rng.randrange(max(1, vsize // 512))
            off, ln = s * 512, rng.randrange(1, 64) * 512
        elif kind < 0.85:  # arbitrary bytes, often crossing a cluster boundary
            b = rng.randrange(1, max(2, vsize // cs)) * cs if vsize > cs else 0
            off = max(0, b - rng.randrange(1, min(cs, 8192) + 1))
            ln = rng.randrange(1, 3 * min(cs, 65536))
        else:  # anywhere, large
            off = rng.randrange(vsize)
            ln = rng.randrange(1, min(vsize, 4 * MiB) + 1)
        off = min(off, vsize - 1)
        return off, max(1, min(ln, vsize - off))

    # -------------------------------------------------------------- create
    def create(self) -> None:
        rng = self.rng
        opts: list[str] = []
        v2 = rng.random() < 0.2
        opts.append("compat=0.10" if v2 else "compat=1.1")
        extl2 = not v2 and rng.random() < 0.2
        cs = self.cluster_size()
        if extl2:
            cs = max(cs, 16 * KiB)
            opts.append("extended_l2=on")
        opts.append(f"cluster_size={cs}")
        if not v2:
            opts.append(f"refcount_bits={rng.choice([1, 2, 4, 8, 16, 16, 16, 32, 64])}")
            if rng.random() < 0.3:
                opts.append("lazy_refcounts=on")
            if rng.random() < 0.3:
                opts.append("compression_type=zstd")
        size = self.size()
        prealloc = rng.choice(["off"] * 6 + ["metadata", "metadata", "falloc", "full"])
        if prealloc in ("falloc", "full"):
            size = min(size, 16 * MiB)
        if prealloc != "off":
            opts.append(f"preallocation={prealloc}")
        datafile = not v2 and rng.random() < 0.12
        if datafile:
            opts.append("data_file=data0.raw")
            opts.append(f"data_file_raw={'on' if rng.random() < 0.5 else 'off'}")
        luks = not v2 and not datafile and rng.random() < 0.05
        extra: list[str] = []
        if luks:
            opts += ["encrypt.format=luks", "encrypt.key-secret=sec0", "encrypt.iter-time=10",
                     "encrypt.hash-alg=sha512"]
            extra = ["--object", SECRET_OBJ]
        backing: list[str] = []
        raw_data = datafile and "data_file_raw=on" in opts
        if not raw_data and rng.random() < 0.3:
            backing = self.make_base(size)
            if not extl2:  # qemu: backing file and preallocation only together with extended L2
                opts = [o for o in opts if not o.startswith("preallocation")]
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", *extra, "-o", ",".join(opts), *backing, self.top, str(size)]
        if not self.do(argv, luks=luks):
            if luks:  # the PBKDF benchmark fails now and then on busy machines
                argv = [a for a in argv if "encrypt" not in a and a not in ("--object", SECRET_OBJ)]
                argv = [",".join(o for o in a.split(",") if not o.startswith("encrypt")) if a.startswith("compat")
                        else a for a in argv]
                if self.do(argv, luks=False):
                    return
            raise RuntimeError(f"create failed: {' '.join(argv)}\n{run(argv, self.d).stderr}")

    def make_base(self, size: int) -> list[str]:
        """A raw or qcow2 backing file (itself maybe with data), smaller, equal or larger."""
        rng = self.rng
        bsize = max(512, rng.choice([size // 2, size, size + 3 * MiB, size // 3 // 512 * 512]))
        fmt = rng.choice(["raw", "qcow2"])
        name = self.new_name("raw" if fmt == "raw" else "qcow2", "base")
        bopts = [] if fmt == "raw" else ["-o", f"cluster_size={self.cluster_size()}"]
        self.do(["qemu-img", "create", "-q", "-f", fmt, *bopts, name, str(bsize)], top=self.top, luks=False)
        for _ in range(rng.randrange(0, 4)):
            off, ln = self.range_(bsize, 64 * KiB)
            self.do(["qemu-io", "-c", f"write -P {rng.randrange(1, 255)} {off} {ln}", "-f", fmt, name],
                    top=self.top, luks=False)
        return ["-b", name, "-F", fmt]

    # -------------------------------------------------------------- operations
    def op_write(self) -> None:
        i = self.info()
        vs, cs = i["virtual-size"], i["cluster-size"]
        cmds = []
        for _ in range(self.rng.randrange(1, 6)):
            off, ln = self.range_(vs, cs)
            cmds.append(f"write -P {self.rng.randrange(256)} {off} {ln}")
        self.io(*cmds)

    def op_zero(self) -> None:
        i = self.info()
        off, ln = self.range_(i["virtual-size"], i["cluster-size"])
        flags = self.rng.choice(["-z", "-z", "-z -u"])
        self.io(f"write {flags} {off} {ln}")

    def op_compressed(self) -> None:
        i = self.info()
        vs, cs = i["virtual-size"], i["cluster-size"]
        if vs < cs:
            return
        cmds = []
        for _ in range(self.rng.randrange(1, 4)):
            c = self.rng.randrange(vs // cs)
            pat = self.rng.choice(["-P 0", f"-P {self.rng.randrange(1, 256)}", ""])
            cmds.append(f"write -c {pat} {c * cs} {cs}".replace("  ", " "))
        self.io(*cmds)

    def op_discard(self) -> None:
        i = self.info()
        off, ln = self.range_(i["virtual-size"], i["cluster-size"])
        self.io(f"discard {off} {ln}")

    def snapshots(self) -> list[dict]:
        return self.info().get("snapshots", [])

    def img(self, *args: str) -> bool:
        """qemu-img SUBCOMMAND [options] IMAGE (the options given before the image)."""
        sub, *opts = args
        if self.luks:
            return self.do(["qemu-img", sub, *opts, *_img_args(self.top, True)])
        return self.do(["qemu-img", sub, *opts, self.top])

    def op_snapshot(self) -> None:
        snaps = self.snapshots()
        r = self.rng.random()
        if not snaps or r < 0.5:
            self.snap_counter += 1
            self.img("snapshot", "-c", f"s{self.snap_counter}")
        elif r < 0.75:
            self.img("snapshot", "-a", self.rng.choice(snaps)["name"])
        else:
            self.img("snapshot", "-d", self.rng.choice(snaps)["name"])

    def op_resize(self) -> None:
        i = self.info()
        vs = i["virtual-size"]
        if self.rng.random() < 0.6 or vs <= 512:
            new = vs + self.rng.choice([512, 64 * KiB, MiB, 5 * MiB + 512, 32 * MiB])
            new = min(new, 512 * MiB)
            pre = ["--preallocation=" + self.rng.choice(["off", "metadata", "falloc"])] \
                if self.rng.random() < 0.2 else []
            self.img("resize", "-q", *([] if self.luks else pre), str(new))
        else:
            new = max(512, vs - self.rng.choice([512, 64 * KiB, MiB, vs // 2]) // 512 * 512)
            self.img("resize", "-q", "--shrink", str(new))

    def op_amend(self) -> None:
        i = self.info()
        data = i.get("format-specific", {}).get("data", {})
        choices = [f"lazy_refcounts={'off' if data.get('lazy-refcounts') else 'on'}",
                   "compat=0.10" if data.get("compat") == "1.1" else "compat=1.1",
                   f"size={i['virtual-size'] + self.rng.choice([0, 512, MiB])}"]
        if i["cluster-size"] <= 128 * KiB:  # qemu 7.2's amend loops forever with larger clusters
            choices.append(f"refcount_bits={self.rng.choice([1, 2, 4, 8, 16, 32, 64])}")
        if data.get("data-file") is not None:
            choices.append(f"data_file_raw={'off' if data.get('data-file-raw') else 'on'}")
        opt = self.rng.choice(choices)
        if self.luks:
            self.do(["qemu-img", "amend", "-o", opt, *_img_args(self.top, True)])
        else:
            self.do(["qemu-img", "amend", "-f", "qcow2", "-o", opt, self.top])

    def files(self) -> list[str]:
        return sorted(p.name for p in self.d.iterdir() if p.is_file() and not p.name.startswith("."))

    def op_rebase(self) -> None:
        cands = [f for f in self.files() if f != self.top and not f.startswith("data")]
        chain = qinfo(self.d, self.top, chain=True) or []
        below = {os.path.basename(c.get("filename", "")) for c in chain[1:]}
        cands = [f for f in cands if f not in below or self.rng.random() < 0.5]
        if self.luks:
            return
        r = self.rng.random()
        if r < 0.2 or not cands:
            self.do(["qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "", self.top])
            return
        new = self.rng.choice(cands)
        fmt = "raw" if new.endswith(".raw") else "qcow2"
        if self.top in {os.path.basename(c.get("filename", "")) for c in (qinfo(self.d, new, True) or [])}:
            return  # would make a loop
        unsafe = ["-u"] if r < 0.7 else []  # else a safe rebase: qemu copies the differing data
        self.do(["qemu-img", "rebase", "-f", "qcow2", *unsafe, "-b", new, "-F", fmt, self.top])

    def op_commit(self) -> None:
        chain = qinfo(self.d, self.top, chain=True) or []
        if len(chain) < 2 or self.luks:
            return
        base = os.path.basename(chain[1]["filename"])
        keep = self.rng.random() < 0.3
        if self.do(["qemu-img", "commit", "-q", "-f", "qcow2", *(["-d"] if keep else []), self.top]):
            if base.endswith(".qcow2") and self.rng.random() < 0.3:
                self.top = base  # continue on the committed-into image
                self.h.steps[-1].top = base

    def op_bitmap(self) -> None:
        data = self.info().get("format-specific", {}).get("data", {})
        bms = [b["name"] for b in data.get("bitmaps", [])]
        r = self.rng.random()
        if not bms or r < 0.5:
            self.bm_counter += 1
            g = self.rng.choice([[], ["-g", "512"], ["-g", "65536"], ["-g", str(1 << self.rng.randrange(9, 27))]])
            dis = ["--disable"] if self.rng.random() < 0.2 else []
            self.do(["qemu-img", "bitmap", "--add", *g, *dis, *self._img_tail(), f"bm{self.bm_counter}"])
        else:
            act = self.rng.choice(["--remove", "--disable", "--enable", "--clear"])
            self.do(["qemu-img", "bitmap", act, *self._img_tail(), self.rng.choice(bms)])

    def _img_tail(self) -> list[str]:
        return _img_args(self.top, True) if self.luks else ["-f", "qcow2", self.top]

    def op_convert(self) -> None:
        if self.luks:
            return
        rng = self.rng
        new = self.new_name()
        opts = [f"cluster_size={self.cluster_size()}"]
        if rng.random() < 0.3:
            opts.append("compat=0.10")
        elif rng.random() < 0.3:
            opts.append(f"refcount_bits={rng.choice([1, 2, 8, 64])}")
        if rng.random() < 0.2 and "compat=0.10" not in opts:
            opts.append("compression_type=zstd")
        if rng.random() < 0.2:
            opts.append("preallocation=metadata")
        flags = []
        if rng.random() < 0.3 and "preallocation=metadata" not in opts:
            flags.append("-c")
        if rng.random() < 0.3:
            flags += ["-S", rng.choice(["0", "4k", "64k"])]
        if rng.random() < 0.2:
            flags.append("--bitmaps")
        ok = self.do(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", *flags, "-o", ",".join(opts),
                      self.top, new], top=new)
        if not ok and "--bitmaps" in flags:
            flags.remove("--bitmaps")
            self.do(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", *flags, "-o", ",".join(opts),
                     self.top, new], top=new)

    def op_overlay(self) -> None:
        if self.luks:
            return
        new = self.new_name()
        i = self.info()
        size = [] if self.rng.random() < 0.7 else [str(i["virtual-size"] + self.rng.choice([-MiB, MiB, 512]))]
        opts = f"cluster_size={self.cluster_size()}"
        if self.rng.random() < 0.3:
            opts += ",lazy_refcounts=on"
        if self.rng.random() < 0.2:
            opts += ",extended_l2=on,cluster_size=65536"
        self.do(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", self.top, "-F", "qcow2", new,
                 *size], top=new)

    def op_crash(self) -> None:
        i = self.info()
        data = i.get("format-specific", {}).get("data", {})
        if data.get("compat") == "1.1" and not data.get("lazy-refcounts") and self.rng.random() < 0.6:
            self.do(["qemu-img", "amend", "-o", "lazy_refcounts=on", *self._img_tail()])
        vs, cs = i["virtual-size"], i["cluster-size"]
        cmds = []
        for _ in range(self.rng.randrange(1, 5)):
            off, ln = self.range_(vs, cs)
            op = self.rng.choice(["write -P 0x5a", "write -P 0x5b", "write -z", "discard"])
            cmds.append(f"{op} {off} {ln}")
        if self.rng.random() < 0.3 and vs >= cs:
            cmds.append(f"write -c -P 0x5c {self.rng.randrange(vs // cs) * cs} {cs}")
        self.io(*cmds, crash=True)

    def op_burst(self) -> None:
        """Several snapshots with writes in between (refcount overflow with narrow refcounts)."""
        i = self.info()
        vs, cs = i["virtual-size"], i["cluster-size"]
        for _ in range(self.rng.randrange(2, 7)):
            self.snap_counter += 1
            self.img("snapshot", "-c", f"s{self.snap_counter}")
            off, ln = self.range_(vs, cs)
            self.io(f"write -P {self.rng.randrange(256)} {off} {ln}")

    def op_repair(self) -> None:
        """qemu-img check -r leaks|all as a step of the history."""
        mode = self.rng.choice(["leaks", "all"])
        if self.luks:
            self.do(["qemu-img", "check", "-q", "-r", mode, *_img_args(self.top, True)])
        else:
            argv = ["qemu-img", "check", "-q", "-r", mode, "-f", "qcow2", self.top]
            p = run(argv, self.d)  # exits 2/3 when something remains: still a step that changed the image
            if p.returncode in (0, 2, 3):
                self.h.steps.append(Step(argv, self.top, self.luks))

    OPS = {"write": 30, "zero": 10, "compressed": 6, "discard": 6, "snapshot": 12, "resize": 5, "amend": 6,
           "rebase": 3, "commit": 3, "bitmap": 5, "convert": 3, "overlay": 3, "crash": 8,
           "burst": 3, "repair": 2}

    def step(self) -> None:
        if self.info().get("virtual-size", 0) == 0:
            self.op_resize()
            return
        names = list(self.OPS)
        op = self.rng.choices(names, weights=[self.OPS[n] for n in names])[0]
        getattr(self, f"op_{op}")()


def generate(seed: int, workdir: Path, n_ops: int | None = None,
             checkpoint: Callable[[History], list[str]] | None = None) -> History:
    """Build a random history in ``workdir`` (created empty) and return its recorded steps.

    ``checkpoint(history)`` (e.g. a comparison) runs after every crash and after some other
    steps, whose states later steps would repair or overwrite; when it returns differences
    the history stops there and keeps them in ``History.diffs``.
    """
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    g = _Gen(seed, workdir)
    g.create()
    every = random.Random(seed ^ 0x5EED)  # checkpoints: the history itself does not depend on them
    for _ in range(n_ops if n_ops is not None else g.rng.randrange(3, 20)):
        before = len(g.h.steps)
        g.step()
        new = g.h.steps[before:]
        if checkpoint and new and (new[-1].crash or every.random() < 0.1):
            g.h.diffs = checkpoint(g.h)
            if g.h.diffs:
                break
    return g.h


def replay(steps: list[Step], workdir: Path) -> None:
    """Run recorded steps again in an empty ``workdir`` (failing steps are skipped like refused ones)."""
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for s in steps:
        run(s.argv, workdir)


# ----------------------------------------------------------------------------- the comparison

def imgscope(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run([IMGSCOPE, *args], cwd)


def _same_keys(theirs, ours, where: str, out: list[str]) -> None:
    """Every key qemu prints has the same value in ours (recursively; lists element-wise)."""
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            out.append(f"{where}: imgscope {ours!r} is not an object (qemu {theirs!r})")
            return
        for k, v in theirs.items():
            if k in NO_INFO_KEYS:
                continue
            if k not in ours:
                out.append(f"{where}/{k} missing (qemu: {v!r})")
            else:
                _same_keys(v, ours[k], f"{where}/{k}", out)
    elif isinstance(theirs, list):
        if not isinstance(ours, list) or len(ours) != len(theirs):
            out.append(f"{where}: imgscope {ours!r} != qemu {theirs!r}")
            return
        for i, (a, b) in enumerate(zip(theirs, ours)):
            _same_keys(a, b, f"{where}[{i}]", out)
    elif ours != theirs:
        out.append(f"{where}: imgscope {ours!r} != qemu {theirs!r}")


def _json(p: subprocess.CompletedProcess):
    try:
        return json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        return "<not json>"


def _first_diff_map(theirs: list, ours: list) -> str:
    for i, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            return f"extent {i}: imgscope {b} != qemu {a}"
    return f"{len(ours)} extents != qemu's {len(theirs)}"


def compare_image(cwd: Path, name: str, luks: bool = False, text: bool = True) -> list[str]:
    """imgscope's CLI against qemu-img for one qcow2 file: info, info --chain, map, check, snapshots; with
    ``text`` also their JSON and human text byte for byte (tests/oracle/qemu_text.py)."""
    diffs: list[str] = []
    path = str((cwd / name).absolute())
    ti = run(["qemu-img", "info", "--output=json", "-U", path], cwd)
    oi = imgscope(cwd, "info", "--output", "json", path)
    if ti.returncode != oi.returncode:
        diffs.append(f"{name}: info rc imgscope {oi.returncode} != qemu {ti.returncode}: {oi.stderr.strip()}"
                     f" / {ti.stderr.strip()}")
        return diffs
    if ti.returncode:
        return diffs
    _same_keys(json.loads(ti.stdout), _json(oi), f"{name}: info", diffs)
    tc = run(["qemu-img", "info", "--output=json", "-U", "--backing-chain", path], cwd)
    oc = imgscope(cwd, "info", "--chain", "--output", "json", path)
    if tc.returncode == 0:
        _same_keys(json.loads(tc.stdout), _json(oc), f"{name}: info --chain", diffs)
    os_ = imgscope(cwd, "snapshots", "--output", "json", path)
    snaps = json.loads(ti.stdout).get("snapshots", [])
    if _json(os_) != snaps:
        diffs.append(f"{name}: snapshots imgscope {os_.stdout.strip()[:300]} != qemu {snaps}")
    sec = ["--object", SECRET_OBJ, "--image-opts",
           f"driver=qcow2,file.filename={path.replace(',', ',,')},encrypt.key-secret=sec0"] if luks else [path]
    tm = run(["qemu-img", "map", "--output=json", "-U", *sec], cwd)
    om = imgscope(cwd, "map", "--output", "json", path)
    if tm.returncode != om.returncode:
        diffs.append(f"{name}: map rc imgscope {om.returncode} != qemu {tm.returncode}: {om.stderr.strip()[:300]}"
                     f" / {tm.stderr.strip()[:300]}")
    elif tm.returncode == 0:
        a, b = json.loads(tm.stdout), _json(om)
        if a != b:
            diffs.append(f"{name}: map {_first_diff_map(a, b) if isinstance(b, list) else b}")
    tk = run(["qemu-img", "check", "--output=json", "-U", *sec], cwd)
    STATS[f"check rc {tk.returncode}"] = STATS.get(f"check rc {tk.returncode}", 0) + 1
    for flag in ("dirty-flag",):
        if json.loads(ti.stdout).get(flag):
            STATS[flag] = STATS.get(flag, 0) + 1
    ok = imgscope(cwd, "check", "--output", "json", path)
    tj, oj = _json(tk), _json(ok)
    if luks and isinstance(tj, dict):
        tj["filename"] = path
    if tk.returncode != ok.returncode or tj != oj:
        diffs.append(f"{name}: check imgscope rc {ok.returncode} {oj} {ok.stderr.strip()[:200]} != "
                     f"qemu rc {tk.returncode} {tj}")
    if text:
        info = json.loads(ti.stdout)
        for what, d in qemu_text.text_diffs(lambda *a: qemu_text.outcome(run(["qemu-img", *a], cwd)),
                                            lambda *a: qemu_text.outcome(imgscope(cwd, *a)),
                                            ["-f", "qcow2", path], [path], info["virtual-size"],
                                            "backing-filename" in info, *((sec, path) if luks else ())):
            diffs.append(f"{name}: {what} {d}")
    return diffs


def compare_snapmap(cwd: Path, name: str) -> list[str]:
    """``imgscope map -l SNAP`` against ``qemu-img map`` of a copy on which SNAP was applied."""
    diffs: list[str] = []
    info = qinfo(cwd, name) or {}
    for s in info.get("snapshots", []):
        copy = cwd / f".snapmap.{name}"
        shutil.copyfile(cwd / name, copy)  # holes do not matter: metadata preallocation is not probed here
        try:
            if run(["qemu-img", "snapshot", "-a", s["id"], "-f", "qcow2", copy.name], cwd).returncode:
                continue
            tm = run(["qemu-img", "map", "--output=json", "-U", "-f", "qcow2", copy.name], cwd)
            om = imgscope(cwd, "map", "--output", "json", "-l", s["id"], str(cwd / name))
            if tm.returncode == 0:
                a, b = json.loads(tm.stdout), _json(om)
                a = [{k: v for k, v in e.items() if k != "offset"} for e in a]
                b = [{k: v for k, v in e.items() if k != "offset"} for e in b] if isinstance(b, list) else b
                if a != b:
                    diffs.append(f"{name}: map -l {s['id']}: "
                                 f"{_first_diff_map(a, b) if isinstance(b, list) else om.stderr.strip()[:300]}")
        finally:
            copy.unlink(missing_ok=True)
    return diffs


def _guest_raw(cwd: Path, name: str, out: str) -> bytes | None:
    p = run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", name, out], cwd)
    if p.returncode:
        return None
    data = (cwd / out).read_bytes()
    (cwd / out).unlink()
    return data


def compare_repair(cwd: Path, name: str) -> list[str]:
    """``imgscope check -r all`` on one copy against ``qemu-img check -r all`` on another."""
    diffs: list[str] = []
    info = qinfo(cwd, name) or {}
    if info.get("snapshots") and info.get("format-specific", {}).get("data", {}).get("bitmaps"):
        # qemu 7.2 defect: check -r opens without reading the snapshot table (BDRV_O_CHECK), the
        # bitmap code rewrites the header on the read-write open and every snapshot is dropped
        return diffs
    a, b = cwd / f".rep_i.{name}", cwd / f".rep_q.{name}"
    shutil.copyfile(cwd / name, a)
    shutil.copyfile(cwd / name, b)
    try:
        oq = imgscope(cwd, "check", "-r", "all", "--output", "json", a.name)
        tq = run(["qemu-img", "check", "-r", "all", "--output=json", "-f", "qcow2", b.name], cwd)
        oj, tj = _json(oq), _json(tq)
        if isinstance(oj, dict):
            oj["filename"] = "X"
        if isinstance(tj, dict):
            tj["filename"] = "X"
        if oq.returncode != tq.returncode or oj != tj:
            diffs.append(f"{name}: check -r all imgscope rc {oq.returncode} {oj} {oq.stderr.strip()[:200]} != "
                         f"qemu rc {tq.returncode} {tj}")
        if oq.returncode in (0, 3) or tq.returncode in (0, 3):
            rc = run(["qemu-img", "check", "-U", "-f", "qcow2", a.name], cwd)
            if tq.returncode == 0 and rc.returncode != 0:
                diffs.append(f"{name}: after imgscope check -r all, qemu-img check exits {rc.returncode}: "
                             f"{rc.stdout.strip()[-300:]}")
            ga, gb = _guest_raw(cwd, a.name, ".rep_i.raw"), _guest_raw(cwd, b.name, ".rep_q.raw")
            if ga != gb:
                diffs.append(f"{name}: guest content after imgscope repair differs from qemu's repair")
    finally:
        a.unlink(missing_ok=True)
        b.unlink(missing_ok=True)
    return diffs


def compare(cwd: Path, top: str, luks_top: bool = False, repair: bool = False, snapmap: bool = False,
            all_files: bool = True) -> list[str]:
    """Every disagreement between imgscope's CLI and qemu-img on the images of ``cwd``."""
    names = [top]
    if all_files:
        names += sorted(p.name for p in cwd.glob("*.qcow2") if p.name != top and not p.name.startswith("."))
    diffs: list[str] = []
    for n in names:
        luks = luks_top and n == top
        diffs += compare_image(cwd, n, luks)
        if snapmap and not luks:
            diffs += compare_snapmap(cwd, n)
        if repair and not luks and n == top:
            diffs += compare_repair(cwd, n)
    return diffs
