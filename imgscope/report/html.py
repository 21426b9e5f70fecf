"""The standalone report: one HTML file (inline CSS, inline PNG plots, no network) and its numbers.

``build_report(img)`` computes everything once (check, clusters, leaks,
fragmentation, sharing); ``render_html`` lays it out; ``Report.numbers`` is
what ``imgscope report --output json`` prints.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from .summary import human_size, image_facts, table_html

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f0f0f0}.ok{color:#2a7a2a;font-weight:bold}.bad{color:#b22;font-weight:bold}
.warn{color:#b60;font-weight:bold}img{max-width:100%;border:1px solid #eee;margin:4px 0}pre{background:#f7f7f7;
padding:6px;font-size:12px;overflow-x:auto}.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
"""


@dataclass
class Report:
    """Everything one report shows, computed once."""

    facts: list[tuple[str, Any]]
    check: Any
    clusters: Any
    leaks: Any
    frag: Any
    sharing: Any = None
    tree_text: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def numbers(self) -> dict[str, Any]:
        """JSON-ready numbers (``imgscope report --output json``)."""
        roles = self.clusters["role"].value_counts()
        out: dict[str, Any] = {
            "image": {k: v for k, v in self.facts},
            "check": self.check.qemu_json(),
            "exit_code": self.check.exit_code(),
            "findings": {k: int(v) for k, v in self.check.summary().items()},
            "roles": {str(k): int(v) for k, v in roles[roles > 0].items()},
            "leaks": self.leaks.numbers(),
            "fragmentation": self.frag.numbers(),
            "notes": list(self.notes),
        }
        if self.sharing is not None:
            cols = ["layer", "clusters", "exclusive_bytes", "shared_bytes", "freed_bytes"]
            out["sharing"] = [{k: (None if v is None or str(v) == "<NA>" else (int(v) if k != "layer" else str(v)))
                               for k, v in r.items()} for r in self.sharing.layers[cols].to_dict(orient="records")]
        return out


def build_report(img: Any, progress: bool = False) -> Report:
    """Run every analysis the report shows on ``img`` (read-only)."""
    from .fragmentation import frag_report
    from .leaks import leak_report
    res = img.check()
    cl = img.clusters()
    rep = Report(image_facts(img), res, cl, leak_report(img, res, cl), frag_report(img, res, cl))
    if img.snapshot_list() or img.backing() is not None:
        from ..sharing import sharing
        from ..tree import infer
        try:
            rep.sharing = sharing(img, progress=progress)
            from ..tree import SnapshotTree
            rep.tree_text = SnapshotTree(infer(rep.sharing), rep.sharing).to_text()
        except Exception as exc:  # noqa: BLE001 - the report still shows everything else
            rep.notes.append(f"sharing analysis failed: {exc}")
    return rep


def text_summary(rep: Report) -> str:
    """A few lines for the terminal."""
    q = rep.check.qemu_json()
    lk, fr = rep.leaks, rep.frag
    lines = [f"image: {rep.facts[0][1]}", f"check: exit code {rep.check.exit_code()}, "
             f"{q.get('corruptions', 0)} corruptions, {q.get('leaks', 0)} leaks",
             f"leaks: {lk.leaked_clusters} clusters, {human_size(lk.reclaim_bytes)} reclaimable by -r leaks "
             f"({human_size(lk.tail_bytes)} at the tail)",
             f"fragmentation: {fr.qemu_fragmented_pct:.2f}% (qemu), {int(fr.holes['bytes'].sum())} bytes in "
             f"{len(fr.holes)} free hole(s)"]
    if rep.sharing is not None:
        for r in rep.sharing.layers.itertuples():
            freed = "" if str(r.freed_bytes) == "<NA>" else f", frees {human_size(int(r.freed_bytes))} if deleted"
            lines.append(f"  {r.layer}: {human_size(int(r.exclusive_bytes))} exclusive, "
                         f"{human_size(int(r.shared_bytes))} shared{freed}")
    return "\n".join(lines + rep.notes)


# ---------------------------------------------------------------------------- HTML
def render_html(rep: Report, img: Any = None) -> str:
    """One standalone HTML page: no external stylesheet, script, font or image."""
    return page(f"imgscope report: {rep.facts[0][1]}", "".join(sections(rep).values()))


def page(title: str, body: str) -> str:
    """A standalone page: the report's inline CSS, an escaped title, ``body`` (HTML) as is."""
    t = html.escape(title)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{t}</title><style>{_CSS}</style>"
            f"</head><body><h1>{t}</h1>{body}</body></html>")


def sections(rep: Report) -> dict[str, str]:
    """The report's sections as HTML fragments, by title (the Report widget shows one per tab)."""
    out = {"Summary": _summary(rep), "Findings": _findings(rep), "Leaks": _leaks(rep),
           "Fragmentation": _fragmentation(rep)}
    if rep.sharing is not None:
        out["Sharing"] = _sharing(rep)
    return out


def _img(fig: Any, alt: str) -> str:
    from .plots import data_uri
    return f"<img alt='{html.escape(alt)}' src='{data_uri(fig)}'>"


def _summary(rep: Report) -> str:
    from .plots import host_strip
    code = rep.check.exit_code()
    cls, word = {0: ("ok", "clean"), 3: ("warn", "leaks only")}.get(code, ("bad", "problems found"))
    q = rep.check.qemu_json()
    rows = [(k.replace("-", " "), v) for k, v in q.items() if k not in ("filename", "format")]
    return (f"<h2>Summary</h2><p>check: <span class='{cls}'>{word}</span> (exit code {code})</p>"
            + table_html(rep.facts + rows) + _img(host_strip(rep.clusters), "host clusters by role"))


def _findings(rep: Report) -> str:
    f = rep.check.findings
    if not len(f):
        return "<h2>Findings</h2><p class='ok'>No findings.</p>"
    g = f.groupby(["problem", "cls", "severity"], observed=True).size().reset_index(name="rows")
    return ("<h2>Findings</h2>" + g.to_html(index=False) + "<p>First rows:</p>"
            + f.head(50)[["problem", "severity", "host_offset", "layer", "message"]].to_html(index=False))


def _leaks(rep: Report) -> str:
    lk = rep.leaks
    rows = [("leaked clusters (qemu count)", lk.leaked_clusters), ("unreferenced (freed by -r leaks)",
            lk.unreferenced_clusters), ("over-counted (refcount lowered only)", lk.overcounted_clusters),
            ("reclaimable", human_size(lk.reclaim_bytes)), ("inside the file", human_size(lk.inside_bytes)),
            ("at the tail", human_size(lk.tail_bytes)), ("image end after repair", lk.end_after_repair),
            ("file size", lk.file_size), ("-r leaks can run", "yes" if lk.repairable else "no (needs -r all)")]
    body = table_html(rows)
    if len(lk.ranges):
        body += lk.ranges.to_html(index=False)
    body += "".join(f"<p><i>{html.escape(n)}</i></p>" for n in lk.notes)
    return "<h2>Leaks</h2>" + body


def _fragmentation(rep: Report) -> str:
    from .plots import order_scatter, run_histogram
    fr = rep.frag
    body = (f"<p>qemu-img check: <b>{fr.qemu_fragmented_pct:.2f}%</b> fragmented. Free holes inside the file: "
            f"{len(fr.holes)} ({human_size(int(fr.holes['bytes'].sum()))}).</p>" + fr.layers.to_html(index=False))
    plots = [_img(order_scatter(fr.order, f"guest vs host order ({fr.plot_layer})"), "guest vs host order"),
             _img(run_histogram(fr.runs), "run lengths")]
    if len(fr.holes):
        body += "<p>Free holes:</p>" + fr.holes.head(50).to_html(index=False)
    return "<h2>Fragmentation</h2>" + body + "<div class='plots'>" + "".join(plots) + "</div>"


def _sharing(rep: Report) -> str:
    from .plots import sharing_heatmap
    sh = rep.sharing
    cols = ["layer", "kind", "name", "clusters", "exclusive_bytes", "shared_bytes", "freed_bytes", "shared_with"]
    body = sh.layers[cols].to_html(index=False) + _img(sharing_heatmap(sh.matrix), "sharing matrix")
    if rep.tree_text:
        body += ("<p>Inferred snapshot tree (p = confidence of the edge):</p><pre>" + html.escape(rep.tree_text)
                 + "</pre>")
    return "<h2>Snapshots and sharing</h2>" + body
