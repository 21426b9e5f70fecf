"""Every format driver, by qemu's format name (one line per driver).

Drivers are imported only when an image of their format is opened, so opening a
qcow2 never pays for the other drivers' imports.
"""
from __future__ import annotations

import importlib

#: format name -> "module:Class"
DRIVERS = {
    "qcow2": "imgscope.formats.qcow2.driver:Qcow2Image",
    "raw": "imgscope.formats.raw.driver:RawImage",
    "vmdk": "imgscope.formats.vmdk.driver:VmdkImage",
    "vpc": "imgscope.formats.vpc.driver:VpcImage",
    "vhdx": "imgscope.formats.vhdx.driver:VhdxImage",
    "qed": "imgscope.formats.qed.driver:QedImage",
    "qcow": "imgscope.formats.qcow.driver:QcowImage",
    "vdi": "imgscope.formats.vdi.driver:VdiImage",
    "fvd": "imgscope.formats.fvd.driver:FvdImage",
}


def driver(name: str) -> type | None:
    """The driver class for format ``name``, or None when imgscope has none."""
    spec = DRIVERS.get(name)
    if spec is None:
        return None
    mod, _, cls = spec.partition(":")
    return getattr(importlib.import_module(mod), cls)
