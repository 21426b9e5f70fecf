"""List internal snapshots (the snapshot objects of qemu-img info)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from . import add_output, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("-f", "--format", help="force the image format")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import imgscope
    with imgscope.open(args.image, args.format) as img:
        snaps = img.info_dict().get("snapshots", [])
    if args.output == "json":
        print_json(snaps)
    else:
        print("\n".join(table(snaps)) if snaps else "no snapshots")
    return 0


def table(snaps: list[dict[str, Any]]) -> list[str]:
    """Rows like ``qemu-img snapshot -l``."""
    out = [f"{'ID':<8}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>16}{'ICOUNT':>9}"]
    for s in snaps:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["date-sec"]))
        secs = s["vm-clock-sec"]
        clock = f"{secs // 3600:04d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{s['vm-clock-nsec'] // 1_000_000:03d}"
        out.append(f"{s['id']:<8}{s['name']:<17}{s['vm-state-size']:>8}{date:>20}{clock:>16}"
                   f"{s.get('icount', ''):>9}")
    return out
