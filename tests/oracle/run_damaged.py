"""Randomly damaged images against qemu-img: where do imgscope and qemu-img disagree?

    .venv/bin/python tests/oracle/run_damaged.py -n 400 --seed 41 [--format qcow2 ...] [--keep DIR]

Each round takes a seed image of fuzz/seeds.py (made by qemu-img), applies 1-3 structural
mutations of fuzz/mutators.py (header fields, table entries, truncation, copies of offsets) and
runs ``info``, ``map`` and ``check`` with ``--output json`` through both tools.  A round agrees when
the exit code and stdout are the same byte for byte; the others are counted by (format, command,
qemu's exit code, imgscope's) and the first two images of each class are kept for a look.

Not a pass/fail test: some classes differ by design (docs/cli.md: imgscope's `info` and `map` still
read images qemu refuses to open; `info` then has an `imgscope-qemu-refuses` key; its limits refuse
what qemu would spend minutes on).  It is how qemu's reading rules were found (docs/testing.md).
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzz import mutators, seeds  # noqa: E402

COMMANDS = ("info", "map", "check")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="damaged images")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", action="append", help="only seeds of these formats")
    ap.add_argument("--keep", default="build/damaged", help="where disagreeing images are kept")
    ap.add_argument("--qemu-timeout", type=float, default=20, help="seconds (qemu-img can take minutes)")
    args = ap.parse_args(argv)
    keep = Path(args.keep)
    keep.mkdir(parents=True, exist_ok=True)
    made = seeds.make_seeds(keep / "seeds", args.format)
    items = [(fmt, p, mutators.describe(p, fmt)) for fmt, ps in made.items() for p in ps]
    rng = random.Random(args.seed)
    imgscope = [sys.executable, "-m", "imgscope.cli"]
    same, slow = 0, 0
    differ: Counter = Counter()
    for _ in range(args.n):
        fmt, seed, lay = rng.choice(items)
        target = keep / f"current{seed.suffix}"
        mutators.write_sparse(target, mutators.apply(seed.read_bytes(), lay,
                                                     mutators.random_ops(rng, lay, rng.randint(1, 3))))
        for cmd in COMMANDS:
            try:
                q = subprocess.run(["qemu-img", cmd, "--output=json", "-f", fmt, str(target)], capture_output=True,
                                   text=True, timeout=args.qemu_timeout)
            except subprocess.TimeoutExpired:
                slow += 1
                continue
            o = subprocess.run([*imgscope, cmd, "--output", "json", "-f", fmt, str(target)], capture_output=True,
                               text=True, timeout=120)
            if (q.returncode, q.stdout) == (o.returncode, o.stdout):
                same += 1
                continue
            key = (fmt, cmd, q.returncode, o.returncode)
            differ[key] += 1
            if differ[key] <= 2:
                kept = keep / f"{fmt}-{cmd}-{q.returncode}-{o.returncode}-{differ[key]}{seed.suffix}"
                shutil.copy(target, kept)
                print(f"{key}: {kept}\n    qemu-img: {q.stderr.strip()[-160:]!r}\n    imgscope: {o.stderr.strip()[-160:]!r}",
                      flush=True)
    total = same + sum(differ.values())
    print(f"\n{same} of {total} runs agree ({100 * same / max(total, 1):.1f}%); qemu-img timed out {slow} times")
    for key, n in differ.most_common():
        print(f"  {n:4d}  {key[0]} {key[1]}: qemu-img exit {key[2]}, imgscope exit {key[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
