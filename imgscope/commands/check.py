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
    p.add_argument("--replay", action="store_true",
                   help="forensic: show, writing nothing, what qemu's automatic repair on open would change")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    if args.replay:
        return replay(args)
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


def replay(args: argparse.Namespace) -> int:
    """The check, then the writes qemu's open-time repair would make, as rows (nothing is written)."""
    import imgscope
    from ..repair import replay_open_repair
    with imgscope.open(args.image, args.format) as img:
        res = img.check()
        plan = replay_open_repair(img)
    after = plan.expected if plan is not None and not plan.error else None
    if args.output == "json":
        print_json({"check": res.qemu_json(), "open-repair": None if plan is None else {
            **plan.json(), "after": after.qemu_json() if after is not None else None}})
        return res.exit_code()
    print(res.human())
    print()
    if plan is None:
        print("qemu opens this image without repairing it: it was closed cleanly (no dirty / need-check flag).")
        return res.exit_code()
    print("qemu would repair this image as soon as something opens it read-write (a VM start, qemu-img "
          "commit, ...).\nThose writes, simulated here without touching the file:")
    import pandas as pd
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(plan.frame().to_string(index=False))
    if len(plan.losses):
        print("guest ranges that would read differently afterwards:")
        print(plan.loss_frame().to_string(index=False))
    if plan.error:
        print(f"the repair could not be planned: {plan.error}")
    elif after is not None:
        print(f"afterwards: {after.corruptions} corruptions, {after.leaks} leaks "
              f"({plan.corruptions_fixed} corruptions and {plan.leaks_fixed} leaks fixed)")
    return res.exit_code()
