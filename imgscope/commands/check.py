"""Check an image for inconsistencies (qemu-img check compatible); -r repairs."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from . import add_force_share, add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("-r", "--repair", choices=("leaks", "all"), help="repair leaks only, or everything safely fixable")
    p.add_argument("--allow-data-loss", action="store_true", help="also apply fixes that drop references")
    p.add_argument("--undo-file", help="record every overwritten byte range here before writing")
    p.add_argument("--findings", action="store_true", help="list every finding row (human output)")
    p.add_argument("--qemu-messages", action="store_true",
                   help="print qemu-img check's line per cluster on stderr instead of the findings by class")
    p.add_argument("--replay", action="store_true",
                   help="forensic: show, writing nothing, what qemu's automatic repair on open would change")
    add_output(p)
    add_force_share(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stdout (qemu-img check -q)")


def run(args: argparse.Namespace) -> int:
    import imgscope
    if args.replay:
        return replay(args)
    if args.repair and args.force_share:
        print(f"imgscope: Could not open '{args.image}': force-share=on can only be used with read-only images",
              file=sys.stderr)
        return 1
    if args.repair:
        from ..repair import run_repair
        res = run_repair(args.image, args.repair, fmt=args.format, allow_data_loss=args.allow_data_loss,
                         undo_file=args.undo_file)
    else:
        with imgscope.open(args.image, args.format) as img:
            res = img.check()
    if args.output == "json":
        # qemu prints no JSON when it cannot open the image (rc 1) or the format has no check (rc 63),
        # and on stderr, as after a check that failed (check-errors), why
        if res.supported and not res.error:
            print_json(res.qemu_json(), qemu_order=True)
        if res.error_message():
            print(f"imgscope: {res.error_message()}", file=sys.stderr)
    else:
        print_human(res, args.repair, args.qemu_messages, args.quiet)
        if args.findings and res.batches:
            import pandas as pd
            with pd.option_context("display.max_rows", None, "display.width", 200):
                print(res.findings.to_string(), file=sys.stderr)
    return res.exit_code()


def print_human(res: Any, repair: str | None = None, qemu_messages: bool = False, quiet: bool = False) -> None:
    """qemu-img check's text: on stderr the findings grouped by class (or, with ``qemu_messages``,
    qemu's line per finding) and the fatal error; on stdout qemu's summary, byte for byte."""
    if qemu_messages:
        lines = _repair_messages(res, repair) if repair else res.qemu_messages()
    else:
        lines = _grouped(res)
    for line in lines:
        print(line, file=sys.stderr)
    error = res.error_message()
    if error:
        print(f"imgscope: {error}", file=sys.stderr)
    text = res.human(own=qemu_messages)
    if text and not quiet:
        print(text)


def _grouped(res: Any) -> list[str]:
    """Findings by class; after a repair, those the check before it found, then any left."""
    before = getattr(getattr(res, "plan", None), "before", None)
    if before is None:
        return res.grouped()
    lines = before.grouped()
    left = res.grouped()
    return lines + (["after the repair:"] + left[1:] if lines and left else left)


def _repair_messages(res: Any, repair: str) -> list[str]:
    """The stderr lines of ``qemu-img check -r``: the check's tables and refcounts, then either the
    rebuild or the refcount comparison again (``Repairing`` what is fixed) and check_oflag_copied with
    repairs; after fixes, the lines of the double check."""
    plan = getattr(res, "plan", None)
    before = getattr(plan, "before", None)
    if before is None:
        return res.qemu_messages()
    lines = before.qemu_messages(passes=("calculate", "refcounts"))
    if getattr(before, "needs_rebuild", False) and repair == "leaks":
        lines.append("ERROR need to rebuild refcount structures")
    elif getattr(before, "needs_rebuild", False):  # the old structure's clusters are then leaked and freed
        lines.append("Rebuilding refcount structure")
        lines += [f"Repairing cluster {c} refcount=1 reference=0" for c in plan.replaced]
    else:
        if before.leaks or before.corruptions:
            lines += before.qemu_messages(repair, passes=("refcounts",))
        lines += before.qemu_messages(repair, passes=("oflag-copied",))
    if res.leaks_fixed or res.corruptions_fixed:  # qemu checks the image again
        lines += res.qemu_messages()
    return lines


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
