"""Show an image's header and metadata (qemu-img info compatible JSON)."""
from __future__ import annotations

import argparse
from typing import Any

from . import add_force_share, add_output, print_json, qdict_order, size_to_str


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    p.add_argument("--chain", "--backing-chain", action="store_true", help="show every image of the backing chain")
    add_output(p)
    add_force_share(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        images = img.qemu_chain() if args.chain else [img]
        infos = [i.info_dict() for i in images]
        if args.chain and images[-1].backing_error:  # the chain ends where a parent could not be opened
            infos[-1]["imgscope-backing-error"] = images[-1].backing_error
        if args.output == "json":  # imgscope-only keys appear only when they say something qemu does not
            infos = [{k: v for k, v in i.items() if not k.startswith("imgscope-") or v not in (None, False)}
                     for i in infos]
            print_json(infos if args.chain else infos[0], qemu_order=True)
        else:
            print("\n\n".join(human(i) for i in infos))
    return 0


def human(info: dict[str, Any]) -> str:
    """``bdrv_image_info_dump``: qemu-img info's text, then imgscope-only facts (only when there are any)."""
    size = info.get("actual-size")
    lines = [f"image: {info['filename']}", f"file format: {info['format']}",
             f"virtual size: {size_to_str(info['virtual-size'])} ({info['virtual-size']} bytes)",
             f"disk size: {'unavailable' if size is None else size_to_str(size)}"]
    if info.get("encrypted"):
        lines.append("encrypted: yes")
    if "cluster-size" in info:
        lines.append(f"cluster_size: {info['cluster-size']}")
    if info.get("dirty-flag"):
        lines.append("cleanly shut down: no")
    if "backing-filename" in info:
        name, full = info["backing-filename"], info.get("full-backing-filename")
        lines.append(f"backing file: {name}" + (" (cannot determine actual path)" if full is None else
                                                "" if full == name else f" (actual path: {full})"))
        if "backing-filename-format" in info:
            lines.append(f"backing file format: {info['backing-filename-format']}")
    if info.get("snapshots"):
        from .snapshots import table
        lines.extend(table(info["snapshots"]))
    if "format-specific" in info:
        lines.append("Format specific information:")
        lines.extend(_qobject(info["format-specific"]["data"], 1))
    extra = {k[len("imgscope-"):]: v for k, v in info.items() if k.startswith("imgscope-") and v not in (None, False)}
    if extra:
        lines += ["", "imgscope (not shown by qemu-img):"]
        lines.extend(_qobject(extra, 1))
    return "\n".join(lines)


def _qobject(obj: Any, indent: int) -> list[str]:
    """qemu's ``dump_qobject`` of a dict or list at ``indent`` levels (4 spaces each), keys with spaces."""
    pad = " " * (4 * indent)
    items = ([(k.replace("-", " "), v) for k, v in qdict_order(obj)] if isinstance(obj, dict)
             else [(f"[{i}]", v) for i, v in enumerate(obj)])
    out: list[str] = []
    for key, value in items:
        if isinstance(value, (dict, list)):
            out.append(f"{pad}{key}:")
            out.extend(_qobject(value, indent + 1))
        else:
            out.append(f"{pad}{key}: {str(value).lower() if isinstance(value, bool) else value}")
    return out
