"""matplotlib figures shared by the HTML report and the widgets (pure: frame in, Figure out).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot
state, no GUI backend) and serialised to PNG, so a report embeds them inline.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

ROLE_COLORS = {
    "header": "#4c4c4c", "l1": "#1f77b4", "l2": "#6baed6", "refcount_table": "#8c564b", "refcount_block": "#c49c94",
    "snapshot_table": "#9467bd", "bitmap_directory": "#e377c2", "bitmap_table": "#f7b6d2", "bitmap_data": "#fbd5e8",
    "crypto": "#17becf", "data": "#2ca02c", "compressed": "#bcbd22", "free": "#f0f0f0", "leaked": "#d62728",
    "mixed": "#ff7f0e",
}
#: most host clusters a strip draws (larger files are sampled: every k-th cluster)
MAX_CELLS = 65536


def figure(width: float = 8, height: float = 3) -> Any:
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(fig: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(png(fig)).decode()


def _grid(codes: np.ndarray, width: int = 256) -> np.ndarray:
    """Codes laid out row by row (``width`` per row), padded with -1; downsampled past MAX_CELLS."""
    if len(codes) > MAX_CELLS:
        codes = codes[::-(-len(codes) // MAX_CELLS)]
    width = max(1, min(width, len(codes)))
    pad = np.append(codes, np.full(-len(codes) % width, -1)).astype(float)
    pad[pad < 0] = np.nan
    return pad.reshape(-1, width)


def _categorical_image(ax: Any, codes: np.ndarray, labels: list[str], colors: list[str], title: str) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    grid = _grid(codes)
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=ListedColormap(colors), vmin=-0.5,
              vmax=len(colors) - 0.5)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    present = sorted(set(int(c) for c in np.unique(codes) if c >= 0))
    ax.legend(handles=[Patch(color=colors[c], label=labels[c]) for c in present], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1), frameon=False)


def host_strip(clusters: pd.DataFrame, color_by: str = "role", start: int | None = None,
               end: int | None = None) -> Any:
    """The host file as a grid of clusters coloured by role, refcount or owner (a range: start/end bytes)."""
    df = clusters
    if start is not None or end is not None:
        off = df["host_offset"].to_numpy(np.uint64)
        df = df[(off >= np.uint64(start or 0)) & (off < np.uint64(end if end is not None else 1 << 63))]
    fig = figure(8, 3)
    ax = fig.add_subplot()
    if color_by == "role":
        cats = list(df["role"].cat.categories)
        codes = df["role"].cat.codes.to_numpy()
        colors = [ROLE_COLORS.get(c, "#999999") for c in cats]
        labels = cats
    elif color_by == "refcount":
        rc = df["refcount"].fillna(0).to_numpy(np.int64)
        codes = np.minimum(rc, 4)
        labels = ["0 (free)", "1", "2", "3", "≥4"]
        colors = ["#f0f0f0", "#c6dbef", "#6baed6", "#2171b5", "#08306b"]
    else:
        cat = df["owner"].cat
        codes = cat.codes.to_numpy()
        labels = list(cat.categories)
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
        colors = [palette[i % len(palette)] if lb != "shared" else "#d62728" for i, lb in enumerate(labels)] or ["#999"]
    _categorical_image(ax, codes, labels, colors, f"host file by {color_by} ({len(df)} clusters, row = 256)")
    return fig


def guest_strip(strip: pd.DataFrame, label: str) -> Any:
    """One layer's guest space: not stored / exclusive / shared with 1 / with ≥2 other layers."""
    n = strip["n_layers"].to_numpy(np.int64)
    codes = np.where(strip["file_index"].to_numpy() < 0, 0, np.minimum(n, 3))
    fig = figure(8, 2.2)
    _categorical_image(fig.add_subplot(), codes, ["no host data", "exclusive", "shared by 2", "shared by ≥3"],
                       ["#f0f0f0", "#d62728", "#6baed6", "#08306b"], f"guest space of {label}")
    return fig


def sharing_heatmap(matrix: pd.DataFrame, layers: list[str] | None = None) -> Any:
    """Clusters in common, layer × layer (diagonal: clusters each layer uses)."""
    m = matrix if layers is None else matrix.loc[layers, layers]
    n = len(m)
    fig = figure(min(2 + 0.5 * n, 10), min(1.5 + 0.45 * n, 9))
    ax = fig.add_subplot()
    im = ax.imshow(m.to_numpy(), cmap="Blues", vmin=0)
    ax.set_xticks(range(n), [str(c) for c in m.columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [str(c) for c in m.index], fontsize=7)
    if n <= 16:
        vmax = m.to_numpy().max() if n else 0
        for i in range(n):
            for j in range(n):
                v = int(m.iat[i, j])
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > vmax / 2 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="clusters in common")
    return fig


def order_scatter(order: pd.DataFrame, title: str = "guest order vs host order") -> Any:
    """Guest offset against host offset per allocated cluster: a diagonal line is unfragmented."""
    fig = figure(5, 4)
    ax = fig.add_subplot()
    df = order.iloc[:: max(1, len(order) // 20000)]
    for kind, color in (("data", "#2ca02c"), ("zero_alloc", "#7f7f7f"), ("compressed", "#bcbd22")):
        sel = df["kind"] == kind
        if sel.any():
            ax.scatter(df.loc[sel, "guest_offset"].astype(float) / 2**20, df.loc[sel, "host_offset"].astype(float)
                       / 2**20, s=4, color=color, label=kind)
    ax.set_xlabel("guest offset (MiB)")
    ax.set_ylabel("host offset (MiB)")
    ax.set_title(title, fontsize=9)
    if len(df):
        ax.legend(fontsize=7)
    return fig


def run_histogram(runs: pd.DataFrame) -> Any:
    """Host-contiguous runs by length (clusters), weighted by the bytes they hold."""
    fig = figure(5, 3)
    ax = fig.add_subplot()
    if len(runs):
        ax.bar(runs["run_length"].astype(str), runs["bytes"] / 2**20, color="#1f77b4")
    ax.set_xlabel("run length (clusters)")
    ax.set_ylabel("MiB in runs of this length")
    ax.set_title("host contiguity", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=60)
    return fig
