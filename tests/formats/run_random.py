"""Run N random qemu-img/qemu-io histories and compare imgscope's CLI with qemu-img on each.

    .venv/bin/python tests/formats/run_random.py -n 300 --seed 1000 [--formats qed,vmdk] [-j 2] [--inprocess]

Prints one line per failing history, a summary per format and, for each distinct failure
(format + what differs), the minimal history that still shows it as a shell script
(replay it in an empty directory).  Exit code 1 when any history disagreed.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import random_history as RH  # noqa: E402


def _one(args: tuple[int, str | None, str, bool]) -> RH.Result:
    seed, fmt, workdir, inprocess = args
    h = RH.generate(seed, fmt)
    try:
        return RH.run_history(h, Path(workdir), inprocess)
    except Exception as e:  # noqa: BLE001 - report, do not stop the run
        return RH.Result(h, [RH.Mismatch("harness", type(e).__name__, str(e))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=60, help="number of histories")
    p.add_argument("--seed", type=int, default=0, help="first seed (histories use seed, seed+1, ...)")
    p.add_argument("--formats", default=",".join(RH.FORMATS), help="comma-separated qemu formats")
    p.add_argument("-j", type=int, default=1, help="parallel workers")
    p.add_argument("--inprocess", action="store_true", help="call imgscope.cli.main instead of a subprocess")
    p.add_argument("--no-minimise", action="store_true")
    p.add_argument("--workdir", help="where histories are built (default: a temporary directory)")
    args = p.parse_args(argv)
    fmts = args.formats.split(",")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="imgscope-random-", dir=args.workdir) as wd:
        jobs = [(args.seed + i, fmts[i % len(fmts)], wd, args.inprocess) for i in range(args.n)]
        if args.j > 1:
            with ProcessPoolExecutor(args.j) as ex:
                results = list(ex.map(_one, jobs))
        else:
            results = [_one(j) for j in jobs]
        per = collections.defaultdict(collections.Counter)
        failures: dict[tuple, RH.Result] = {}
        for r in results:
            h = r.history
            state = "skipped" if r.error else "ok" if r.ok else "FAIL"
            per[h.fmt][state] += 1
            if r.mismatches:
                print(f"seed {h.seed} {h.fmt} {' '.join(h.tags)}")
                for m in r.mismatches[:5]:
                    print(f"    {m}")
                failures.setdefault((h.fmt, r.mismatches[0].what, r.mismatches[0].key), r)
        print(f"\n{len(results)} histories in {time.time() - t0:.0f} s")
        for fmt in fmts:
            print(f"  {fmt:5} " + ", ".join(f"{k} {v}" for k, v in sorted(per[fmt].items())))
        if failures and not args.no_minimise:
            print(f"\n{len(failures)} distinct failures, minimised:")
            for key, r in failures.items():
                small, mism = RH.minimise(r.history, Path(wd), args.inprocess)
                print(f"\n# {' / '.join(key)} (seed {r.history.seed}, {len(small.ops)} of {len(r.history.ops)} ops)")
                for m in mism[:3]:
                    print(f"#   {m}")
                print(small.script())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
