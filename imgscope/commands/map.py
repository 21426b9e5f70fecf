"""Show where guest data lives (qemu-img map compatible JSON)."""
from __future__ import annotations

import argparse
import sys

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("-l", "--layer", default="active", help="'active' (default) or a snapshot id or name")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        if args.layer == "active" and args.output == "json":
            # qemu-img's own layout, built as text: a dict per extent is too slow for millions of extents
            from ..extents import resolve, to_qemu_text
            text = to_qemu_text(*resolve([i.extents() for i in img.chain()]))
            entries = None
        elif args.layer == "active":
            entries = img.map_entries()
        else:
            df = img.mapping(args.layer, merge=True)
            entries = [{"start": int(r.guest_offset), "length": int(r.length), "depth": int(r.depth),
                        "present": bool(r.present), "zero": bool(r.zero), "data": bool(r.data),
                        **({} if r.host_offset is None or str(r.host_offset) == "<NA>" else
                           {"offset": int(r.host_offset)})} for r in df.itertuples()]
        if img.backing_error:
            print(f"imgscope: warning: {img.backing_error}; ranges below it are shown as unallocated",
                  file=sys.stderr)
    if args.output == "json":
        if entries is None:
            sys.stdout.write(text)
        else:
            print_json(entries)
        return 0
    print(f"{'Offset':<20}{'Length':<20}{'Mapped to':<20}File")
    chain_files = {}
    with imgscope.open(args.image, args.format) as img:
        chain_files = {d: i.path for d, i in enumerate(img.chain())}
    for e in entries:
        if e["data"] and "offset" in e:
            print(f"{e['start']:<#20x}{e['length']:<#20x}{e['offset']:<#20x}{chain_files.get(e['depth'], '?')}")
    return 0
