"""Interleaved A/B of two imgscope source trees (and qemu-img) on the cached benchmark images.

    .venv/bin/python benchmarks/ab.py OLD_TREE [--runs 5] [--only tib,snap1000,dirty]

OLD_TREE is a source tree with its native extension built in place, e.g.
``git archive HEAD | tar -x -C /tmp/head && (cd /tmp/head && ../../work/main/.venv/bin/python
native/build_ffi.py)``; it is put first on PYTHONPATH.  Each round runs old, new (this tree) and
qemu-img once, in that order, so all three see the same load on a shared machine.  Prints the median
wall time, CPU time (user + system, from wait4) and peak RSS of each.  ``check -r all`` runs on a
fresh copy of the dirty image each time, written back to disk before the timed run.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import CHILD_ENV, Timing, fmt_seconds, fresh_copy, run_process  # noqa: E402

WORK = HERE / "work"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("old_tree")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="tib,snap1000,dirty")
    args = ap.parse_args()
    os.chdir(WORK)  # not a source tree: ``python -m`` puts the working directory first on sys.path
    py = [sys.executable, "-m", "imgscope.cli"]
    old_env = {**CHILD_ENV, "PYTHONPATH": os.path.abspath(args.old_tree)}
    cases = []
    for name in args.only.split(","):
        p = WORK / f"{name}.qcow2"
        if not p.exists():
            print(f"{name}: not built (run benchmarks/run.py first)")
            continue
        cases.append((f"{name} check", py + ["check", "--output", "json", str(p)],
                      ["qemu-img", "check", "--output=json", str(p)], None))
        if name == "dirty":
            copy = WORK / "dirty-ab.qcow2"
            cases.append(("dirty check -r all", py + ["check", "-r", "all", "--output", "json", str(copy)],
                          ["qemu-img", "check", "-r", "all", "--output=json", str(copy)], fresh_copy(p, copy)))
    print(f"{'case':22s} {'':8s} {'wall':>9s} {'cpu':>9s} {'rss':>8s}")
    try:
        for what, ours, theirs, prepare in cases:
            t = {"old": Timing(), "new": Timing(), "qemu-img": Timing()}
            for i in range(args.runs + 1):  # the first round is a warm-up
                for key, argv, env in (("old", ours, old_env), ("new", ours, CHILD_ENV), ("qemu-img", theirs, None)):
                    one = run_process(argv, 1, 0, prepare, env=env)
                    if i:
                        t[key].merge(one)
            for key, x in t.items():
                print(f"{what:22s} {key:8s} {fmt_seconds(x.median):>9s} {fmt_seconds(x.median_cpu):>9s} "
                      f"{x.maxrss_kib // 1024:>4d} MiB")
    finally:
        (WORK / "dirty-ab.qcow2").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
