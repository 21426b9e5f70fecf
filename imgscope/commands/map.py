"""Show where guest data lives (qemu-img map compatible JSON)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import add_force_share, add_output, print_json, size_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("-l", "--layer", default="active", help="'active' (default) or a snapshot id or name")
    p.add_argument("--start-offset", type=size_arg("start offset"), default=0,
                   help="first guest byte to map (k, M, G, T, P, E suffixes)")
    p.add_argument("--max-length", type=size_arg("max length"), help="bytes to map from the start offset")
    add_output(p)
    add_force_share(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        if args.layer == "active":
            from ..extents import clip, resolve, to_qemu_json, to_qemu_text
            ext = resolve([i.qemu_extents() for i in img.qemu_chain()])
            if args.start_offset or args.max_length is not None:
                end = img.virtual_size if args.max_length is None else args.start_offset + args.max_length
                ext = clip(ext, args.start_offset, min(end, img.virtual_size))
            # qemu-img's own layout, built as text: a dict per extent is too slow for millions of extents
            text = to_qemu_text(*ext) if args.output == "json" else None
            entries = None if args.output == "json" else to_qemu_json(*ext)
        else:
            df = img.mapping(args.layer, merge=True)
            entries = [{"start": int(r.guest_offset), "length": int(r.length), "depth": int(r.depth),
                        "present": bool(r.present), "zero": bool(r.zero), "data": bool(r.data),
                        **({} if r.host_offset is None or str(r.host_offset) == "<NA>" else
                           {"offset": int(r.host_offset)})} for r in df.itertuples()]
        if img.backing_error:
            print(f"imgscope: warning: {img.backing_error}; ranges below it are shown as unallocated",
                  file=sys.stderr)
        if args.output == "human":
            chain = img.qemu_chain()
            return human(entries, lambda depth, start: chain[depth].host_file(start))
    if entries is None:
        sys.stdout.write(text)
    else:
        print_json(entries)
    return 0


def human(entries: list[dict], host_file: Callable[[int, int], str]) -> int:
    """``qemu-img map``'s text: the data extents only (zero ones hidden); a data extent without a
    host offset (compressed, encrypted, VHDX) stops the listing with qemu's error (exit 1)."""
    print(f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File")
    for i, e in enumerate(entries):
        # qemu folds every extent after the first that is zero or not data into "zero" before showing it
        data = e["data"] and (i == 0 or not e["zero"])
        if data and "offset" not in e:
            sys.stdout.flush()
            print("imgscope: File contains external, encrypted or compressed clusters.", file=sys.stderr)
            return 1
        if data and not e["zero"]:
            print(f"{_hex(e['start'])}{_hex(e['length'])}{_hex(e['offset'])}{host_file(e['depth'], e['start'])}")
    return 0


def _hex(n: int) -> str:
    """C's ``%#-16x``: no 0x prefix for zero."""
    return f"{n:<#16x}" if n else f"{0:<16}"
