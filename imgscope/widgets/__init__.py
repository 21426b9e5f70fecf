"""Notebook widgets: thin ipywidgets shells over imgscope's pure functions.

* :class:`SnapshotTree` — the inferred tree; select a node to see its details and sharing row.
* :class:`SharingMap` — sharing heatmap, host-file strip (role / refcount / owner), guest strip
  per layer, zoom to a host range, layer selection.
* :class:`Report` — the HTML report's sections, one per tab.

Every figure comes from :mod:`imgscope.report.plots`, every number from
:mod:`imgscope.sharing`, :mod:`imgscope.tree` and :mod:`imgscope.report`;
the widgets only wire controls to them.  Needs the ``notebook`` extra.
"""
from __future__ import annotations

from .views import Report, SharingMap, SnapshotTree

__all__ = ["Report", "SharingMap", "SnapshotTree"]
