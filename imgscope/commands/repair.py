"""Repair an image crash-safely (qemu-img check -r all, plus dry run, undo log and data-loss control)."""
from __future__ import annotations

import argparse
import sys

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("--dry-run", action="store_true", help="show the planned writes and the expected result only")
    p.add_argument("--undo-file", help="keep the undo log here (default: a temporary file, removed after success)")
    p.add_argument("--allow-data-loss", action="store_true",
                   help="also drop references that cannot be followed safely (their guest data is lost)")
    p.add_argument("--rebuild", action="store_true",
                   help="write fresh refcount structures (one atomic header switch) even where qemu would correct "
                        "counters in place")
    p.add_argument("--leaks-only", action="store_true", help="like check -r leaks: only free leaked clusters")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    from ..repair import run_repair
    res = run_repair(args.image, "leaks" if args.leaks_only else "all", fmt=args.format,
                     allow_data_loss=args.allow_data_loss, undo_file=args.undo_file, dry_run=args.dry_run,
                     rebuild=args.rebuild)
    plan = getattr(res, "plan", None)
    if args.output == "json":
        if args.dry_run and plan is not None:
            print_json({**plan.json(), "expected": res.qemu_json()})
        elif res.supported and not res.error:
            print_json(res.qemu_json(), qemu_order=True)
    else:
        if args.dry_run and plan is not None:
            print(_plan_text(plan))
            print("\nExpected result:")
        print(res.report())
    if res.error:
        print(f"imgscope: {res.filename}: {res.error}", file=sys.stderr)
    return res.exit_code()


def _plan_text(plan) -> str:  # noqa: ANN001 - imgscope.repair.Plan
    lines = [f"Dry run: {len(plan.writes)} write(s) planned for {plan.path} "
             f"({plan.corruptions_fixed} corruptions and {plan.leaks_fixed} leaks would be fixed)"]
    if plan.writes:
        import pandas as pd
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 100):
            lines.append(plan.frame().to_string(index=False))
    if plan.losses:
        lines.append("Guest data that the --allow-data-loss fixes drop:")
        lines.append(plan.loss_frame().to_string(index=False))
    return "\n".join(lines)
