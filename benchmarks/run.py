"""imgscope against qemu-img, same machine, same run (``make bench``).

Builds (once, cached in benchmarks/work/) a 1 TiB preallocated image, a 64 GiB
image with 1,000 internal snapshots, a scattered image with 524,288 extents and
a dirty lazy-refcounts image; then times whole processes (``imgscope map/info/check
--output json`` against ``qemu-img map/info/check --output=json``) and in-process
API calls, warm cache, median of ``--runs`` runs after one warm-up, and prints a
table with the ratios imgscope/qemu and the targets of docs/performance.md.

    .venv/bin/python benchmarks/run.py [--runs 5] [--cold] [--only tib,snap1000] [--json out.json]
    .venv/bin/python benchmarks/run.py --small --runs 1   # seconds; what the smoke test runs
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import images  # noqa: E402
from measure import Timing, drop_caches, fmt_seconds, fresh_copy, run_process  # noqa: E402


@dataclass
class Row:
    """One line of the result table."""

    image: str
    what: str
    imgscope: float            # seconds (or the measured value for non-time rows)
    qemu: float | None = None  # seconds, when compared against qemu-img
    target: str = ""           # human-readable target
    ok: bool | None = None     # target met?
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.imgscope / self.qemu if self.qemu else None


def imgscope_argv() -> list[str]:
    script = Path(sys.executable).parent / "imgscope"
    return [str(script)] if script.exists() else [sys.executable, "-m", "imgscope.cli"]


def qemu_check_opts(path: Path) -> list[str]:
    """qemu-img check with a 16 MiB refcount cache: runtime options go through --image-opts."""
    name = str(path).replace(",", ",,")
    return ["qemu-img", "check", "--output=json", "--image-opts",
            f"driver=qcow2,file.filename={name},refcount-cache-size=16M"]


def compare(image: str, what: str, ours: list[str], theirs: list[str], runs: int, *, target: float | None = None,
            prepare=None, warmup: int = 1) -> tuple[Row, Timing, Timing]:
    # runs interleaved (ours, theirs, ours, ...): on a shared machine both see the same load
    a, b = Timing(), Timing()
    for i in range(warmup + runs):
        for t, argv in ((a, ours), (b, theirs)):
            one = run_process(argv, 1, 0, prepare)
            if i >= warmup:
                t.merge(one)
    row = Row(image, what, a.median, b.median)
    if target is not None:
        row.target = f"<= {target:g}x qemu"
        row.ok = row.ratio is not None and row.ratio <= target
    row.note = (f"cpu {a.median_cpu * 1000:.0f} vs {b.median_cpu * 1000:.0f} ms; "
                f"rss {a.maxrss_kib // 1024} MiB vs {b.maxrss_kib // 1024} MiB; rc {a.rc}/{b.rc}")
    return row, a, b


def inproc(op: str, path: Path, runs: int, once: bool = False) -> dict:
    argv = [sys.executable, str(HERE / "inproc.py"), op, str(path), str(runs)] + (["once"] if once else [])
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"op": op, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout)


def _median(xs: list[float]) -> float:
    import statistics
    return statistics.median(xs) if xs else float("nan")


def repair_available() -> bool:
    try:
        import imgscope.repair  # noqa: F401
        return True
    except ImportError:
        return False


def process_rows(name: str, path: Path, runs: int, cold: bool, warmup: int = 1) -> list[Row]:
    """map/info/check of one image, imgscope vs qemu-img (whole processes)."""
    me, p = imgscope_argv(), str(path)
    rows = []
    map_target = 0.5 if name in ("tib", "scattered") else None
    rows.append(compare(name, "map --output json", me + ["map", "--output", "json", p],
                        ["qemu-img", "map", "--output=json", p], runs, target=map_target, warmup=warmup)[0])
    rows.append(compare(name, "info --output json", me + ["info", "--output", "json", p],
                        ["qemu-img", "info", "--output=json", p], runs, target=5, warmup=warmup)[0])
    check_target = {"tib": 0.15, "snap1000": 0.05}.get(name)
    rows.append(compare(name, "check --output json", me + ["check", "--output", "json", p],
                        ["qemu-img", "check", "--output=json", p], runs, target=check_target,
                        warmup=warmup)[0])
    if name == "scattered":
        row = compare(name, "check vs qemu refcount-cache-size=16M", me + ["check", "--output", "json", p],
                      qemu_check_opts(path), runs, warmup=warmup)[0]
        rows.append(row)
    if cold:
        why = drop_caches()
        if why:
            rows.append(Row(name, "cold cache", float("nan"), note=why))
        else:
            for what, ours, theirs in (("map (cold cache)", me + ["map", "--output", "json", p],
                                        ["qemu-img", "map", "--output=json", p]),
                                       ("check (cold cache)", me + ["check", "--output", "json", p],
                                        ["qemu-img", "check", "--output=json", p])):
                rows.append(compare(name, what, ours, theirs, max(1, min(runs, 3)), prepare=drop_caches,
                                    warmup=0)[0])
    return rows


def repair_rows(path: Path, runs: int) -> list[Row]:
    """``check -r all`` of the dirty image, each run on a fresh sparse copy."""
    if not repair_available():
        return [Row("dirty", "check -r all", float("nan"), note="skipped: imgscope.repair does not exist yet")]
    copy = path.with_name("dirty-repair.qcow2")

    fresh = fresh_copy(path, copy)
    try:
        row = compare("dirty", "check -r all (fresh copy)", imgscope_argv() + ["check", "-r", "all", "--output",
                                                                               "json", str(copy)],
                      ["qemu-img", "check", "-r", "all", "--output=json", str(copy)], runs, prepare=fresh)[0]
    finally:
        copy.unlink(missing_ok=True)
    return [row]


def inproc_rows(name: str, path: Path, runs: int) -> list[Row]:
    rows = []
    r = inproc("snapshots", path, runs)
    if "error" in r:
        return [Row(name, "open + .snapshots", float("nan"), note=r["error"])]
    t = _median(r["runs"])
    row = Row(name, "open + .snapshots (in-process)", t)
    if name == "snap1000":
        row.target, row.ok = "<= 40 ms", t <= 0.040
    rows.append(row)
    if name in ("tib", "scattered", "snap1000"):
        g = inproc("guest_map", path, runs)
        m = inproc("mapping", path, runs)
        for label, r in (("guest map (model)", g), (".mapping() frame", m)):
            if "error" in r:
                rows.append(Row(name, label, float("nan"), note=r["error"]))
                continue
            t, ncl = _median(r["runs"]), r["clusters"]
            per = r["result_bytes"] / ncl
            peak = r["tracemalloc_peak"] / ncl
            row = Row(name, f"{label}, {ncl} clusters", t,
                      note=f"{per:.1f} B/cluster held, {peak:.1f} B/cluster peak (tracemalloc)")
            if name == "tib" and label.startswith("guest"):
                row.target, row.ok = "< 1 s, <= 16 B/cluster", t < 1 and per <= 16
            rows.append(row)
    if name in ("tib", "snap1000", "scattered"):
        r = inproc("check", path, runs)
        if "error" in r:
            rows.append(Row(name, "check()", float("nan"), note=r["error"]))
        else:
            delta = r["peak_rss_delta_kib"]
            priv, shared = (r["private_kib"] or 0) / 1024, (r["shared_kib"] or 0) / 1024
            row = Row(name, "check() in-process", _median(r["runs"]),
                      note=(f"peak +{delta / 1024:.0f} MiB private during check, "
                            f"tracemalloc peak {r['tracemalloc_peak'] / 2**20:.0f} MiB; after: private "
                            f"{priv:.0f} MiB, shared {shared:.0f} MiB"))
            if name == "tib" and delta is not None:
                row.target, row.ok = "peak private <= 100 MiB", delta / 1024 <= 100
            rows.append(row)
    if name == "tib":
        r = inproc("clusters", path, 1, once=True)  # informational, one cold-process run: 16 Mi rows
        if "error" not in r:
            rows.append(Row(name, ".clusters() frame (one run)", _median(r["runs"]),
                            note=f"process peak RSS {r['peak_rss_kib'] / 2**20:.1f} GiB"))
        else:
            rows.append(Row(name, ".clusters() frame", float("nan"), note=r["error"]))
    return rows


def print_table(rows: list[Row], out=sys.stdout) -> None:
    head = f"{'image':<10} {'measurement':<44} {'imgscope':>10} {'qemu-img':>10} {'ratio':>7}  {'target':<24} note"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        mark = "" if r.ok is None else ("  ok" if r.ok else "  MISS")
        print(f"{r.image:<10} {r.what:<44} {fmt_seconds(r.imgscope):>10} "
              f"{fmt_seconds(r.qemu) if r.qemu else '':>10} {ratio:>7}  {(r.target + mark):<24} {r.note}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median); default 5")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones; default 1")
    ap.add_argument("--small", action="store_true", help="tiny images (smoke test)")
    ap.add_argument("--work", type=Path, default=HERE / "work", help="where images are built and cached")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(images.BUILDERS))
    ap.add_argument("--cold", action="store_true", help="also time map/check with dropped page cache (root)")
    ap.add_argument("--no-inproc", action="store_true", help="skip the in-process measurements")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print("benchmarks need qemu-img and qemu-io (Debian qemu-utils)", file=sys.stderr)
        return 2
    sizes = images.SMALL if args.small else images.FULL
    work = args.work / "small" if args.small else args.work
    names = args.only.split(",") if args.only else list(images.BUILDERS)
    rows: list[Row] = []
    for name in names:
        path, rec = images.ensure(name, work, sizes, log=lambda m: print(m, file=sys.stderr, flush=True))
        rows.append(Row(name, "build (cached)" if rec["cached"] else "build", rec["build_seconds"],
                        note=f"{path.stat().st_size / 2**30:.1f} GiB file, "
                             f"{path.stat().st_blocks * 512 / 2**20:.0f} MiB allocated"))
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        rows += process_rows(name, path, args.runs, args.cold, args.warmup)
        if name == "dirty":
            rows += repair_rows(path, args.runs)
        if not args.no_inproc:
            rows += inproc_rows(name, path, args.runs)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([{**vars(r), "ratio": r.ratio} for r in rows], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
