"""Fleet-scan benchmark: images per second, local process pool vs Dask LocalCluster vs
`qemu-img check` per image in a shell loop, on the same generated fleet (issue #7).

    .venv/bin/python benchmarks/scan_fleet.py [--size 400] [--repeat 3]

Prints one table; numbers go to docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scan.fleet import build  # noqa: E402

from imgscope.scan import scan  # noqa: E402


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "work" / "fleet"))
    args = ap.parse_args()
    paths = [str(p) for p in build(Path(args.workdir), size=args.size)]
    n = len(paths)
    jobs = os.cpu_count() or 1
    rows = []
    rows.append(("imgscope scan, 1 process", _median(lambda: scan(paths, jobs=1), args.repeat)))
    rows.append((f"imgscope scan, pool of {jobs}", _median(lambda: scan(paths, jobs=jobs), args.repeat)))
    try:
        import distributed
        with distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            scan(paths[:4], scheduler=client)  # warm the workers' imports
            rows.append((f"imgscope scan, Dask LocalCluster ({jobs} workers)",
                         _median(lambda: scan(paths, scheduler=client), args.repeat)))
    except ImportError:
        print("distributed not installed: Dask row skipped")
    script = "for f in \"$@\"; do qemu-img check -U --output=json \"$f\" >/dev/null 2>&1; done"
    rows.append(("qemu-img check per image (shell loop)",
                 _median(lambda: subprocess.run(["sh", "-c", script, "sh", *paths]), args.repeat)))
    base = rows[-1][1]
    print(f"fleet: {n} images, {jobs} cores, median of {args.repeat}")
    print(f"{'method':<48}{'total s':>9}{'ms/image':>10}{'images/s':>10}{'vs qemu-img':>12}")
    for name, t in rows:
        print(f"{name:<48}{t:>9.2f}{1000 * t / n:>10.2f}{n / t:>10.1f}{t / base:>11.2f}x")


if __name__ == "__main__":
    main()
