"""Check results: findings as rows, qemu-compatible counters, JSON and exit codes.

``CheckResult.qemu_json()`` has exactly the keys ``qemu-img check --output=json``
prints (optional counters left out when zero, as qemu does), and
``exit_code()`` follows qemu-img: 0 clean, 1 check not completed, 2 corruptions,
3 leaks only, 63 format without check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalogue import CATALOGUE, QEMU_TEXT

#: the line that starts imgscope's own findings after qemu-img check's output (human output)
IMGSCOPE_ONLY = "imgscope findings and notes qemu-img check does not print:"
FINDINGS_HEADER = ("findings by class (--qemu-messages prints qemu-img's line per cluster, --findings every "
                   "row):")

FINDING_COLUMNS = ("problem", "cls", "severity", "counter", "host_offset", "guest_offset", "layer", "structure",
                   "expected", "found", "count", "message")


class Labels:
    """One ``structure`` label per finding, made on demand: ``Labels("block map[{}]", indices)``.
    A hostile table can give a million findings; their labels as strings would cost ~80 bytes each
    while only a findings frame or report asks for them."""

    def __init__(self, template: str, values: Any) -> None:
        self.template, self.values = template, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> str:
        return self.template.format(self.values[i])

    def tolist(self) -> list[str]:
        return [self.template.format(v) for v in _column(self.values, 0)]


def _column(v: Any, n: int) -> list[Any]:
    """A batch column as n plain Python values (an array or Labels element-wise, a scalar repeated)."""
    import numpy as np
    if isinstance(v, (np.ndarray, Labels)):
        return v.tolist()
    return v if isinstance(v, list) else [v] * n


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
    def refuse_like_qemu(self, img: Any) -> None:
        """qemu-img fails to open an image its driver refuses (``Image.qemu_open_error()``): the check
        then did not run for qemu (exit 1, no JSON, qemu's reason), whatever imgscope found in it."""
        reason = img.qemu_open_error()
        if reason:
            self.error = f"Could not open '{img.path}': {reason}"

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

        from .limits import enforce
        enforce("max_finding_rows", sum(int(b["n"]) for b in self.batches), "check findings frame")
        cols: dict[str, list[Any]] = {c: [] for c in FINDING_COLUMNS}
        for b in self.batches:  # one list extension per batch and column: no per-batch DataFrame
            p = CATALOGUE[b["problem"]]
            n = b["n"]
            for c, v in (("problem", p.id), ("cls", p.cls), ("severity", p.severity), ("counter", p.counter)):
                cols[c].extend([v] * n)
            values = [_column(b.get(c), n) for c in _VALUE_COLUMNS]
            for c, v in zip(_VALUE_COLUMNS, values):
                cols[c].extend(v)
            cols["message"].extend(_format(p.message, dict(zip(_VALUE_COLUMNS, row))) for row in zip(*values))
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
        if self.error:  # qemu-img opens the image before it asks the driver for a check
            return 1
        if not self.supported:
            return 63
        if self.check_errors:
            return 1
        if self.corruptions:
            return 2
        if self.leaks:
            return 3
        return 0

    def qemu_messages(self, repair: str | None = None, passes: tuple[str, ...] | None = None) -> list[str]:
        """The lines ``qemu-img check`` prints on stderr for these findings (of qemu's ``passes``, default
        all), in qemu's order; with ``repair`` ('leaks'/'all') the ones qemu fixes in place say
        ``Repairing``."""
        lines: list[str] = []
        group: list[tuple[tuple[int, str], str]] = []
        current: str | None = None
        for b in self.batches:
            text = QEMU_TEXT.get(b["problem"])
            if text is None or (passes is not None and text.qemu_pass not in passes):
                continue
            if text.qemu_pass != current:
                lines.extend(line for _, line in sorted(group, key=lambda kv: kv[0]))
                group, current = [], text.qemu_pass
            fixed = text.repaired_in is not None and repair in (text.repaired_in, "all")
            for row in _batch_rows(b):
                line = _qemu_line(text.template, row)
                if line is None:
                    continue
                if fixed:
                    line = "Repairing" + line[line.index(" "):]
                if text.stops:  # qemu's check ends here
                    return lines + [line]
                if current == "calculate":
                    lines.append(line)
                else:
                    group.append(((int(row["index"] or 0), b["problem"]), line))
        lines.extend(line for _, line in sorted(group, key=lambda kv: kv[0]))
        return lines

    def error_message(self) -> str | None:
        """What qemu-img reports as its fatal error (after its ``qemu-img: `` prefix), or None."""
        if self.error:
            return self.error
        if not self.supported:
            return "This image format does not support checks"
        if self.check_errors:
            return "Check failed"
        return None

    def human(self, own: bool = True) -> str:
        """qemu-img check's stdout (the repair block, then the summary qemu prints when the check ran),
        followed, with ``own``, by imgscope's own findings and notes, only when there are any."""
        lines: list[str] = []
        if self.repaired and (self.leaks_fixed or self.corruptions_fixed):
            lines += ["The following inconsistencies were found and repaired:", "",
                      f"    {self.leaks_fixed} leaked clusters", f"    {self.corruptions_fixed} corruptions", "",
                      "Double checking the fixed image now..."]
        if self.supported and not self.error:
            lines += self._summary()
        extra = self.grouped(qemu_reported=False) if own else []
        if extra:
            lines += ([""] if lines else []) + extra
        return "\n".join(lines)

    def _summary(self) -> list[str]:
        """``dump_human_image_check``."""
        lines: list[str] = []
        if not (self.corruptions or self.leaks or self.check_errors):
            lines.append("No errors were found on the image.")
        if self.corruptions:
            lines += ["", f"{self.corruptions} errors were found on the image.",
                      "Data may be corrupted, or further writes to the image may corrupt it."]
        if self.leaks:
            lines += ["", f"{self.leaks} leaked clusters were found on the image.",
                      "This means waste of disk space, but no harm to data."]
        if self.check_errors:
            lines += ["", f"{self.check_errors} internal errors have occurred during the check."]
        t, a = self.total_clusters, self.allocated_clusters
        if self.has_cluster_stats and t and a:
            lines.append(f"{a}/{t} = {100 * a / t:.2f}% allocated, {100 * self.fragmented_clusters / a:.2f}% "
                         f"fragmented, {100 * self.compressed_clusters / a:.2f}% compressed clusters")
        if self.has_end_offset and self.image_end_offset:
            lines.append(f"Image end offset: {self.image_end_offset}")
        return lines

    def grouped(self, qemu_reported: bool = True) -> list[str]:
        """The findings grouped by problem id: one line each with the count and one example (what the
        human output shows instead of qemu's line per cluster), then the repair notes.  Without
        ``qemu_reported`` only the findings qemu prints no line for."""
        groups: dict[str, int] = {}
        for b in self.batches:
            if qemu_reported or b["problem"] not in QEMU_TEXT:
                groups[b["problem"]] = groups.get(b["problem"], 0) + b["n"]
        if not groups and not (self.repaired and self.notes):  # a clean image's output stays qemu's
            return []
        lines = [FINDINGS_HEADER if qemu_reported else IMGSCOPE_ONLY]
        for pid, n in groups.items():
            p = CATALOGUE[pid]
            first = next(b for b in self.batches if b["problem"] == pid)
            lines.append(f"  {pid} {p.cls:<26} {n:>8} x  {p.severity:<7} e.g. {_message(_first_row(first))}")
        return lines + [f"  {note}" for note in self.notes]

    def report(self) -> str:
        """The findings by class, then qemu-img check's summary: what ``imgscope check`` shows."""
        return "\n".join(self.grouped() + [""] + [self.human(own=False)]).strip("\n")

    def _repr_html_(self) -> str:
        import html
        return f"<pre>{html.escape(self.report())}</pre>" + (self.findings.head(50).to_html() if self.batches else "")


_VALUE_COLUMNS = ("host_offset", "guest_offset", "layer", "structure", "expected", "found", "count")


def _first_row(b: dict[str, Any]) -> Any:
    from types import SimpleNamespace

    def first(v: Any) -> Any:
        try:
            return v[0] if hasattr(v, "__len__") and not isinstance(v, str) else v
        except (IndexError, KeyError):
            return None
    return SimpleNamespace(problem=b["problem"], **{c: first(b.get(c)) for c in _VALUE_COLUMNS})


def _message(row: Any) -> str:
    return _format(CATALOGUE[row.problem].message, {c: getattr(row, c, None) for c in _VALUE_COLUMNS})


def _format(message: str, vals: dict[str, Any]) -> str:
    """A problem's message for one finding's column values (a missing value shows as '?')."""
    try:
        return message.format(**{k: (int(v) if k == "host_offset" and v is not None and str(v) != "<NA>" else
                                     (v if v is not None else "?")) for k, v in vals.items()})
    except (ValueError, TypeError, KeyError):
        return message


def _batch_rows(b: dict[str, Any]) -> Any:
    """The rows of one batch as dicts of plain values (array columns element-wise)."""
    n = b["n"]
    cols = {k: _column(v, n)
            for k, v in b.items() if k not in ("problem", "n") and not k.startswith("_")}
    for i in range(n):
        yield {k: v[i] for k, v in cols.items()}


def _qemu_line(template: str, row: dict[str, Any]) -> str | None:
    """``template`` over the row; None when the row lacks a field qemu's message needs."""
    try:
        return template.format(**{k: (int(v) if isinstance(v, (bool, float)) else v) for k, v in row.items()})
    except (KeyError, ValueError, TypeError):
        return None
