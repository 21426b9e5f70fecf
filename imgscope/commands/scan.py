"""Scan many images into one table (one row per image)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files, directories or globs")
    p.add_argument("-j", "--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--scheduler", help="Dask distributed scheduler address (tcp://host:port)")
    p.add_argument("--no-check", action="store_true", help="metadata only, skip the consistency check")
    p.add_argument("--output", choices=("human", "json", "csv", "parquet"), default="human")
    p.add_argument("-o", "--out", help="write to this file (required for parquet)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--report", metavar="HTML", help="also write the standalone fleet report (totals, worst "
                   "offenders, shared backing files, incompatible features) to this file")
    p.add_argument("--top", type=int, default=10, help="offenders listed per category in --report (default 10)")


def run(args: argparse.Namespace) -> int:
    from ..scan import scan
    df = scan(args.paths, checks=not args.no_check, jobs=args.jobs, scheduler=args.scheduler,
              progress=args.progress)
    if args.report:
        from ..report.fleet import fleet_report, render_fleet_html
        with open(args.report, "w", encoding="utf-8") as fh:
            fh.write(render_fleet_html(fleet_report(df, top=args.top)))
        print(f"imgscope: wrote {args.report}", file=sys.stderr)
    if args.output == "parquet":
        if not args.out:
            print("imgscope: --output parquet needs -o FILE", file=sys.stderr)
            return 1
        df.to_parquet(args.out)
    elif args.output == "csv":
        df.to_csv(args.out or sys.stdout, index=False)
    elif args.output == "json":
        text = df.to_json(orient="records", indent=2)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            print(text)
    else:
        import pandas as pd
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
            cols = ["path", "format", "virtual_size", "dirty", "check_rc", "corruptions", "leaks", "leaked_bytes",
                    "fragmented_pct", "snapshot_count", "backing_file", "error"]
            print(df[cols].to_string(index=False))
    return 1 if df["error"].notna().all() and len(df) else 0
