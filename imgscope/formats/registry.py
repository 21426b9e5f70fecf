"""Drivers beyond qcow2/raw register here (one line per format module)."""
from __future__ import annotations

import importlib

#: format name -> "module:Class"
EXTRA = {}


def extra_drivers() -> dict[str, type]:
    out = {}
    for name, spec in EXTRA.items():
        mod, _, cls = spec.partition(":")
        out[name] = getattr(importlib.import_module(mod), cls)
    return out
