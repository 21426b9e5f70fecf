"""Drivers beyond qcow2/raw register here (one line per format module)."""
from __future__ import annotations

import importlib

#: format name -> "module:Class"
EXTRA = {
    "vmdk": "imgscope.formats.vmdk.driver:VmdkImage",
    "vpc": "imgscope.formats.vpc.driver:VpcImage",
    "vhdx": "imgscope.formats.vhdx.driver:VhdxImage",
    "qed": "imgscope.formats.qed.driver:QedImage",
    "qcow": "imgscope.formats.qcow.driver:QcowImage",
    "vdi": "imgscope.formats.vdi.driver:VdiImage",
    "fvd": "imgscope.formats.fvd.driver:FvdImage",
}


def extra_drivers() -> dict[str, type]:
    out = {}
    for name, spec in EXTRA.items():
        mod, _, cls = spec.partition(":")
        out[name] = getattr(importlib.import_module(mod), cls)
    return out
