"""The fleet report: totals, worst offenders, shared backing files and features over a scan frame.

``fleet_report(images)`` reads only the frame :func:`imgscope.scan.scan` returns (one row per
image); ``render_fleet_html`` lays it out as one standalone page with the single-image report's
CSS and inline PNG (no network); ``FleetReport.numbers`` is the same content as JSON-ready data.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .summary import human_size, table_html

#: check state of one image, first match wins (the order of the status bars)
STATUSES = ("unreadable", "corruptions", "check errors", "leaks", "not checked", "clean")
_STATUS_COLORS = ("#7f7f7f", "#d62728", "#9467bd", "#ff7f0e", "#c7c7c7", "#2ca02c")


@dataclass
class FleetReport:
    """Everything the fleet page shows; every frame keeps the scan frame's ``path`` column."""

    totals: dict[str, int]
    status: pd.Series          # image count per status (STATUSES order)
    by_format: pd.DataFrame    # format x status counts
    leaked: pd.DataFrame       # worst offenders by leaked bytes
    fragmented: pd.DataFrame   # ... by qemu's fragmented percentage
    corrupt: pd.DataFrame      # images with corruptions or the corrupt bit
    unreadable: pd.DataFrame   # images that could not be opened (their error)
    backing: pd.DataFrame      # backing file -> number of scanned overlays
    features: pd.DataFrame     # incompatible feature -> number of images
    top: int

    @property
    def numbers(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {"totals": dict(self.totals), "status": {k: int(v) for k, v in self.status.items()},
                "worst": {name: _records(getattr(self, name))
                          for name in ("leaked", "fragmented", "corrupt", "unreadable")},
                "backing": _records(self.backing), "incompatible_features": _records(self.features)}


def image_status(images: pd.DataFrame) -> pd.Series:
    """Each image's check state (one of :data:`STATUSES`)."""
    def flag(s: pd.Series) -> pd.Series:
        return s.fillna(False).astype(bool)
    rc = images["check_rc"]
    conds = [flag(images["error"].notna()), flag((images["corruptions"] > 0) | (rc == 2) | images["corrupt"]),
             flag((images["check_errors"] > 0) | (rc == 1)), flag(images["leaks"] > 0),
             flag(rc.isna() | (rc == 63))]
    out = pd.Series("clean", index=images.index, dtype=object)
    for name, cond in reversed(list(zip(STATUSES, conds))):
        out[cond] = name
    return pd.Series(pd.Categorical(out, categories=list(STATUSES)), index=images.index, name="status")


def fleet_report(images: pd.DataFrame, top: int = 10) -> FleetReport:
    """Summarise a scan frame (:func:`imgscope.scan.scan`); offender lists keep the ``top`` worst."""
    df = images.reset_index(drop=True)
    status = image_status(df)

    def total(col: str) -> int:
        return int(df[col].sum(skipna=True))

    def count(mask: pd.Series) -> int:
        return int(mask.fillna(False).astype(bool).sum())

    totals = {"images": len(df), "readable": count(df["error"].isna()), "unreadable": count(df["error"].notna()),
              "checked": count(df["check_rc"].notna() & (df["check_rc"] != 63)),
              "virtual_bytes": total("virtual_size"), "file_bytes": total("file_size"),
              "allocated_bytes": total("allocated_bytes"), "dirty": count(df["dirty"]),
              "corrupt_flag": count(df["corrupt"]), "with_corruptions": count(df["corruptions"] > 0),
              "with_check_errors": count(df["check_errors"] > 0), "with_leaks": count(df["leaks"] > 0),
              "leaked_clusters": total("leaks"), "leaked_bytes": total("leaked_bytes"),
              "with_fragmentation": count(df["fragmented_pct"] > 0),
              "corrupt_or_with_corruptions": count((df["corruptions"] > 0) | df["corrupt"]),
              "with_backing_file": count(df["backing_file"].notna() & (df["backing_file"] != "")),
              "with_snapshots": count(df["snapshot_count"] > 0), "snapshots": total("snapshot_count")}
    fmt = df["format"].astype(object).where(df["format"].notna(), "unknown")
    by_format = pd.crosstab(fmt, status).reindex(columns=list(STATUSES), fill_value=0)
    by_format.index.name, by_format.columns.name = "format", None

    def worst(mask: pd.Series, by: list[str], cols: list[str]) -> pd.DataFrame:
        sel = df[mask.fillna(False).astype(bool)]
        return sel.sort_values(by + ["path"], ascending=[False] * len(by) + [True])[["path", *cols]].head(top)

    return FleetReport(
        totals=totals, status=status.value_counts().reindex(list(STATUSES), fill_value=0), by_format=by_format,
        leaked=worst(df["leaked_bytes"] > 0, ["leaked_bytes"], ["format", "leaks", "leaked_bytes", "file_size"]),
        fragmented=worst(df["fragmented_pct"] > 0, ["fragmented_pct"],
                         ["format", "fragmented_pct", "allocated_clusters"]),
        corrupt=worst((df["corruptions"] > 0) | df["corrupt"], ["corruptions"],
                      ["format", "corruptions", "corrupt", "dirty", "check_rc"]),
        unreadable=df[df["error"].notna()].sort_values("path")[["path", "error"]].head(top),
        backing=_backing(df), features=_features(df), top=top)


def _backing(df: pd.DataFrame) -> pd.DataFrame:
    """Backing files named by the scanned images (resolved against each overlay's directory)."""
    rows = df[df["backing_file"].notna() & (df["backing_file"] != "")]
    cols = ["backing_file", "backing_format", "overlays", "exists", "example_overlay"]
    if rows.empty:
        return pd.DataFrame(columns=cols)

    def resolve(path: str, backing: str) -> str:
        if backing.startswith("json:") or os.path.isabs(backing):
            return backing
        return os.path.normpath(os.path.join(os.path.dirname(path), backing))

    files = [resolve(str(p), str(b)) for p, b in zip(rows["path"], rows["backing_file"])]
    g = pd.DataFrame({"backing_file": files, "backing_format": rows["backing_format"].astype(object).to_numpy(),
                      "path": rows["path"].astype(str).to_numpy()})
    out = g.groupby("backing_file", sort=False).agg(backing_format=("backing_format", "first"),
                                                    overlays=("path", "size"), example_overlay=("path", "min"))
    out = out.reset_index()
    out["exists"] = [os.path.exists(f) for f in out["backing_file"]]
    return out.sort_values(["overlays", "backing_file"], ascending=[False, True])[cols].reset_index(drop=True)


def _features(df: pd.DataFrame) -> pd.DataFrame:
    """Incompatible features set in the scanned images, with how many images have each."""
    names = df["incompatible_features"].dropna().astype(str)
    exploded = names[names != ""].str.split(",").explode()
    out = exploded.value_counts().rename_axis("feature").reset_index(name="images")
    return out.sort_values(["images", "feature"], ascending=[False, True]).reset_index(drop=True)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    def plain(v: Any) -> Any:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            return None
        return v.item() if hasattr(v, "item") else v
    return [{k: plain(v) for k, v in r.items()} for r in df.astype(object).to_dict(orient="records")]


# ---------------------------------------------------------------------------- HTML
def render_fleet_html(rep: FleetReport, title: str = "imgscope fleet report") -> str:
    """One standalone HTML page (inline CSS and PNG, no script, no network)."""
    from .html import page
    return page(title, "".join(fleet_sections(rep).values()))


def fleet_sections(rep: FleetReport) -> dict[str, str]:
    """The fleet page's sections as HTML fragments, by title."""
    frames = (rep.leaked, rep.fragmented, rep.corrupt, rep.unreadable)
    base = _common_dir([str(p) for f in frames for p in f["path"]] + [str(p) for p in rep.backing["backing_file"]])
    return {"Totals": _totals(rep), "Worst offenders": _offenders(rep, base),
            "Backing files": _backing_html(rep, base), "Incompatible features": _features_html(rep)}


def _common_dir(paths: list[str]) -> str:
    try:
        cp = os.path.commonpath(paths) if paths else ""
    except ValueError:  # absolute and relative paths mixed
        return ""
    return cp if os.path.isdir(cp) else os.path.dirname(cp)


def _short(df: pd.DataFrame, base: str, cols: tuple[str, ...] = ("path",)) -> pd.DataFrame:
    out = df.copy()
    for c in cols:
        if c in out and base:
            out[c] = [os.path.relpath(str(p), base) if str(p).startswith(base + os.sep) else p for p in out[c]]
    for c in ("leaked_bytes", "file_size"):
        if c in out:
            out[c] = [human_size(int(v)) for v in out[c]]
    if "fragmented_pct" in out:
        out["fragmented_pct"] = [f"{float(v):.2f}" for v in out["fragmented_pct"]]
    return out


def _totals(rep: FleetReport) -> str:
    from .html import _img
    t = rep.totals
    rows = [("images", t["images"]), ("readable / unreadable", f"{t['readable']} / {t['unreadable']}"),
            ("checked (qemu-compatible check)", t["checked"]),
            ("virtual size", f"{human_size(t['virtual_bytes'])} ({t['virtual_bytes']} bytes)"),
            ("file size", f"{human_size(t['file_bytes'])} ({t['file_bytes']} bytes)"),
            ("allocated on the host", f"{human_size(t['allocated_bytes'])} ({t['allocated_bytes']} bytes)"),
            ("dirty", t["dirty"]), ("corrupt bit set", t["corrupt_flag"]),
            ("with corruptions", t["with_corruptions"]), ("with check errors", t["with_check_errors"]),
            ("with leaks", t["with_leaks"]),
            ("leaked", f"{human_size(t['leaked_bytes'])} ({t['leaked_clusters']} clusters)"),
            ("with a backing file", t["with_backing_file"]),
            ("with snapshots", f"{t['with_snapshots']} ({t['snapshots']} snapshots)")]
    bad = t["with_corruptions"] + t["unreadable"]
    cls, word = ("bad", f"{bad} image(s) need attention") if bad else ("ok", "no corruption, every image readable")
    return (f"<h2>Totals</h2><p><span class='{cls}'>{html.escape(word)}</span></p>" + table_html(rows)
            + "<div class='plots'>" + _img(status_bars(rep.by_format), "check state per format") + "</div>")


def _offenders(rep: FleetReport, base: str) -> str:
    t = rep.totals
    parts = [("Most leaked bytes", rep.leaked, t["with_leaks"]),
             ("Most fragmented (qemu-img check's percentage)", rep.fragmented, t["with_fragmentation"]),
             ("Corruptions or corrupt bit", rep.corrupt, t["corrupt_or_with_corruptions"]),
             ("Unreadable", rep.unreadable, t["unreadable"])]
    note = f"<p>Paths relative to {html.escape(base)}.</p>" if base else ""
    body = ""
    for title, df, n in parts:
        shown = f"{len(df)} shown" + (f" of {n}" if n > len(df) else "")
        body += f"<h3>{html.escape(title)} ({shown})</h3>"
        body += _short(df, base).to_html(index=False, na_rep="—") if len(df) else "<p class='ok'>none</p>"
    return "<h2>Worst offenders</h2>" + note + body


def _backing_html(rep: FleetReport, base: str) -> str:
    if rep.backing.empty:
        return "<h2>Backing files</h2><p>No scanned image has a backing file.</p>"
    shared = int((rep.backing["overlays"] > 1).sum())
    return (f"<h2>Backing files</h2><p>{len(rep.backing)} backing file(s), {shared} shared by several scanned "
            "overlays (a change to one of those changes every overlay).</p>"
            + _short(rep.backing, base, ("backing_file", "example_overlay")).to_html(index=False, na_rep="—"))


def _features_html(rep: FleetReport) -> str:
    if rep.features.empty:
        return "<h2>Incompatible features</h2><p>No incompatible feature bit is set.</p>"
    return ("<h2>Incompatible features</h2><p>Images a reader without these features must refuse.</p>"
            + rep.features.to_html(index=False))


def status_bars(by_format: pd.DataFrame) -> Any:
    """Images per format, stacked by check state."""
    from .plots import figure
    fig = figure(7, 0.6 + 0.35 * max(3, len(by_format)))
    ax = fig.add_subplot()
    left = None
    labels = [str(i) for i in by_format.index]
    for name, color in zip(STATUSES, _STATUS_COLORS):
        vals = by_format[name].to_numpy() if name in by_format else [0] * len(labels)
        ax.barh(labels, vals, left=left, color=color, label=name)
        left = vals if left is None else left + vals
    ax.set_xlabel("images")
    ax.set_title("check state per format", fontsize=9)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig
