"""List internal snapshots (the snapshot objects of qemu-img info)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from . import add_force_share, add_output, print_json, size_to_str


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    add_output(p)
    add_force_share(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        snaps = img.info_dict().get("snapshots", [])
    if args.output == "json":
        print_json(snaps)
    else:
        if snaps:  # qemu-img snapshot -l prints nothing at all without snapshots
            print("\n".join(table(snaps)))
    return 0


def table(snaps: list[dict[str, Any]]) -> list[str]:
    """``Snapshot list:`` and its rows as ``qemu-img snapshot -l`` and ``qemu-img info`` print them
    (``bdrv_snapshot_dump``; dates in local time)."""
    out = ["Snapshot list:", f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"]
    for s in snaps:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["date-sec"]))
        secs = s["vm-clock-sec"]
        clock = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{s['vm-clock-nsec'] // 1_000_000:03d}"
        out.append(f"{_ljust(s['id'], 9)} {_ljust(s['name'], 16)} {size_to_str(s['vm-state-size']):>8}{date:>20}"
                   f"{clock:>13}{s.get('icount', ''):>11}")
    return out


def _ljust(text: str, width: int) -> str:
    """C's ``%-Ns``: pads to N bytes of UTF-8, not N characters."""
    return text + " " * max(0, width - len(text.encode("utf-8", "surrogateescape")))
