"""Snapshot trees inferred from flat snapshot tables and backing chains.

qcow2 stores its snapshots as a flat list; the history (``goto s2`` then
snapshot again makes a branch) is not recorded.  :func:`snapshot_tree` infers
it: a snapshot's parent is the earlier snapshot (by creation time) of the same
file sharing the most host clusters and lookup tables with it; ties go to the
smaller symmetric difference, then to the most recent.  A VM clock that would
run backwards excludes a candidate.  The live layer hangs below its closest
snapshot.  Backing files contribute exact edges (the header names the parent).
How the confidence of each edge is computed: docs/notebook.md.
"""
from __future__ import annotations

import html
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import ImgscopeError

NODE_COLUMNS = ("node", "file", "layer", "kind", "live", "name", "date", "vm_clock_nsec", "disk_size",
                "exclusive_bytes", "freed_bytes", "parent", "edge", "confidence", "evidence")


class DotMissing(ImgscopeError):
    """graphviz (the ``dot`` binary or the python package) is not available."""


@dataclass
class SnapshotTree:
    """The inferred forest: one row per layer in ``nodes`` (NODE_COLUMNS), parent links by node id."""

    nodes: pd.DataFrame
    sharing: Any
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ navigation
    def roots(self) -> list[str]:
        return self.nodes.loc[self.nodes["parent"].isna(), "node"].tolist()

    def children(self, node: str) -> list[str]:
        return self.nodes.loc[self.nodes["parent"] == node, "node"].tolist()

    def parent_of(self, node: str) -> str | None:
        p = self.nodes.set_index("node").at[node, "parent"]
        return None if pd.isna(p) else str(p)

    def row(self, node: str) -> pd.Series:
        return self.nodes.set_index("node").loc[node]

    # ------------------------------------------------------------------ rendering
    def to_text(self) -> str:
        """An indented text tree (the fallback when graphviz is missing)."""
        lines: list[str] = []
        rows = self.nodes.set_index("node", drop=False)
        kids_of: dict[str, list[str]] = {}
        for node, parent in zip(self.nodes["node"], self.nodes["parent"]):
            if not pd.isna(parent):
                kids_of.setdefault(parent, []).append(node)
        stack = [(r, "", True, True) for r in reversed(self.roots())]
        while stack:
            node, prefix, last, root = stack.pop()
            lines.append(prefix + ("" if root else ("└── " if last else "├── ")) + _text_label(rows.loc[node]))
            kids = kids_of.get(node, [])
            child_prefix = prefix + ("" if root else ("    " if last else "│   "))
            stack.extend((k, child_prefix, i == 0, False) for i, k in enumerate(reversed(kids)))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def to_graphviz(self) -> Any:
        """A ``graphviz.Digraph``: one cluster per file, the live layer highlighted."""
        try:
            import graphviz
        except ImportError as exc:
            raise DotMissing("the python 'graphviz' package is not installed (pip install imgscope[notebook])") \
                from exc
        g = graphviz.Digraph("snapshots", graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
                             node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica",
                                        "fontsize": "10"}, edge_attr={"fontname": "Helvetica", "fontsize": "9"})
        for fi, (path, rows) in enumerate(self.nodes.groupby("file", sort=False)):
            with g.subgraph(name=f"cluster_{fi}") as sub:
                sub.attr(label=os.path.basename(str(path)), style="dashed", color="grey50")
                for r in rows.itertuples(index=False):
                    attrs = {"style": "rounded,filled,bold", "fillcolor": "#c8f0c8", "penwidth": "2"} if r.live \
                        else {}
                    sub.node(_gv_id(r.node), _gv_label(r), **attrs)
        for r in self.nodes.itertuples(index=False):
            if pd.isna(r.parent):
                continue
            if r.edge == "backing":
                g.edge(_gv_id(r.parent), _gv_id(r.node), label="backing", style="bold")
            else:
                g.edge(_gv_id(r.parent), _gv_id(r.node), label=f"{r.confidence:.2f}",
                       style="dashed" if r.confidence < 0.5 else "solid")
        return g

    def render(self, path: str) -> str:
        """Write the tree to ``path`` (format from the extension: svg, png, pdf, dot or txt).

        Raises :class:`DotMissing` when graphviz cannot render; callers fall back to :meth:`to_text`.
        """
        fmt = os.path.splitext(path)[1].lstrip(".").lower() or "svg"
        if fmt == "txt":
            data = self.to_text().encode() + b"\n"
        elif fmt in ("dot", "gv"):
            data = self.to_graphviz().source.encode()
        else:
            data = self.pipe(fmt)
        with open(path, "wb") as fh:
            fh.write(data)
        return fmt

    def pipe(self, fmt: str = "svg") -> bytes:
        g = self.to_graphviz()
        if shutil.which("dot") is None:
            raise DotMissing("graphviz's `dot` binary is not installed (Debian: apt-get install graphviz)")
        try:
            return g.pipe(format=fmt)
        except Exception as exc:  # graphviz.ExecutableNotFound / CalledProcessError
            raise DotMissing(f"graphviz could not render: {exc}") from exc

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        text = self.to_text()
        try:
            return {"image/svg+xml": self.pipe("svg").decode(), "text/plain": text}
        except DotMissing as exc:
            return {"text/html": f"<p><i>{html.escape(str(exc))}: showing a text tree</i></p>"
                                 f"<pre>{html.escape(text)}</pre>", "text/plain": text}


def _text_label(r: pd.Series) -> str:
    from .report.summary import human_size
    parts = [f"{r['name']} [{r['node']}]"]
    if r["live"]:
        parts[0] = "● " + parts[0] + " (live)"
    if not pd.isna(r["date"]):
        parts.append(pd.Timestamp(r["date"]).strftime("%Y-%m-%d %H:%M:%S"))
    parts.append(f"{human_size(int(r['disk_size']))}, {human_size(int(r['exclusive_bytes']))} exclusive")
    if not pd.isna(r["parent"]):
        parts.append("backing" if r["edge"] == "backing" else f"p={r['confidence']:.2f}")
    return "  ".join(parts)


def _gv_id(node: str) -> str:
    return "n" + "".join(c if c.isalnum() else f"_{ord(c):x}" for c in node)


def _gv_label(r: Any) -> str:
    from .report.summary import human_size
    lines = [("● live: " if r.live else "") + str(r.name)]
    if r.layer != "active":
        lines[0] += f" ({r.layer.split(':', 1)[1]})"
    if not pd.isna(r.date):
        lines.append(pd.Timestamp(r.date).strftime("%Y-%m-%d %H:%M:%S"))
    lines.append(f"size {human_size(int(r.disk_size))}")
    lines.append(f"exclusive {human_size(int(r.exclusive_bytes))}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- inference
def snapshot_tree(obj: Any, progress: bool = False) -> SnapshotTree:
    """Infer the snapshot forest of an image, a list of images, a path, or a directory of images."""
    from .sharing import sharing
    images, opened, notes = _open_all(obj)
    try:
        if not images:
            raise ImgscopeError(f"{obj}: no image could be opened")
        sh = sharing(images, progress=progress)
    finally:
        for img in opened:
            img.close()
    nodes = infer(sh)
    return SnapshotTree(nodes, sh, notes + sh.notes)


def _open_all(obj: Any) -> tuple[list[Any], list[Any], list[str]]:
    """(images to analyse, images opened here and to close, notes about skipped files)."""
    import imgscope
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    paths: list[tuple[str, bool]] = []   # (path, found by listing a directory)
    images: list[Any] = []
    for it in items:
        if isinstance(it, (str, os.PathLike)):
            p = os.fspath(it)
            paths.extend([(os.path.join(p, n), True) for n in sorted(os.listdir(p))] if os.path.isdir(p) else
                         [(p, False)])
        else:
            images.append(it)
    opened, notes = [], []
    for p, listed in paths:
        if not os.path.isfile(p):
            continue
        try:
            img = imgscope.open(p)
        except ImgscopeError as exc:
            notes.append(f"skipped {p}: {exc}")
            continue
        opened.append(img)
        if listed and img.format == "raw":   # any file reads as raw: keep raw files only as backing files
            notes.append(f"skipped {p}: no image format detected (raw files appear as backing files)")
            continue
        images.append(img)
    backing = {os.path.realpath(i.path) for img in images for i in img.chain()[1:]}
    tops = [img for img in images if os.path.realpath(img.path) not in backing]
    return tops, opened, notes  # closing an opened image also closes its backing chain


def infer(sh: Any) -> pd.DataFrame:
    """The node frame for a :class:`imgscope.sharing.Sharing` (parents, confidence, evidence)."""
    lay = sh.layers
    m = sh.matrix.to_numpy() + sh.tables.to_numpy()
    rows = []
    for fi in range(len(sh.files)):
        idx = [i for i, li in enumerate(sh.info) if li.file == fi]
        snaps = sorted((i for i in idx if sh.info[i].kind == "snapshot"),
                       key=lambda i: (sh.info[i].date, sh.info[i].snapshot_index))
        base = _backing_node(sh, fi)
        for pos, i in enumerate(snaps):
            rows.append((i, *_choose(sh, m, i, snaps[:pos], base)))
        for i in idx:
            if sh.info[i].kind != "snapshot":
                rows.append((i, *_choose(sh, m, i, snaps, base)))
    rows.sort(key=lambda r: r[0])
    labels = sh.labels
    out = pd.DataFrame({
        "node": pd.array(labels, dtype="string"),
        "file": lay["file"], "layer": pd.array([li.layer for li in sh.info], dtype="string"),
        "kind": lay["kind"], "live": (lay["kind"] == "active").to_numpy(), "name": lay["name"],
        "date": lay["date"], "vm_clock_nsec": lay["vm_clock_nsec"], "disk_size": lay["disk_size"],
        "exclusive_bytes": lay["exclusive_bytes"], "freed_bytes": lay["freed_bytes"],
        "parent": pd.array([None if r[1] is None else labels[r[1]] for r in rows], dtype="string"),
        "edge": pd.array([r[2] for r in rows], dtype="string"),
        "confidence": np.array([np.nan if r[3] is None else r[3] for r in rows], float),
        "evidence": pd.array([r[4] for r in rows], dtype="string"),
    })
    return out[list(NODE_COLUMNS)]


def _backing_node(sh: Any, fi: int) -> int | None:
    b = sh._below[fi] if fi < len(sh._below) else -1
    if b < 0:
        return None
    return next(i for i, li in enumerate(sh.info) if li.file == b and li.layer == "active")


def _choose(sh: Any, m: np.ndarray, child: int, cands: list[int], base: int | None
            ) -> tuple[int | None, str | None, float | None, str]:
    """(parent, edge kind, confidence, evidence) for one node among earlier candidates."""
    if not cands:
        if base is None:
            return None, None, None, "root: no earlier snapshot and no backing file"
        return base, "backing", 1.0, "the image header names this backing file"
    clock = sh.info[child].vm_clock_nsec
    note = ""
    if clock and sh.info[child].kind == "snapshot":
        ok = [c for c in cands if sh.info[c].vm_clock_nsec <= clock]
        if ok and len(ok) < len(cands):
            note = f"; {len(cands) - len(ok)} later-clock candidate(s) excluded"
        cands = ok or cands
    shared = {c: int(m[c, child]) for c in cands}
    dist = {c: int(m[c, c] + m[child, child] - 2 * m[c, child]) for c in cands}
    order = {c: k for k, c in enumerate(cands)}
    if max(shared.values()) == 0:
        best = cands[-1]
        return best, "inferred", round(1 / (len(cands) + 1), 3), \
            f"shares nothing with any earlier snapshot: assumed linear history{note}"
    ranked = sorted(cands, key=lambda c: (-shared[c], dist[c], -order[c]))
    best = ranked[0]
    name = sh.info[best].name
    if len(ranked) == 1:
        return best, "inferred", 1.0, f"only earlier snapshot; shares {shared[best]} clusters/tables{note}"
    run = ranked[1]
    lb = sh.labels
    ca, cb = sh.contradictions(lb[best], lb[child]), sh.contradictions(lb[run], lb[child])
    if ca > cb:
        best, run, ca, cb = run, best, cb, ca
        name = sh.info[best].name
    ds = shared[best] - shared[run]
    dd = max(0, dist[run] - dist[best])
    d = max(0, ds) + dd / 2 + (cb - ca)
    if d == 0:
        tied = sum(1 for c in ranked if shared[c] == shared[best] and dist[c] == dist[best])
        return best, "inferred", round(1 / tied, 3), \
            f"ties with {tied - 1} other snapshot(s) on sharing and difference: picked the most recent ({name}){note}"
    rn = sh.info[run].name
    why = (f"shares {shared[best]} clusters/tables, {ds} more than {rn}" if ds > 0 else
           f"ties with {rn} on shared clusters" if ds == 0 else f"shares {-ds} fewer than {rn}")
    if dd:
        why += f", {dd} fewer differing"
    if cb - ca:
        why += f"; {rn} has {cb} allocated guest cluster(s) the child lacks"
    return best, "inferred", round(1 - 0.5 ** d, 3), why + note
