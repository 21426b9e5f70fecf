"""Subcommands of the ``imgscope`` CLI (see imgscope.cli.COMMANDS)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_output(p: argparse.ArgumentParser, *choices: str) -> None:
    p.add_argument("--output", choices=choices or ("human", "json"), default="human", help="output format")


def add_force_share(p: argparse.ArgumentParser) -> None:
    """qemu-img's -U: accepted for command-line compatibility; imgscope reads without taking locks."""
    p.add_argument("-U", "--force-share", action="store_true",
                   help="accepted like qemu-img's; reading never takes or needs a lock")


_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def size_arg(what: str) -> Any:
    """argparse type for qemu's sizes: a byte count with an optional k/M/G/T/P/E suffix (powers of 1024)."""
    def parse(text: str) -> int:
        num, unit = text.rstrip("bBkKmMgGtTpPeE"), text[len(text.rstrip("bBkKmMgGtTpPeE")):].lower()
        if not num.isdigit() or unit not in _SUFFIX or int(num) * _SUFFIX[unit] >= 1 << 63:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: a byte count, optionally with a k, M, G, "
                                             "T, P or E suffix")
        return int(num) * _SUFFIX[unit]
    return parse


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=4)
    sys.stdout.write("\n")


def size_to_str(n: int) -> str:
    """qemu's ``size_to_str``: 3 significant digits; the unit goes up once the value reaches 1000 of it."""
    import math
    exp = max(0, math.frexp(n / (1000.0 / 1024.0))[1] - 1) // 10
    return f"{n / (1 << (10 * exp)):.3g} {('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[exp]}B"


def qdict_order(d: dict[str, Any]) -> list[tuple[str, Any]]:
    """The items of ``d`` in the order qemu walks a QDict (JSON and human output): by hash bucket
    (tdb_hash of the key modulo 512), later insertions first within a bucket."""
    def bucket(key: str) -> int:
        b = key.encode()
        h = 0x238F13AF * len(b)
        for i, c in enumerate(b):
            h = (h + (c << (i * 5 % 24))) & 0xFFFFFFFF
        return ((1103515243 * h + 12345) & 0xFFFFFFFF) % 512
    return [kv for _, _, kv in sorted((bucket(k), -i, (k, v)) for i, (k, v) in enumerate(d.items()))]
