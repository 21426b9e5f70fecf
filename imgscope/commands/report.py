"""Write a standalone HTML report (summary, findings, leaks, fragmentation) of an image."""
from __future__ import annotations

import argparse
import sys

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("-o", "--out", help="write the standalone HTML report here")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    from ..report.html import build_report, render_html, text_summary
    with imgscope.open(args.image, args.format) as img:
        rep = build_report(img)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(render_html(rep, img))
            print(f"imgscope: wrote {args.out}", file=sys.stderr)
    if args.output == "json":
        print_json(rep.numbers)
    else:
        print(text_summary(rep))
    return 0
