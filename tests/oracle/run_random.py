"""Run random qcow2 histories against qemu-img and report every disagreement with imgscope's CLI.

    .venv/bin/python tests/oracle/run_random.py -n 200 --seed 1000 [-j 2] [--repair] [--snapmap]
    .venv/bin/python tests/oracle/run_random.py --only 1234 --keep /tmp/h1234   # one history, kept

For each failing history it prints the seed, the differences and a minimal history
(steps removed one at a time while the same kind of disagreement remains), as a
shell script of qemu-img/qemu-io commands. Exit status 1 when any history failed.
"""
from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # oracle.qemu_text
import random_history as rh  # noqa: E402


def options_for(seed: int, repair: bool, snapmap: bool) -> dict:
    """Which extra comparisons a seed runs (every 4th seed repairs, every 3rd maps snapshots, when enabled)."""
    return {"repair": repair or seed % 4 == 0, "snapmap": snapmap or seed % 3 == 0}


def categories(diffs: list[str]) -> set[str]:
    out = set()
    for d in diffs:
        m = re.match(r"[^:]*: (\S+(?: -[rl])?)(?:\s+\S+)?", d)
        out.add(m.group(1) if m else d[:40])
    return out


def one(seed: int, base: Path, repair: bool = False, snapmap: bool = False, minimize: bool = True,
        keep: Path | None = None) -> dict:
    work = keep or base / f"h{seed}"
    t0 = time.time()
    try:
        opts = options_for(seed, repair, snapmap)
        h = rh.generate(seed, work, checkpoint=lambda h: rh.compare(work, h.top, h.steps[-1].luks, **opts))
        diffs = h.diffs or rh.compare(work, h.top, h.steps[-1].luks, **opts)
    except Exception:
        return {"seed": seed, "error": traceback.format_exc(), "steps": 0, "secs": time.time() - t0}
    out = {"seed": seed, "steps": len(h.steps), "diffs": diffs, "secs": time.time() - t0,
           "script": h.script(), "stats": dict(rh.STATS)}
    rh.STATS.clear()
    if diffs and minimize:
        out["minimal"] = minimal(h, work.parent / f"m{seed}", categories(diffs), opts)
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return out


def minimal(h: rh.History, work: Path, cats: set[str], opts: dict) -> str:
    """Drop steps (never the first) one at a time, last first, while a disagreement of a kind in ``cats``
    remains; return the remaining steps as a script with the remaining differences."""
    steps = list(h.steps)
    diffs: list[str] = []

    def fails(cand: list[rh.Step]) -> list[str]:
        rh.replay(cand, work)
        top = cand[-1].top
        if not (work / top).exists():
            return []
        d = rh.compare(work, top, cand[-1].luks, **opts)
        return d if categories(d) & cats else []

    i = len(steps) - 1
    while i >= 1:
        cand = steps[:i] + steps[i + 1:]
        d = fails(cand)
        if d:
            steps, diffs = cand, d
        i -= 1
    if not diffs:
        diffs = fails(steps)
    shutil.rmtree(work, ignore_errors=True)
    return "\n".join([f"# top: {steps[-1].top}", *(s.text() for s in steps), *("# " + x for x in diffs)])


def _worker(args: tuple) -> dict:
    return one(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50, help="number of histories")
    ap.add_argument("--seed", type=int, default=0, help="first seed (histories use seed, seed+1, ...)")
    ap.add_argument("--only", type=int, help="run just this seed")
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--repair", action="store_true", help="compare check -r all on every history")
    ap.add_argument("--snapmap", action="store_true", help="compare map -l SNAP on every history")
    ap.add_argument("--no-minimize", action="store_true")
    ap.add_argument("--keep", type=Path, help="with --only: build the history in this directory and keep it")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every history's script")
    a = ap.parse_args(argv)
    seeds = [a.only] if a.only is not None else list(range(a.seed, a.seed + a.n))
    base = Path(tempfile.mkdtemp(prefix="imgscope-random-"))
    jobs = [(s, base, a.repair, a.snapmap, not a.no_minimize, a.keep if a.only is not None else None)
            for s in seeds]
    failed = errors = steps = 0
    t0 = time.time()
    try:
        if a.jobs > 1:
            with multiprocessing.Pool(a.jobs) as pool:
                results = pool.imap_unordered(_worker, jobs)
                failed, errors, steps = _report(results, a.verbose)
        else:
            failed, errors, steps = _report(map(_worker, jobs), a.verbose)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{len(seeds)} histories ({steps} steps) in {time.time() - t0:.0f} s: "
          f"{len(seeds) - failed - errors} agree, {failed} disagree, {errors} generator errors")
    return 1 if failed or errors else 0


def _report(results, verbose: bool) -> tuple[int, int, int]:
    failed = errors = steps = 0
    stats: dict[str, int] = {}
    for r in results:
        steps += r["steps"]
        for k, v in r.get("stats", {}).items():
            stats[k] = stats.get(k, 0) + v
        if "error" in r:
            errors += 1
            print(f"seed {r['seed']}: GENERATOR ERROR\n{r['error']}", flush=True)
            continue
        status = "ok" if not r["diffs"] else "DIFF"
        print(f"seed {r['seed']}: {status} ({r['steps']} steps, {r['secs']:.1f} s)", flush=True)
        if verbose:
            print("   " + r["script"].replace("\n", "\n   "))
        if r["diffs"]:
            failed += 1
            for d in r["diffs"]:
                print(f"   {d}")
            if "minimal" in r:
                print("   minimal history:\n      " + r["minimal"].replace("\n", "\n      "), flush=True)
    print("images compared: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))
    return failed, errors, steps


if __name__ == "__main__":
    sys.exit(main())
