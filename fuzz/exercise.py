"""Run the whole public API on one (possibly hostile) image.

The contract for hostile input: every call either succeeds or raises an
:class:`imgscope.ImgscopeError` (``FormatError``/``LimitError`` naming a
structure).  Anything else — ``IndexError``, ``struct.error``, numpy's
``MemoryError``, ``OverflowError``... — escapes :func:`exercise` and is a bug.

A call a driver does not implement (``NotImplementedError``) is recorded as
"unsupported": a missing feature, not a crash.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imgscope
from imgscope import limits

#: small limits keep each fuzz iteration fast; each one is still far above what the seeds need
FUZZ_LIMITS = {"max_metadata_bytes": 32 << 20, "max_guest_clusters": 1 << 20, "max_table_bytes": 16 << 20,
               "max_chain_depth": 4, "max_finding_rows": 1 << 17}

CALLS: dict[str, Callable[[Any], Any]] = {
    "header": lambda img: img.header,
    "features": lambda img: img.features,
    "extensions": lambda img: img.extensions,
    "snapshots": lambda img: img.snapshots,
    "info_dict": lambda img: img.info_dict(),
    # one layer's frame at a time (a 504-byte qcow2 can list 49,152 snapshots read as zeros past EOF,
    # as qemu reads them: holding every frame took 1 GiB and ended a fuzz run "out of memory"), and only
    # the first and last layers: each runs the same code, and 32,768 of them take 6 s (60 s instrumented,
    # the harness's timeout)
    "mapping": lambda img: all(img.mapping(layer) is not None for layer in _ends(img.layer_names())),
    "mapping_merged": lambda img: img.mapping(merge=True),
    "map_entries": lambda img: img.map_entries(),
    "clusters": lambda img: img.clusters(),
    "check": lambda img: (lambda r: (r.qemu_json(), r.findings, r.human(), r.exit_code()))(img.check()),
}


def exercise(path: str | Path, fmt: str | None = None) -> dict[str, str]:
    """Open ``path`` and run every call; returns {call: "ok" | error text}.  Non-imgscope errors propagate."""
    out: dict[str, str] = {}
    with limits.override(**FUZZ_LIMITS), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow warnings on hostile offsets
        try:
            img = imgscope.open(path, fmt)
        except imgscope.ImgscopeError as exc:
            return {"open": _line(exc)}
        with img:
            out["open"] = "ok"
            for name, call in CALLS.items():
                try:
                    call(img)
                    out[name] = "ok"
                except imgscope.ImgscopeError as exc:
                    out[name] = _line(exc)
                except NotImplementedError:
                    out[name] = "unsupported"
    return out


def _ends(names: list[str], keep: int = 8) -> list[str]:
    return names if len(names) <= 2 * keep else names[:keep] + names[-keep:]


def _line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text.strip(), f"multi-line error message: {text!r}"
    return f"{type(exc).__name__}: {text}"
