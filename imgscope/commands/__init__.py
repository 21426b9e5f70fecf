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


def print_json(obj: Any, qemu_order: bool = False) -> None:
    """JSON with a 4-space indent; with ``qemu_order`` the text qemu-img itself prints (info, check):
    every object's keys in the order of qemu's QDict walk, written by :func:`qemu_json_text`."""
    if qemu_order:
        sys.stdout.write(qemu_json_text(_qemu_ordered(obj)) + "\n")
        return
    json.dump(obj, sys.stdout, indent=4)
    sys.stdout.write("\n")


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def qemu_json_text(obj: Any, level: int = 0) -> str:
    """qemu's pretty JSON (``qobject_to_json_pretty``): empty lists and objects still break the line,
    strings escape every character outside printable ASCII as ``\\uXXXX`` in upper-case hex (UTF-16
    surrogate pairs above U+FFFF)."""
    ind = "    " * level
    if isinstance(obj, dict):
        parts = [f"{ind}    {_qemu_string(str(k))}: {qemu_json_text(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(parts) + ("\n" if parts else "") + ind + "}"
    if isinstance(obj, (list, tuple)):
        parts = [f"{ind}    {qemu_json_text(v, level + 1)}" for v in obj]
        return "[\n" + ",\n".join(parts) + ("\n" if parts else "") + ind + "]"
    if isinstance(obj, str):
        return _qemu_string(obj)
    return json.dumps(obj)


def _qemu_string(text: str) -> str:
    out = []
    for ch in text:
        c = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif c < 0x20 or c >= 0x7F:
            if c > 0xFFFF:
                c -= 0x10000
                out.append(f"\\u{0xD800 + (c >> 10):04X}\\u{0xDC00 + (c & 0x3FF):04X}")
            else:
                out.append(f"\\u{c:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _qemu_ordered(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _qemu_ordered(v) for k, v in qdict_order(obj)}
    if isinstance(obj, list):
        return [_qemu_ordered(v) for v in obj]
    return obj


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
