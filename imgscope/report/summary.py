"""Small HTML summaries: the rich notebook representations of Image and Sharing.

Kept free of matplotlib and ipywidgets so ``_repr_html_`` stays cheap.
"""
from __future__ import annotations

import html
from typing import Any

from ..commands import size_to_str as human_size

__all__ = ["human_size", "image_facts", "image_html", "sharing_html", "table_html"]

_STYLE = ("<style>.imgscope-t{border-collapse:collapse;font-size:12px}.imgscope-t td,.imgscope-t th"
          "{border:1px solid #ccc;padding:2px 6px;text-align:left}.imgscope-t th{background:#f0f0f0}</style>")


def table_html(rows: list[tuple[str, Any]], title: str | None = None) -> str:
    """A two-column key/value table, escaped."""
    head = f"<b>{html.escape(title)}</b>" if title else ""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"{_STYLE}{head}<table class='imgscope-t'>{body}</table>"


def image_facts(img: Any) -> list[tuple[str, Any]]:
    """The facts an image summary shows (cheap: header and snapshot table only)."""
    rows: list[tuple[str, Any]] = [("file", img.path), ("format", img.format),
                                   ("virtual size", f"{human_size(img.virtual_size)} ({img.virtual_size} bytes)"),
                                   ("file size", human_size(img.src.size))]
    if img.cluster_size:
        rows.append(("cluster size", human_size(img.cluster_size)))
    snaps = img.snapshot_list()
    rows.append(("layers", f"active + {len(snaps)} snapshot(s)" if snaps else "active"))
    b = img.backing()
    if b is not None:
        rows.append(("backing file", b[0] + (f" ({b[1]})" if b[1] else "")))
    if img.dirty:
        rows.append(("dirty", "yes: refcounts may be stale"))
    return rows


def image_html(img: Any) -> str:
    """Rich summary of an :class:`imgscope.image.Image` for notebooks."""
    snaps = img.snapshot_list()
    out = table_html(image_facts(img), f"imgscope {img.format} image")
    if snaps:
        rows = "".join(f"<tr><td>{html.escape(s.id)}</td><td>{html.escape(s.name)}</td>"
                       f"<td>{human_size(s.disk_size or img.virtual_size)}</td></tr>" for s in snaps[:50])
        more = f"<p>… {len(snaps) - 50} more</p>" if len(snaps) > 50 else ""
        out += f"<table class='imgscope-t'><tr><th>id</th><th>name</th><th>disk size</th></tr>{rows}</table>{more}"
    return out


def sharing_html(sh: Any) -> str:
    """Rich summary of a :class:`imgscope.sharing.Sharing`: per-layer numbers and the matrix."""
    cols = ["layer", "kind", "name", "clusters", "exclusive_bytes", "shared_bytes", "freed_bytes", "shared_with"]
    df = sh.layers[cols].copy()
    for c in ("exclusive_bytes", "shared_bytes"):
        df[c] = [human_size(int(v)) for v in df[c]]
    df["freed_bytes"] = ["—" if v is None or str(v) == "<NA>" else human_size(int(v)) for v in df["freed_bytes"]]
    head = f"<b>sharing</b> ({len(sh.files)} file(s), unit {human_size(sh.unit)})"
    notes = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in sh.notes)
    return (_STYLE + head + df.to_html(index=False, classes="imgscope-t") + "<b>clusters in common</b>"
            + sh.matrix.to_html(classes="imgscope-t") + notes)
