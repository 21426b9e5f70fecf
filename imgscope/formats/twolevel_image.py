"""The driver side shared by the two-level formats (QED, qcow v1).

Each decodes its L1/L2 tables into one object, ``tables`` (built on first use
with the reading in :mod:`imgscope.formats.twolevel`), that answers the guest
map, block status and references of the only layer.  This module stays free
of numpy: drivers import it when an image is opened.
"""
from __future__ import annotations

from typing import Any

from ..image import Image


class TwoLevelImage(Image):
    """A subclass defines ``tables`` (``cached_property(implemented_in("module:Class"))``):
    an object with ``guest_map()``, ``extents()`` and ``reference_rows()``."""

    tables: Any

    def guest_map(self, layer: str | int = "active") -> Any:
        self.require_active_layer(layer)
        return self.tables.guest_map()

    def extents(self) -> Any:
        return self.tables.extents()

    def reference_rows(self) -> Any:
        return self.tables.reference_rows()
