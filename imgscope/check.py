"""Check results: findings as rows, qemu-compatible counters, JSON and exit codes.

``CheckResult.qemu_json()`` has exactly the keys ``qemu-img check --output=json``
prints (optional counters left out when zero, as qemu does), and
``exit_code()`` follows qemu-img: 0 clean, 1 check not completed, 2 corruptions,
3 leaks only, 63 format without check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalogue import CATALOGUE

FINDING_COLUMNS = ("problem", "cls", "severity", "counter", "host_offset", "guest_offset", "layer", "structure",
                   "expected", "found", "count", "message")


@dataclass
class CheckResult:
    filename: str
    format: str
    supported: bool = True
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    total_clusters: int = 0
    allocated_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0
    image_end_offset: int = 0
    has_cluster_stats: bool = True
    has_end_offset: bool = True
    repaired: bool = False
    notes: list[str] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    # ------------------------------------------------------------------ findings
    def add(self, pid: str, n: int = 1, **cols: Any) -> None:
        """Record ``n`` findings of problem ``pid``; array-valued columns give one row each."""
        if n <= 0:
            return
        p = CATALOGUE[pid]
        self.batches.append({"problem": pid, "n": n, **cols})
        if p.counter == "corruptions":
            self.corruptions += int(cols.get("_counted", n))
        elif p.counter == "leaks":
            self.leaks += int(cols.get("_counted", n))
        elif p.counter == "check_errors":
            self.check_errors += int(cols.get("_counted", n))

    @property
    def findings(self) -> Any:
        import numpy as np
        import pandas as pd
        cols: dict[str, list[Any]] = {c: [] for c in FINDING_COLUMNS}
        for b in self.batches:  # one list extension per batch and column: no per-batch DataFrame
            p = CATALOGUE[b["problem"]]
            n = b["n"]
            for c, v in (("problem", p.id), ("cls", p.cls), ("severity", p.severity), ("counter", p.counter)):
                cols[c].extend([v] * n)
            for c in ("host_offset", "guest_offset", "layer", "structure", "expected", "found", "count"):
                v = b.get(c)
                cols[c].extend(v.tolist() if isinstance(v, np.ndarray) else v if isinstance(v, list) else [v] * n)
        rows = len(cols["problem"])
        cols["message"] = [_message(_Row(cols, i)) for i in range(rows)]
        df = pd.DataFrame({c: pd.Series(cols[c], dtype=object) for c in FINDING_COLUMNS})
        df = df.astype({"problem": "category", "cls": "category", "severity": "category", "counter": "category"})
        for c in ("host_offset", "guest_offset"):
            vals = [None if v is None or v != v else int(v) for v in cols[c]]
            # via numpy uint64: pandas' own coercion goes through int64 and fails above 2^63
            df[c] = pd.arrays.IntegerArray(np.array([v or 0 for v in vals], np.uint64),
                                           np.array([v is None for v in vals], bool))
        df["count"] = pd.array([1 if v is None or v != v else int(v) for v in cols["count"]], dtype="Int64")
        for c in ("layer", "structure", "expected", "found", "message"):
            df[c] = pd.array([None if v is None else str(v) for v in cols[c]], dtype="string")
        return df[list(FINDING_COLUMNS)]

    def summary(self) -> dict[str, int]:
        """Findings per problem id (rows, not qemu counts)."""
        out: dict[str, int] = {}
        for b in self.batches:
            out[b["problem"]] = out.get(b["problem"], 0) + b["n"]
        return out

    # ------------------------------------------------------------------ qemu compatibility
    def qemu_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.has_end_offset and self.image_end_offset:
            out["image-end-offset"] = self.image_end_offset
        if self.has_cluster_stats:
            for k in ("total_clusters", "allocated_clusters", "fragmented_clusters", "compressed_clusters"):
                v = getattr(self, k)
                if v:
                    out[k.replace("_", "-")] = v
        out["filename"] = self.filename
        out["format"] = self.format
        out["check-errors"] = self.check_errors
        for k in ("corruptions", "leaks", "corruptions_fixed", "leaks_fixed"):
            v = getattr(self, k)
            if v:
                out[k.replace("_", "-")] = v
        return out

    def exit_code(self) -> int:
        if not self.supported:
            return 63
        if self.check_errors or self.error:
            return 1
        if self.corruptions:
            return 2
        if self.leaks:
            return 3
        return 0

    def human(self) -> str:
        lines: list[str] = []
        groups: dict[str, int] = {}
        for b in self.batches:
            groups[b["problem"]] = groups.get(b["problem"], 0) + b["n"]
        if groups:
            lines.append("Findings:")
            for pid, n in groups.items():
                p = CATALOGUE[pid]
                first = next(b for b in self.batches if b["problem"] == pid)
                example = _message(_first_row(first))
                lines.append(f"  {pid} {p.cls:<26} {n:>8} x  {p.severity:<7} e.g. {example}")
            lines.append("")
        for note in self.notes:
            lines.append(note)
        if self.repaired and (self.leaks_fixed or self.corruptions_fixed):
            lines.append("The following inconsistencies were found and repaired:")
            lines.append(f"    {self.leaks_fixed} leaked clusters")
            lines.append(f"    {self.corruptions_fixed} corruptions")
            lines.append("")
        if not self.supported:
            lines.append("This image format has no qemu-compatible check.")
        elif not (self.corruptions or self.leaks or self.check_errors):
            lines.append("No errors were found on the image.")
        else:
            if self.corruptions:
                lines.append(f"{self.corruptions} errors were found on the image.")
                lines.append("Data may be corrupted, or further writes to the image may corrupt it.")
            if self.leaks:
                lines.append(f"{self.leaks} leaked clusters were found on the image.")
                lines.append("This means waste of disk space, but no harm to data.")
            if self.check_errors:
                lines.append(f"{self.check_errors} internal errors have occurred during the check.")
        if self.has_cluster_stats and self.total_clusters:
            t, a = self.total_clusters, self.allocated_clusters
            lines.append(f"{a}/{t} = {100 * a / t:.2f}% allocated, "
                         f"{100 * self.fragmented_clusters / a if a else 0:.2f}% fragmented, "
                         f"{100 * self.compressed_clusters / a if a else 0:.2f}% compressed clusters")
        if self.has_end_offset and self.image_end_offset:
            lines.append(f"Image end offset: {self.image_end_offset}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html
        return f"<pre>{html.escape(self.human())}</pre>" + (self.findings.head(50).to_html() if self.batches else "")


class _Row:
    """Row ``i`` of the column lists, with attribute access for :func:`_message`."""

    def __init__(self, cols: dict[str, list[Any]], i: int) -> None:
        self._cols, self._i = cols, i

    def __getattr__(self, name: str) -> Any:
        return self._cols[name][self._i]


def _first_row(b: dict[str, Any]) -> Any:
    from types import SimpleNamespace

    def first(v: Any) -> Any:
        try:
            return v[0] if hasattr(v, "__len__") and not isinstance(v, str) else v
        except (IndexError, KeyError):
            return None
    return SimpleNamespace(problem=b["problem"], **{c: first(b.get(c)) for c in
                                                    ("host_offset", "guest_offset", "layer", "structure", "expected",
                                                     "found", "count")})


def _message(row: Any) -> str:
    p = CATALOGUE[row.problem]
    vals = {c: getattr(row, c, None) for c in ("host_offset", "guest_offset", "layer", "structure", "expected",
                                                "found", "count")}
    try:
        return p.message.format(**{k: (int(v) if k == "host_offset" and v is not None and str(v) != "<NA>" else
                                       (v if v is not None else "?")) for k, v in vals.items()})
    except (ValueError, TypeError, KeyError):
        return p.message
