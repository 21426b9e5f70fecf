"""Seeded random histories of QED, qcow v1, VDI, VMDK, VHD and VHDX images, and imgscope's CLI against qemu-img.

A *history* is a list of qemu-img / qemu-io command lines run in an empty directory; it only ever uses
qemu's tools, so the image it leaves is one "nobody has seen".  :func:`generate` draws one from a seed:

* ``qemu-img create`` with random options of the format (QED cluster/table size; VMDK every subformat
  qemu-img creates, zeroed_grain, compat6, adapter type, hwversion; VHD dynamic/fixed, force_size; VHDX
  dynamic/fixed, block_size, log_size, block_state_zero; VDI static) and a random size (odd byte counts,
  sizes that are not a multiple of the cluster/grain/block, sparse sizes above 4 GiB);
* or ``qemu-img convert`` into the format (with random options, ``-c`` where it makes sense) from a
  small image of another format with a history of its own;
* backing files for QED, qcow and VMDK (raw, qcow2 or vmdk, with data of their own, smaller or larger);
* qemu-io batches of pattern writes (aligned and byte-unaligned, crossing clusters/grains/blocks),
  zero writes (``-z``, ``-z -u``), discards, compressed writes where the format has them;
* ``qemu-img resize`` (kept whatever qemu answers) and a final batch ending in ``abort`` (a crash: QED
  need-check, VMDK/VDI/VHDX mid-update state).

:func:`compare` then runs imgscope exactly as a user would (``imgscope info/map/check --output json``,
``info --chain``, ``check -r`` on copies of QED images) and lists every disagreement with qemu-img
(``info``: every key qemu prints but actual-size; ``map`` and ``check``: equal JSON and exit codes;
``check -r``: equal JSON, exit code and resulting file), plus the guest content read through imgscope's
``map`` offsets (host bytes from the right file of the chain / the right VMDK extent) against
``qemu-img convert -O raw``.

Used by tests/formats/test_random_histories.py (fixed seeds, CI) and tests/formats/run_random.py
(hundreds of seeds, minimisation of failing histories).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # run as a script: tests/ holds the oracle package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracle import qemu_text  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FORMATS = ("qed", "qcow", "vdi", "vmdk", "vpc", "vhdx")
EXT = {"qed": "qed", "qcow": "qcow", "vdi": "vdi", "vmdk": "vmdk", "vpc": "vhd", "vhdx": "vhdx", "raw": "raw",
       "qcow2": "qcow2"}
#: the console script of the interpreter running this (the project's .venv in CI and locally)
IMGSCOPE = next((str(p) for p in (Path(sys.executable).parent / "imgscope",
                                  Path(__file__).resolve().parents[2] / ".venv" / "bin" / "imgscope") if p.exists()),
                "imgscope")
QEMU_IMG = shutil.which("qemu-img") or "qemu-img"
QEMU_IO = shutil.which("qemu-io") or "qemu-io"
_ENV = {**os.environ, "LC_ALL": "C"}
VMDK_SUBFORMATS = ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                   "streamOptimized")


# ---------------------------------------------------------------------------------------------- histories

@dataclass
class Op:
    """One command line (``argv[0]`` is ``qemu-img`` or ``qemu-io``); its exit code does not matter:
    qemu refusing an operation (a resize the format lacks, an overwrite of a stream-optimized grain)
    is part of the history."""

    argv: list[str]
    creates: bool = False  # makes the compared image: the history is void when qemu refuses it

    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass
class History:
    seed: int
    fmt: str              # qemu format of the image compared
    target: str           # its file name
    ops: list[Op] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # what the history exercises (for the summary)

    def script(self) -> str:
        return "\n".join(op.shell() for op in self.ops)

    def replay(self, d: Path) -> str | None:
        """Run the ops in ``d``; returns qemu's complaint when it refused to make the compared image."""
        d.mkdir(parents=True, exist_ok=True)
        refused = None
        for op in self.ops:
            tool = {"qemu-img": QEMU_IMG, "qemu-io": QEMU_IO}[op.argv[0]]
            p = subprocess.run([tool, *op.argv[1:]], cwd=d, env=_ENV, capture_output=True, text=True, check=False)
            if op.creates and p.returncode != 0:
                refused = f"{op.shell()}: {p.stderr.strip()[:300]}"
        return refused

    def without(self, i: int) -> History:
        return History(self.seed, self.fmt, self.target, self.ops[:i] + self.ops[i + 1:], self.tags)


def _io(fmt: str, name: str, cmds: list[str]) -> Op:
    return Op(["qemu-io", "-f", fmt, *[a for c in cmds for a in ("-c", c)], name])


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # ------------------------------------------------------------------ sizes and offsets
    def size(self, gran: int, big: bool = True, small_max: int = 64 * MiB) -> int:
        r = self.rng.random()
        if big and r < 0.12:
            return self.rng.randrange(4 * GiB + 1, 9 * GiB)          # sparse, > 4 GiB, usually odd
        if r < 0.35:
            return self.rng.randrange(1, small_max)                   # any byte count
        if r < 0.6:
            return self.rng.randrange(1, max(2, small_max // 512)) * 512  # sectors, rarely a cluster multiple
        return self.rng.randrange(1, max(2, small_max // gran + 1)) * gran + self.rng.choice((0, 0, 512, -512))

    def extent(self, vsize: int, gran: int) -> tuple[int, int]:
        """A guest range: aligned or not, inside a cluster, crossing clusters, near the end of the disk."""
        rng = self.rng
        vsize = max(vsize, 512)
        r = rng.random()
        if r < 0.15:
            off = max(0, vsize - rng.randrange(1, 2 * gran + 1))         # near the end
        elif r < 0.22 and vsize > 2 * GiB:                               # VMDK 2 GiB extents, 4 GiB
            edge = rng.choice([b for b in (2 * GiB - 64 * KiB, 2 * GiB, 4 * GiB - 128 * KiB, 4 * GiB, 6 * GiB)
                               if b < vsize] or [vsize // 2])
            off = edge - rng.randrange(0, 2 * gran)
        elif r < 0.45 and vsize > gran:
            off = rng.randrange(1, vsize // gran + 1) * gran - rng.choice((512, 1, 4 * KiB, gran // 2))
        else:
            off = rng.randrange(0, vsize)
        if rng.random() < 0.5:
            off = off // 512 * 512
        off = max(0, min(off, vsize - 1))
        r = rng.random()
        if r < 0.3:
            n = rng.randrange(1, 9) * 512
        elif r < 0.5:
            n = rng.randrange(1, 10000)
        elif r < 0.8:
            n = gran * rng.randrange(1, 3) + rng.choice((0, 0, 512, 1))
        else:
            n = rng.randrange(1, 3 * gran + 1)
        n = min(n, 4 * MiB, vsize - off)
        return off, max(n, 1)

    def writes(self, vsize: int, gran: int, count: int, zero: bool = True, discard: bool = True,
               compress: str | None = None) -> list[str]:
        """qemu-io commands. ``compress``: None, "cluster" (one aligned cluster, qcow) or "any"."""
        rng = self.rng
        out = []
        for _ in range(count):
            off, n = self.extent(vsize, gran)
            r = rng.random()
            if zero and r < 0.15:
                out.append(f"write -z {off} {n}")
            elif zero and r < 0.22:
                out.append(f"write -z -u {off} {n}")
            elif discard and r < 0.3:
                out.append(f"discard {off} {n}")
            elif compress and r < 0.45:
                if compress == "cluster":
                    c = rng.randrange(0, max(1, vsize // gran))
                    off, n = c * gran, gran
                out.append(f"write -c -P {rng.randrange(256):#x} {off} {n}")
            else:
                out.append(f"write -P {rng.randrange(256):#x} {off} {n}")
        return out


def _create(fmt: str, name: str, size: int, opts: list[str], backing: tuple[str, str] | None = None) -> Op:
    o = ["-o", ",".join(opts)] if opts else []
    b = ["-b", backing[0], "-F", backing[1]] if backing else []
    return Op(["qemu-img", "create", "-q", "-f", fmt, *o, *b, name, str(size)])


def _options(g: _Gen, fmt: str) -> tuple[list[str], int, dict]:
    """(create options, the granule writes should cross, facts) of a random image of ``fmt``."""
    rng = g.rng
    facts: dict = {}
    if fmt == "qed":
        cs = rng.choice((4 * KiB, 8 * KiB, 16 * KiB, 64 * KiB, 64 * KiB, 128 * KiB, MiB))
        opts = [f"cluster_size={cs}"] if cs != 64 * KiB or rng.random() < 0.3 else []
        if rng.random() < 0.6:
            opts.append(f"table_size={rng.choice((1, 2, 4, 8, 16))}")
        return opts, cs, facts
    if fmt == "qcow":
        return [], 4 * KiB, facts
    if fmt == "vdi":
        static = rng.random() < 0.25
        facts["static"] = static
        return (["static=on"] if static else []), MiB, facts
    if fmt == "vmdk":
        sub = rng.choice(VMDK_SUBFORMATS + ("monolithicSparse",))
        opts = [f"subformat={sub}"] if sub != "monolithicSparse" or rng.random() < 0.5 else []
        if rng.random() < 0.3:
            opts.append(f"adapter_type={rng.choice(('ide', 'buslogic', 'lsilogic', 'legacyESX'))}")
        if rng.random() < 0.25:
            opts.append("compat6=on")
        elif rng.random() < 0.25:
            opts.append(f"hwversion={rng.choice(('4', '6', '7', '21'))}")
        if sub in ("monolithicSparse", "twoGbMaxExtentSparse") and rng.random() < 0.35:
            opts.append("zeroed_grain=on")
        if rng.random() < 0.1:
            opts.append("toolsversion=1234")
        facts["subformat"] = sub
        return opts, 64 * KiB, facts
    if fmt == "vpc":
        sub = rng.choice(("dynamic", "dynamic", "fixed"))
        opts = [f"subformat={sub}"] if sub == "fixed" or rng.random() < 0.3 else []
        if rng.random() < 0.4:
            opts.append(f"force_size={rng.choice(('on', 'off'))}")
        facts["subformat"] = sub
        return opts, 2 * MiB, facts
    if fmt == "vhdx":
        sub = rng.choice(("dynamic", "dynamic", "fixed"))
        opts = [f"subformat={sub}"] if sub == "fixed" or rng.random() < 0.3 else []
        bs = rng.choice((0, 0, MiB, 2 * MiB, 8 * MiB, 32 * MiB))
        if bs:
            opts.append(f"block_size={bs}")
        if rng.random() < 0.3:
            opts.append(f"log_size={rng.choice((1, 2, 4)) * MiB}")
        if rng.random() < 0.3:
            opts.append(f"block_state_zero={rng.choice(('on', 'off'))}")
        facts["subformat"] = sub
        return opts, bs or 8 * MiB, facts
    raise ValueError(fmt)


def _size_for(g: _Gen, fmt: str, gran: int, facts: dict) -> int:
    sub = facts.get("subformat")
    big = True
    small_max = 64 * MiB
    if fmt == "vdi" and facts.get("static"):
        big, small_max = False, 16 * MiB
    if fmt in ("vpc", "vhdx") and sub == "fixed":
        big, small_max = fmt == "vpc", 48 * MiB
    if fmt == "vhdx":
        big = big and g.rng.random() < 0.5
    if fmt == "qcow":  # 4 KiB clusters: qemu-img map of a multi-GiB qcow takes tens of seconds
        big = big and g.rng.random() < 0.3
    return g.size(gran, big, small_max)


def _source_image(g: _Gen, name_stem: str, ops: list[Op], exclude: str) -> tuple[str, str, int]:
    """A small image of another format with a few writes, to convert from. Returns (name, fmt, size)."""
    fmt = g.rng.choice([f for f in ("raw", "qcow2", *FORMATS) if f != exclude])
    size = g.size(64 * KiB, big=False, small_max=24 * MiB)
    name = f"{name_stem}.{EXT[fmt]}"
    ops.append(_create(fmt, name, size, []))
    ops.append(_io(fmt, name, g.writes(size, 64 * KiB, g.rng.randrange(1, 8), compress=None)))
    return name, fmt, size


def generate(seed: int, fmt: str | None = None) -> History:
    """The history of seed ``seed`` (format drawn from the seed unless given)."""
    g = _Gen(seed)
    rng = g.rng
    fmt = fmt or rng.choice(FORMATS)
    target = f"top.{EXT[fmt]}"
    h = History(seed, fmt, target)
    opts, gran, facts = _options(g, fmt)
    h.tags += [f"{fmt}:{o}" for o in opts] or [f"{fmt}:defaults"]
    size = _size_for(g, fmt, gran, facts)
    backing = None
    if (fmt in ("qed", "qcow", "vmdk") and rng.random() < 0.4
            and facts.get("subformat") in (None, "monolithicSparse", "twoGbMaxExtentSparse")):  # qemu: no flat delta
        bfmt = "vmdk" if fmt == "vmdk" else rng.choice(("raw", "raw", "qcow2", "qcow2", "vmdk", "qed", "vdi", "vpc"))
        bsize = min(size if rng.random() < 0.3 else g.size(64 * KiB, big=False, small_max=2 * max(size, MiB)),
                    6 * GiB)
        bname = f"base.{EXT[bfmt]}"
        bopts = []
        if bfmt == "vmdk" and rng.random() < 0.5:
            bopts = [f"subformat={rng.choice(VMDK_SUBFORMATS[:4])}"]
        h.ops.append(_create(bfmt, bname, bsize, bopts))
        h.ops.append(_io(bfmt, bname, g.writes(bsize, 64 * KiB, rng.randrange(1, 8), discard=False)))
        backing = (bname, bfmt)
        h.tags.append(f"{fmt}:backing={bfmt}")
    if backing is None and rng.random() < 0.2:
        src, sfmt, ssize = _source_image(g, "src", h.ops, fmt)
        can_compress = fmt == "qcow" or facts.get("subformat") == "streamOptimized"
        comp = ["-c"] if rng.random() < 0.3 and can_compress else []
        o = ["-o", ",".join(opts)] if opts else []
        h.ops.append(Op(["qemu-img", "convert", "-f", sfmt, "-O", fmt, *comp, *o, src, target], creates=True))
        h.tags.append(f"{fmt}:convert-from={sfmt}" + (",-c" if comp else ""))
        size = ssize
    else:
        h.ops.append(_create(fmt, target, size, opts, backing))
        h.ops[-1].creates = True
    compress = ("cluster" if fmt == "qcow" else "any" if facts.get("subformat") == "streamOptimized" else None)
    vsize = size
    for _ in range(rng.randrange(1, 4)):
        if fmt == "qed" and rng.random() < 0.3:  # the only one of these formats qemu 7.2 resizes
            new = vsize + rng.choice((512, 64 * KiB, MiB + 512, rng.randrange(1, 8 * MiB), -512))
            h.ops.append(Op(["qemu-img", "resize", "-q", "-f", fmt, target, str(new)]))
            h.tags.append(f"{fmt}:resize")
            vsize = new
        h.ops.append(_io(fmt, target, g.writes(vsize, gran, rng.randrange(1, 10), compress=compress)))
    if backing and fmt == "qed" and rng.random() < 0.3:  # a new backing file (name, size, format)
        nfmt = rng.choice(("raw", "qcow2"))
        nname = f"other-base-with-a-longer-name.{EXT[nfmt]}"
        nsize = g.size(64 * KiB, big=False, small_max=2 * max(vsize, MiB))
        h.ops.append(_create(nfmt, nname, nsize, []))
        h.ops.append(_io(nfmt, nname, g.writes(nsize, 64 * KiB, rng.randrange(1, 5))))
        unsafe = ["-u"] if rng.random() < 0.5 else []
        h.ops.append(Op(["qemu-img", "rebase", *unsafe, "-f", fmt, "-b", nname, "-F", nfmt, target]))
        h.tags.append(f"{fmt}:rebase={nfmt}{'-u' if unsafe else ''}")
        h.ops.append(_io(fmt, target, g.writes(vsize, gran, rng.randrange(1, 5))))
    if rng.random() < 0.2:
        h.ops.append(_io(fmt, target, g.writes(vsize, gran, rng.randrange(1, 5), compress=compress) + ["abort"]))
        h.tags.append(f"{fmt}:crash")
    return h


# ---------------------------------------------------------------------------------------------- running

def run_qemu(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = {"qemu-img": QEMU_IMG, "qemu-io": QEMU_IO}[tool]
    return subprocess.run([exe, *args], cwd=cwd, env=_ENV, capture_output=True, text=True, check=False)


def run_imgscope(*args: str, cwd: Path, inprocess: bool = False) -> tuple[int, str, str]:
    """``imgscope ARGS`` in ``cwd``: a subprocess (what a user runs), or ``imgscope.cli.main`` in this
    process (the same code path, without the interpreter start-up: used by the CI test)."""
    if not inprocess:
        p = subprocess.run([IMGSCOPE, *args], cwd=cwd, env=_ENV, capture_output=True, text=True, check=False)
        return p.returncode, p.stdout, p.stderr
    from imgscope import cli
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(args))
            except SystemExit as e:  # argparse
                rc = int(e.code or 0)
            except Exception as e:  # noqa: BLE001 - a crash is a result like any other
                rc = 99
                err.write(f"{type(e).__name__}: {e}")
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


@dataclass
class Mismatch:
    what: str      # info / map / check / repair / content / open
    key: str       # what differs (for grouping and minimisation)
    detail: str

    def __str__(self) -> str:
        return f"[{self.what}] {self.key}: {self.detail}"


def _json(text: str):
    return json.loads(text) if text.strip() else None


def _clip(v, n: int = 400) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + "..."


def compare(d: Path, fmt: str, target: str, inprocess: bool = False, repair: bool = True,
            content: bool = True, text: bool = True) -> list[Mismatch]:
    """Every disagreement between imgscope's CLI and qemu-img on ``d/target``; with ``text`` also every
    text (JSON and human) that is not qemu-img's byte for byte (tests/oracle/qemu_text.py)."""
    out: list[Mismatch] = []
    q = run_qemu("qemu-img", "info", "--output=json", "-U", "-f", fmt, target, cwd=d)
    rc, so, se = run_imgscope("info", "--output", "json", "-f", fmt, target, cwd=d, inprocess=inprocess)
    qinfo = _json(q.stdout) if q.returncode == 0 else None
    if qinfo is None:
        # qemu cannot open the image read-only (e.g. a VHDX log to replay): imgscope's check must say so
        crc, _, _ = run_imgscope("check", "--output", "json", "-f", fmt, target, cwd=d, inprocess=inprocess)
        if crc != 1:
            out.append(Mismatch("open", "qemu-cannot-open", f"qemu: {q.stderr.strip()}; imgscope check rc {crc}"))
        return out
    if rc != 0:
        out.append(Mismatch("info", "imgscope-failed", se.strip() or f"rc {rc}"))
        return out
    mine = _json(so)
    for k, v in qinfo.items():
        if k == "actual-size":
            continue
        if mine.get(k) != v:
            out.append(Mismatch("info", k, f"qemu {_clip(v)} imgscope {_clip(mine.get(k))}"))
    for k in mine:
        if k not in qinfo and not k.startswith("imgscope-") and k != "actual-size":
            out.append(Mismatch("info", k, f"imgscope only: {_clip(mine[k])}"))
    chain = None
    if "backing-filename" in qinfo:
        q = run_qemu("qemu-img", "info", "--output=json", "-U", "--backing-chain", "-f", fmt, target, cwd=d)
        rc, so, se = run_imgscope("info", "--chain", "--output", "json", "-f", fmt, target, cwd=d,
                                  inprocess=inprocess)
        qc, mc = _json(q.stdout), _json(so) if rc == 0 else None
        if mc is None or len(mc) != len(qc):
            out.append(Mismatch("info", "chain-length", f"qemu {len(qc)} imgscope {None if mc is None else len(mc)}"
                                                        f" {se.strip()}"))
        else:
            for depth, (a, b) in enumerate(zip(qc, mc)):
                for k, v in a.items():
                    if k != "actual-size" and b.get(k) != v:
                        out.append(Mismatch("info", f"chain[{depth}].{k}",
                                            f"qemu {_clip(v)} imgscope {_clip(b.get(k))}"))
            chain = mc
    # map
    q = run_qemu("qemu-img", "map", "--output=json", "-U", "-f", fmt, target, cwd=d)
    rc, so, se = run_imgscope("map", "--output", "json", "-f", fmt, target, cwd=d, inprocess=inprocess)
    qmap = _json(q.stdout) if q.returncode == 0 else None
    mmap = _json(so) if rc == 0 else None
    if q.returncode < 0:  # qemu-img itself crashed (an assertion in qemu 7.2): no oracle for map
        qmap = mmap = None
    elif (qmap is None) != (mmap is None):
        out.append(Mismatch("map", "rc", f"qemu rc {q.returncode} {q.stderr.strip()} imgscope rc {rc} {se.strip()}"))
    elif qmap != mmap:
        out.append(Mismatch("map", "extents", _first_diff(qmap, mmap)))
    # check
    q = run_qemu("qemu-img", "check", "--output=json", "-U", "-f", fmt, target, cwd=d)
    rc, so, se = run_imgscope("check", "--output", "json", "-f", fmt, target, cwd=d, inprocess=inprocess)
    if q.returncode < 0:
        pass  # qemu-img crashed: no oracle
    elif q.returncode != rc:
        out.append(Mismatch("check", "rc", f"qemu {q.returncode} ({q.stderr.strip()[:200]}) imgscope {rc} "
                                           f"({se.strip()[:200]})"))
    elif _json(q.stdout) != _json(so):
        out.append(Mismatch("check", "json", f"qemu {_clip(_json(q.stdout))} imgscope {_clip(_json(so))}"))
    if text:
        def ours(*args: str) -> tuple[str, str, int]:
            rc, so, se = run_imgscope(*args, cwd=d, inprocess=inprocess)
            return so, se, rc
        out += [Mismatch("text", k, v) for k, v in qemu_text.text_diffs(
            lambda *a: qemu_text.outcome(run_qemu("qemu-img", *a, cwd=d)), ours,
            ["-f", fmt, target], ["-f", fmt, target], qinfo["virtual-size"], "backing-filename" in qinfo)]
    if repair and fmt == "qed":
        out += _compare_repair(d, fmt, target, inprocess)
    if content and qmap is not None and mmap is not None:
        out += _compare_content(d, fmt, target, mmap, chain, mine)
        if not out and (fmt == "vhdx" or any(e["data"] and "offset" not in e for e in mmap)):
            out += _compare_guest_map(d, fmt, target)
    return out


def _first_diff(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"entry {i}: qemu {x} imgscope {y}"
    return f"qemu {len(a)} entries, imgscope {len(b)}"


def _compare_repair(d: Path, fmt: str, target: str, inprocess: bool) -> list[Mismatch]:
    """``check -r leaks`` and ``-r all`` on copies: same JSON, exit code and resulting file."""
    out = []
    for mode in ("leaks", "all"):
        qd, md = d / f".repair-qemu-{mode}", d / f".repair-mine-{mode}"
        for x in (qd, md):
            shutil.rmtree(x, ignore_errors=True)
            x.mkdir()
            for f in d.iterdir():
                if f.is_file():
                    shutil.copy2(f, x / f.name)
        q = run_qemu("qemu-img", "check", "-r", mode, "--output=json", "-f", fmt, target, cwd=qd)
        rc, so, se = run_imgscope("check", "-r", mode, "--output", "json", target, cwd=md, inprocess=inprocess)
        if q.returncode != rc:
            out.append(Mismatch("repair", f"{mode}-rc", f"qemu {q.returncode} {q.stderr.strip()[:200]} imgscope {rc} "
                                                        f"{se.strip()[:200]}"))
        elif _json(q.stdout) != _json(so):
            out.append(Mismatch("repair", f"{mode}-json", f"qemu {_clip(_json(q.stdout))} imgscope {_clip(_json(so))}"))
        elif (qd / target).read_bytes() != (md / target).read_bytes():
            out.append(Mismatch("repair", f"{mode}-file", "files differ after repair"))
        for x in (qd, md):
            shutil.rmtree(x, ignore_errors=True)
    return out


def _extent_files(info: dict, path: str, size: int) -> list[tuple[int, int, str]]:
    """(guest start, guest end, file) of each file holding offsets of one image: VMDK extents or itself."""
    exts = (info.get("format-specific") or {}).get("data", {}).get("extents") if info.get("format") == "vmdk" else None
    if not exts:
        return [(0, size, path)]
    out, pos = [], 0
    for e in exts:
        out.append((pos, pos + e["virtual-size"], e["filename"]))
        pos += e["virtual-size"]
    return out


def _compare_content(d: Path, fmt: str, target: str, mmap: list, chain: list | None,
                     info: dict) -> list[Mismatch]:
    """Guest bytes read where imgscope's map says they are, against ``qemu-img convert -O raw``."""
    raw = d / ".content.raw"
    q = run_qemu("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", target, str(raw), cwd=d)
    if q.returncode != 0:
        return [Mismatch("content", "convert-failed", q.stderr.strip())]
    layers = chain or [info]
    files = [_extent_files(layer, layer["filename"], layer["virtual-size"]) for layer in layers]
    out: list[Mismatch] = []
    handles: dict[str, object] = {}
    try:
        with open(raw, "rb") as want_f:
            for e in mmap:
                start, end = e["start"], e["start"] + e["length"]
                if e["data"] and "offset" not in e:
                    continue  # compressed / no host offset: nothing to read through the map
                if e["depth"] >= len(files):
                    out.append(Mismatch("content", "depth", f"extent {e} deeper than the chain"))
                    continue
                if e["zero"] or not e["data"]:  # zero, a host hole, or unallocated in the whole chain
                    bad = _nonzero(want_f, start, end)
                    if bad is not None:
                        out.append(Mismatch("content", "not-zero", f"guest {bad:#x} in extent {e}: qemu reads "
                                                                   "non-zero bytes"))
                        return out
                    continue
                pos = start
                while pos < end:
                    n = min(end - pos, 4 * MiB)
                    want = os.pread(want_f.fileno(), n, pos).ljust(n, b"\0")  # no buffering: _nonzero lseeks
                    got = _read_mapped(d, handles, files[e["depth"]], e, pos, n)
                    if got != want:
                        k = next(i for i in range(n) if got[i] != want[i])
                        out.append(Mismatch("content", "bytes", f"guest {pos + k:#x} in extent {e}: imgscope "
                                                                f"{got[k:k + 8].hex()} qemu {want[k:k + 8].hex()}"))
                        return out
                    pos += n
    finally:
        for f in handles.values():
            f.close()
        raw.unlink(missing_ok=True)
    return out


def _compare_guest_map(d: Path, fmt: str, target: str) -> list[Mismatch]:
    """Where ``map`` prints no host offset (VHDX, compressed grains/clusters): imgscope's per-cluster guest
    map (the ``mapping()`` frame's source) read back, compressed slots inflated, against qemu's raw image."""
    import zlib

    import imgscope
    from imgscope import model
    raw = d / ".content.raw"
    q = run_qemu("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", target, str(raw), cwd=d)
    if q.returncode != 0:
        return [Mismatch("content", "convert-failed", q.stderr.strip())]
    try:
        with imgscope.open(str(d / target)) as img, open(raw, "rb") as want_f, open(d / target, "rb") as f:
            if fmt == "vmdk" and (len(img.extents_list) != 1 or img.extents_list[0].src is not img.src):
                return []
            gm = img.guest_map()
            cs, vsize = gm.cluster_size, gm.virtual_size
            kinds = gm.kind.tolist()
            for i in [i for i, k in enumerate(kinds) if k in (model.DATA, model.COMPRESSED)]:
                k = kinds[i]
                n = min(cs, vsize - i * cs)
                want = os.pread(want_f.fileno(), n, i * cs).ljust(n, b"\0")
                host, length = int(gm.host[i]), int(gm.length[i])
                if k == model.DATA:
                    got = os.pread(f.fileno(), n, host).ljust(n, b"\0")
                else:
                    blob = os.pread(f.fileno(), length, host)
                    # VMDK: 12-byte grain marker, then a zlib stream; qcow v1: raw deflate
                    got = zlib.decompress(blob[12:]) if fmt == "vmdk" else zlib.decompressobj(-12).decompress(blob)
                    # a slot smaller than the grain: its part of the inflated grain
                    at = i * cs % (img.extents_list[0].grain if fmt == "vmdk" else cs)
                    got = got[at:at + n].ljust(n, b"\0")
                if got != want:
                    j = next(x for x in range(n) if got[x] != want[x])
                    return [Mismatch("content", f"guest-map-{model.KINDS[k]}",
                                     f"slot {i} (guest {i * cs + j:#x}, host {host:#x}+{length}): imgscope "
                                     f"{got[j:j + 8].hex()} qemu {want[j:j + 8].hex()}")]
            zero_kinds = (model.ZERO,) if img.backing() is not None else (model.ZERO, model.UNALLOCATED)
            i = 0
            while i < len(kinds):
                if kinds[i] not in zero_kinds:
                    i += 1
                    continue
                j = i
                while j < len(kinds) and kinds[j] in zero_kinds:
                    j += 1
                bad = _nonzero(want_f, i * cs, min(j * cs, vsize))
                if bad is not None:
                    return [Mismatch("content", "guest-map-zero", f"guest {bad:#x} (slot {bad // cs}, "
                                     f"{model.KINDS[kinds[bad // cs]]}): qemu reads non-zero bytes")]
                i = j
    except Exception as e:  # noqa: BLE001
        return [Mismatch("content", "guest-map-error", f"{type(e).__name__}: {e}")]
    finally:
        raw.unlink(missing_ok=True)
    return []


def _nonzero(f, start: int, end: int) -> int | None:
    """First non-zero byte of the (sparse) file in [start, end), reading only its data segments."""
    fd = f.fileno()
    pos = start
    while pos < end:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole up to EOF
            return None
        if pos >= end:
            return None
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        while pos < hole:
            n = min(hole - pos, 4 * MiB)
            buf = os.pread(fd, n, pos)
            if not buf:
                return None
            if any(buf):
                return pos + next(i for i, b in enumerate(buf) if b)
            pos += len(buf)
    return None


def _read_mapped(d: Path, handles: dict, files: list, e: dict, pos: int, n: int) -> bytes:
    """``n`` guest bytes at ``pos`` of extent ``e`` read from the file its offset refers to."""
    if len(files) > 1:
        lo, _, fname = next(f for f in files if f[0] <= e["start"] < f[1])
    else:
        lo, _, fname = files[0]
    path = fname if os.path.isabs(fname) else str(d / fname)
    f = handles.get(path)
    if f is None:
        f = handles[path] = open(path, "rb")
    return os.pread(f.fileno(), n, e["offset"] + pos - e["start"]).ljust(n, b"\0")


# ---------------------------------------------------------------------------------------------- one seed

@dataclass
class Result:
    history: History
    mismatches: list[Mismatch]
    error: str | None = None     # the history could not be built (create refused...)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def run_history(h: History, workdir: Path, inprocess: bool = False, keep: bool = False) -> Result:
    d = workdir / f"seed-{h.seed}-{h.fmt}"
    shutil.rmtree(d, ignore_errors=True)
    try:
        refused = h.replay(d)
        if refused or not (d / h.target).exists():
            return Result(h, [], f"qemu did not create the image: {refused}")
        return Result(h, compare(d, h.fmt, h.target, inprocess=inprocess))
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def minimise(h: History, workdir: Path, inprocess: bool = False) -> tuple[History, list[Mismatch]]:
    """Drop ops (and qemu-io commands inside ops) while the first mismatch's key stays."""
    first = run_history(h, workdir, inprocess).mismatches
    if not first:
        return h, first
    key = (first[0].what, first[0].key)

    def still(c: History) -> list[Mismatch] | None:
        r = run_history(c, workdir, inprocess)
        return r.mismatches if any((m.what, m.key) == key for m in r.mismatches) else None

    cur, mism = h, first
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(cur.ops))):
            c = cur.without(i)
            m = still(c)
            if m:
                cur, mism, changed = c, m, True
        for i, op in enumerate(cur.ops):
            if op.argv[0] != "qemu-io":
                continue
            j = 3
            while j < len(op.argv) - 1:
                if op.argv[j] == "-c" and op.argv[j + 1] != "abort":
                    argv = op.argv[:j] + op.argv[j + 2:]
                    c = History(cur.seed, cur.fmt, cur.target, cur.ops[:i] + [Op(argv)] + cur.ops[i + 1:], cur.tags)
                    m = still(c) if "-c" in argv else None
                    if m:
                        cur, mism, changed, op = c, m, True, Op(argv)
                        continue
                j += 2
    return cur, mism


if __name__ == "__main__":  # print one history's script
    print(generate(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None).script())
