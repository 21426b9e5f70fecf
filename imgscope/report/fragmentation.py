"""Fragmentation: qemu's percentage, host contiguity, seeks, free holes, per layer.

Definitions (docs/notebook.md):

* ``allocated`` / ``fragmented`` follow ``qemu-img check``: a data or
  preallocated-zero cluster is fragmented when its host offset does not follow
  the previous such cluster *of the same lookup table*; every compressed
  cluster counts as fragmented.  For the active layer the numbers equal qemu's.
* a *run* is a maximal sequence of guest-consecutive clusters stored
  host-consecutively (an extent of ``qemu-img map``); the run-length
  distribution counts runs by length.
* ``seeks`` is the number of host repositionings a sequential guest read of the
  layer's own clusters needs: one for the first read, then one whenever the
  next cluster that must be read (data or compressed; zero and unallocated
  clusters read no bytes) does not start where the previous read ended.
* free holes are runs of host clusters with refcount 0 and no reference before
  the last used cluster of the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..model import COMPRESSED, DATA, ZERO_ALLOC

LAYER_COLUMNS = ("layer", "allocated_clusters", "fragmented_clusters", "fragmented_pct", "compressed_clusters",
                 "runs", "mean_run_clusters", "longest_run_clusters", "seeks")


@dataclass
class FragReport:
    """Fragmentation numbers of one image (all layers) and plot data of one layer."""

    cluster_size: int
    layers: pd.DataFrame            # LAYER_COLUMNS
    runs: pd.DataFrame              # run_length, runs, clusters, bytes (layer ``plot_layer``)
    order: pd.DataFrame             # guest_offset, host_offset, kind: guest order vs host order
    holes: pd.DataFrame             # start, end, clusters, bytes: free holes inside the file
    plot_layer: str = "active"
    qemu_fragmented_pct: float = 0.0
    notes: list[str] = field(default_factory=list)

    def numbers(self) -> dict[str, Any]:
        rows = self.layers.to_dict(orient="records")
        return {"qemu_fragmented_pct": self.qemu_fragmented_pct, "cluster_size": self.cluster_size,
                "layers": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows],
                "free_holes": int(len(self.holes)), "free_hole_bytes": int(self.holes["bytes"].sum()),
                "run_length_histogram": {int(r.run_length): int(r.runs) for r in self.runs.itertuples()},
                "notes": list(self.notes)}


def frag_report(img: Any, check: Any = None, clusters: pd.DataFrame | None = None,
                layer: str = "active") -> FragReport:
    """Fragmentation of every layer of ``img``; runs and order plot data for ``layer``."""
    cs = img.cluster_size or 0
    res = check if check is not None else img.check()
    per_table = _l2_entries(img)
    rows, notes = [], []
    plot = None
    for name in img.layer_names():
        try:
            gm = img.guest_map(name)
        except NotImplementedError:
            notes.append(f"{img.format}: no per-cluster map; fragmentation not computed")
            break
        st = layer_stats(gm, per_table or len(gm.kind))
        rows.append({"layer": name, **st["numbers"]})
        if name == layer:
            plot = st
    layers = pd.DataFrame(rows, columns=list(LAYER_COLUMNS))
    qpct = 100 * res.fragmented_clusters / res.allocated_clusters if getattr(res, "allocated_clusters", 0) else 0.0
    holes = free_holes(clusters if clusters is not None else img.clusters(), cs) if cs else _holes_frame([], [], cs)
    runs = plot["runs"] if plot else _runs_frame(np.zeros(0, np.int64), cs)
    order = plot["order"] if plot else pd.DataFrame({"guest_offset": [], "host_offset": [], "kind": []})
    return FragReport(cs, layers, runs, order, holes, layer, round(qpct, 2), notes)


def _l2_entries(img: Any) -> int | None:
    """Entries per lookup table (fragmentation restarts with each table, as qemu counts it)."""
    return getattr(getattr(img, "tables", None), "l2e", None)


def layer_stats(gm: Any, per_table: int) -> dict[str, Any]:
    """Numbers, run-length histogram and guest/host order for one guest map."""
    cs = gm.cluster_size
    kind = gm.kind
    g = np.flatnonzero((kind == DATA) | (kind == ZERO_ALLOC) | (kind == COMPRESSED))
    k = kind[g]
    host = gm.host[g]
    comp = k == COMPRESSED
    std = ~comp
    gs, hs = g[std], host[std].astype(np.int64)
    same_table = (gs[1:] // per_table) == (gs[:-1] // per_table)
    frag = int(comp.sum()) + int(np.count_nonzero(same_table & (hs[1:] != hs[:-1] + cs)))
    data = k == DATA
    runs = _run_lengths(g[data], host[data].astype(np.int64), cs)
    reads = (k == DATA) | comp
    start = host[reads].astype(np.int64)
    end = np.where(comp[reads], start + gm.length[g][reads].astype(np.int64), start + cs)
    seeks = int(len(start) > 0) + int(np.count_nonzero(start[1:] != end[:-1]))
    alloc = len(g)
    numbers = {
        "allocated_clusters": alloc, "fragmented_clusters": frag,
        "fragmented_pct": round(100 * frag / alloc, 2) if alloc else 0.0,
        "compressed_clusters": int(comp.sum()), "runs": len(runs),
        "mean_run_clusters": round(float(runs.mean()), 2) if len(runs) else 0.0,
        "longest_run_clusters": int(runs.max()) if len(runs) else 0, "seeks": seeks,
    }
    order = pd.DataFrame({"guest_offset": g.astype(np.uint64) * np.uint64(cs), "host_offset": host,
                          "kind": pd.Categorical.from_codes(k.astype(np.int8), categories=list(_KINDS))})
    return {"numbers": numbers, "runs": _runs_frame(runs, cs), "order": order}


_KINDS = ("unallocated", "data", "zero", "zero_alloc", "compressed")


def _run_lengths(g: np.ndarray, h: np.ndarray, cs: int) -> np.ndarray:
    """Lengths of maximal guest- and host-consecutive runs (inputs in guest order)."""
    if not len(g):
        return np.zeros(0, np.int64)
    brk = np.ones(len(g), bool)
    brk[1:] = (np.diff(g) != 1) | (np.diff(h) != cs)
    starts = np.flatnonzero(brk)
    return np.diff(np.append(starts, len(g)))


def _runs_frame(runs: np.ndarray, cs: int) -> pd.DataFrame:
    lengths, counts = np.unique(runs, return_counts=True)
    return pd.DataFrame({"run_length": lengths.astype(np.int64), "runs": counts.astype(np.int64),
                         "clusters": (lengths * counts).astype(np.int64),
                         "bytes": (lengths * counts * cs).astype(np.int64)})


def free_holes(cl: pd.DataFrame, cs: int) -> pd.DataFrame:
    """Runs of free host clusters (refcount 0, no reference) before the last used cluster."""
    rc = cl["refcount"].fillna(0).to_numpy(np.int64)
    refs = cl["references"].to_numpy(np.int64)
    used = (rc > 0) | (refs > 0)
    last = np.flatnonzero(used)
    if not len(last):
        return _holes_frame([], [], cs)
    free = ~used[:last[-1] + 1]
    idx = np.flatnonzero(free)
    if not len(idx):
        return _holes_frame([], [], cs)
    brk = np.ones(len(idx), bool)
    brk[1:] = np.diff(idx) != 1
    starts = np.flatnonzero(brk)
    n = np.diff(np.append(starts, len(idx)))
    return _holes_frame(idx[starts], n, cs)


def _holes_frame(first: Any, n: Any, cs: int) -> pd.DataFrame:
    first = np.asarray(first, np.int64)
    n = np.asarray(n, np.int64)
    return pd.DataFrame({"start": (first * cs).astype(np.uint64), "end": ((first + n) * cs).astype(np.uint64),
                         "clusters": n, "bytes": n * cs})
