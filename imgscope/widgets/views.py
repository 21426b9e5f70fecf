"""The widget classes (see :mod:`imgscope.widgets`)."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as w
import pandas as pd

from ..report import plots
from ..report.summary import human_size, table_html


def _png(fig: Any) -> w.Image:
    return w.Image(value=plots.png(fig), format="png")


class SnapshotTree(w.VBox):
    """The snapshot tree drawing plus a node picker showing the node's details and sharing."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        self.graph = w.HTML(self._drawing())
        nodes = tree.nodes
        self.picker = w.Dropdown(options=[(f"{r.name} [{r.node}]", r.node) for r in nodes.itertuples()],
                                 description="node")
        self.details = w.HTML()
        self.picker.observe(lambda ch: self.select(ch["new"]), names="value")
        super().__init__([self.graph, self.picker, self.details])
        if len(nodes):
            self.select(self.picker.value)

    def _drawing(self) -> str:
        bundle = self.tree._repr_mimebundle_()
        return bundle.get("image/svg+xml") or bundle["text/html"]

    def select(self, node: str) -> None:
        """Show ``node``: its row, its parent edge and what it shares with every other layer."""
        if self.picker.value != node:
            self.picker.value = node
            return
        r = self.tree.row(node)
        rows = [("layer", node), ("name", r["name"]), ("kind", r["kind"]), ("live", r["live"]),
                ("date", "—" if pd.isna(r["date"]) else r["date"]), ("disk size", human_size(int(r["disk_size"]))),
                ("exclusive", human_size(int(r["exclusive_bytes"]))),
                ("freed if deleted", "—" if str(r["freed_bytes"]) == "<NA>" else human_size(int(r["freed_bytes"]))),
                ("parent", r["parent"]), ("confidence", r["confidence"]), ("evidence", r["evidence"])]
        sh = self.tree.sharing
        share = sh.matrix.loc[node].rename("clusters in common").to_frame()
        share["tables in common"] = sh.tables.loc[node]
        self.details.value = table_html(rows, f"node {node}") + share.to_html(classes="imgscope-t")


class SharingMap(w.VBox):
    """Sharing heatmap, host strip and guest strip with layer selection and zoom.

    ``image`` must stay open while the widget is used (guest strips re-read maps).
    """

    def __init__(self, image: Any, sharing: Any = None, progress: bool = True) -> None:
        from ..sharing import sharing as compute
        self.image = image
        self.sharing = sharing if sharing is not None else compute(image, progress=progress)
        self.clusters = image.clusters()
        labels = self.sharing.labels
        cs = image.cluster_size or self.sharing.unit
        n = max(1, len(self.clusters))
        self.layers = w.SelectMultiple(options=labels, value=tuple(labels), description="layers",
                                       rows=min(8, len(labels)))
        self.color = w.Dropdown(options=["role", "refcount", "owner"], value="role", description="colour by")
        self.guest = w.Dropdown(options=labels, value=labels[0], description="guest of")
        self.zoom = w.IntRangeSlider(value=(0, n), min=0, max=n, description="clusters", continuous_update=False)
        self.cluster_size = cs
        self.matrix_out, self.host_out, self.guest_out = w.Box(), w.Box(), w.Box()
        self.layers.observe(lambda _: self.draw_matrix(), names="value")
        self.color.observe(lambda _: self.draw_host(), names="value")
        self.zoom.observe(lambda _: self.draw_host(), names="value")
        self.guest.observe(lambda _: self.draw_guest(), names="value")
        super().__init__([self.layers, self.matrix_out, w.HBox([self.color, self.zoom]), self.host_out, self.guest,
                          self.guest_out])
        self.draw_matrix()
        self.draw_host()
        self.draw_guest()

    def draw_matrix(self) -> None:
        sel = list(self.layers.value) or self.sharing.labels
        self.matrix_out.children = [_png(plots.sharing_heatmap(self.sharing.matrix, sel))]

    def draw_host(self) -> None:
        lo, hi = self.zoom.value
        fig = plots.host_strip(self.clusters, self.color.value, lo * self.cluster_size, hi * self.cluster_size)
        self.host_out.children = [_png(fig)]

    def draw_guest(self) -> None:
        strip = self.sharing.guest_strip(self.guest.value)
        self.guest_out.children = [_png(plots.guest_strip(strip, self.guest.value))]


class Report(w.Tab):
    """The report of one image, one section per tab (same content as ``imgscope report``).

    Pass ``progress=False`` for pages rendered after the run (Voilà, exported notebooks): the finished
    progress bar's widget is closed, and such a page would show "model not found" in its place.
    """

    def __init__(self, image: Any, progress: bool = True) -> None:
        from ..report.html import build_report, sections
        self.report = build_report(image, progress=progress)
        parts = sections(self.report)
        super().__init__(children=[w.HTML(v) for v in parts.values()])
        for i, title in enumerate(parts):
            self.set_title(i, title)

    def _repr_html_(self) -> str:  # static fallback (nbconvert, no widget state)
        from ..report.html import render_html
        return "<div>" + html.escape("imgscope report") + "</div>" + render_html(self.report)
