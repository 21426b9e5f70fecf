"""Infer and draw the snapshot tree of images (internal snapshots and backing chains)."""
from __future__ import annotations

import argparse
import sys

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, or directories of images (a forest)")
    p.add_argument("-o", "--out", help="write the drawing here (.svg, .png, .pdf, .dot or .txt)")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    from ..tree import DotMissing, snapshot_tree
    tree = snapshot_tree(args.paths)
    if args.output == "json":
        df = tree.nodes.copy()
        df["date"] = df["date"].map(lambda d: None if d is None or str(d) == "NaT" else d.isoformat())
        rows = [{k: (None if _na(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
                for r in df.to_dict(orient="records")]
        print_json({"nodes": rows, "notes": tree.notes})
    else:
        print(tree.to_text())
    if args.out:
        try:
            fmt = tree.render(args.out)
            print(f"imgscope: wrote {fmt} tree to {args.out}", file=sys.stderr)
        except DotMissing as exc:
            print(f"imgscope: {exc}; {args.out} not written — the text tree above is the fallback "
                  f"(use -o FILE.txt or install graphviz)", file=sys.stderr)
    return 0


def _na(v: object) -> bool:
    try:
        return v is None or bool(v != v) or str(v) in ("<NA>", "NaT")
    except (TypeError, ValueError):
        return False
