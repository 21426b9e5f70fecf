"""Show an image's header and metadata (qemu-img info compatible JSON)."""
from __future__ import annotations

import argparse
from typing import Any

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("--chain", "--backing-chain", action="store_true", help="show every image of the backing chain")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        images = img.chain() if args.chain else [img]
        infos = [i.info_dict() for i in images]
        if args.chain and images[-1].backing_error:  # the chain ends where a parent could not be opened
            infos[-1]["imgscope-backing-error"] = images[-1].backing_error
        if args.output == "json":
            print_json(infos if args.chain else infos[0])
        else:
            print("\n\n".join(human(i) for i in infos))
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return str(n)


def human(info: dict[str, Any]) -> str:
    lines = [f"image: {info['filename']}", f"file format: {info['format']}",
             f"virtual size: {_size(info['virtual-size'])} ({info['virtual-size']} bytes)",
             f"disk size: {_size(info.get('actual-size', 0))}"]
    if "cluster-size" in info:
        lines.append(f"cluster_size: {info['cluster-size']}")
    if "backing-filename" in info:
        fmt = info.get("backing-filename-format")
        lines.append(f"backing file: {info['backing-filename']}" + (f" (actual path: {info['full-backing-filename']})"
                                                                      if info.get("full-backing-filename") !=
                                                                      info["backing-filename"] else ""))
        if fmt:
            lines.append(f"backing file format: {fmt}")
    for key, value in info.items():
        if key.startswith("imgscope-") and value not in (None, False):
            lines.append(f"{key[len('imgscope-'):].replace('-', ' ')}: {value}")
    if info.get("dirty-flag"):
        lines.append("dirty: yes (refcounts may be stale; `imgscope check -r all` rebuilds them)")
    if info.get("snapshots"):
        from .snapshots import table
        lines.append("Snapshot list:")
        lines.extend(table(info["snapshots"]))
    spec = info.get("format-specific", {}).get("data")
    if spec:
        lines.append("Format specific information:")
        lines.extend(_nested(spec, 4))
    return "\n".join(lines)


def _nested(obj: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.extend(_nested(v, indent + 4))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out.append(f"{pad}{k}:")
            for i, item in enumerate(v):
                out.append(f"{pad}    [{i}]:")
                out.extend(_nested(item, indent + 8))
        else:
            out.append(f"{pad}{k}: {str(v).lower() if isinstance(v, bool) else v}")
    return out
