"""Check an image for inconsistencies (qemu-img check compatible); -r repairs."""
from __future__ import annotations

import argparse
import sys

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("-r", "--repair", choices=("leaks", "all"), help="repair leaks only, or everything safely fixable")
    p.add_argument("--allow-data-loss", action="store_true", help="also apply fixes that drop references")
    p.add_argument("--undo-file", help="record every overwritten byte range here before writing")
    p.add_argument("--findings", action="store_true", help="list every finding row (human output)")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    if args.repair:
        from ..repair import run_repair
        res = run_repair(args.image, args.repair, fmt=args.format, allow_data_loss=args.allow_data_loss,
                         undo_file=args.undo_file)
    else:
        with imgscope.open(args.image, args.format) as img:
            res = img.check()
    if args.output == "json":
        # qemu prints no JSON when the check fails (rc 1) or the format has none (rc 63)
        if res.supported and not res.error:  # qemu prints no JSON only when the check could not run
            print_json(res.qemu_json())
    else:
        print(res.human())
        if args.findings and res.batches:
            import pandas as pd
            with pd.option_context("display.max_rows", None, "display.width", 200):
                print(res.findings.to_string(), file=sys.stderr)
    return res.exit_code()
