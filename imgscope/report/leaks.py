"""Leaked clusters: where they are, what they most likely were, what ``-r leaks`` reclaims.

A cluster is *leaked* when its on-disk refcount is higher than the number of
references the image's tables make to it (qemu's ``Leaked cluster`` lines,
imgscope problem Q2-RC-002).  If nothing references it at all, ``check -r
leaks`` sets its refcount to 0 and the space becomes reusable; otherwise only the
counter is lowered.  qemu never shrinks the file while repairing, so leaked
space at the *tail* (after the last referenced cluster) stays in the file until
it is truncated or reused.

How a leaked cluster is classified (first rule that matches; docs/notebook.md):

1. its content parses as a lookup table — every non-zero 64-bit entry is a
   plausible qcow2 L1/L2 entry (no reserved bits, cluster-aligned offset inside
   the file) — : ``former L1 table`` when most entries point at L2 tables (live
   or leaked table-like clusters), else ``former L2 table``;
2. its content parses as a refcount block (small counters, at least one set):
   ``former refcount block``;
3. a former L2 table (rule 1) points at it: ``data of a deleted snapshot``;
4. it is all zeros: ``zero-filled allocation``;
5. it lies in the tail: ``aborted allocation at the tail``;
6. otherwise: ``orphaned data`` (a deleted snapshot's or an interrupted write's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: leaked clusters whose content is read for classification (the rest: "not sampled")
MAX_SAMPLED = 4096
MAX_SAMPLED_BYTES = 64 << 20
_RESERVED = 0x3F000000000001FE
_OFFSET = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62

CLASSES = ("former L1 table", "former L2 table", "former refcount block", "data of a deleted snapshot",
           "zero-filled allocation", "aborted allocation at the tail", "orphaned data", "not sampled")
RANGE_COLUMNS = ("start", "end", "clusters", "bytes", "location", "likely", "refcount", "references")


@dataclass
class LeakReport:
    """Leaked ranges and what a leak repair would do (numbers in bytes unless named *_clusters)."""

    cluster_size: int
    ranges: pd.DataFrame                 # RANGE_COLUMNS, one row per run of same-class leaked clusters
    leaked_clusters: int = 0             # qemu's leak count (refcount > references)
    unreferenced_clusters: int = 0       # of which nothing references: -r leaks frees them
    overcounted_clusters: int = 0        # still referenced: -r leaks only lowers the counter
    reclaim_bytes: int = 0
    inside_bytes: int = 0
    tail_bytes: int = 0
    file_size: int = 0
    end_after_repair: int = 0            # image end offset once leaks are repaired
    repairable: bool = True              # False when -r leaks would stop (refcount structures need a rebuild)
    notes: list[str] = field(default_factory=list)

    def numbers(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("cluster_size", "leaked_clusters", "unreferenced_clusters",
                                              "overcounted_clusters", "reclaim_bytes", "inside_bytes", "tail_bytes",
                                              "file_size", "end_after_repair", "repairable")} | {
            "by_class": self.ranges.groupby("likely", observed=True)["bytes"].sum().astype(int).to_dict()
            if len(self.ranges) else {}, "notes": list(self.notes)}


def leak_report(img: Any, check: Any = None, clusters: pd.DataFrame | None = None) -> LeakReport:
    """Analyse the leaks of ``img`` (reuses a check result and clusters frame when given)."""
    res = check if check is not None else img.check()
    cl = clusters if clusters is not None else img.clusters()
    cs = img.cluster_size or 0
    rep = LeakReport(cs, _empty_ranges(), file_size=img.src.size)
    if not cs:
        rep.notes.append(f"{img.format}: no host clusters; leak analysis needs a cluster-based format")
        return rep
    f = res.findings
    leak = f[f["problem"] == "Q2-RC-002"] if len(f) else f
    refs = cl["references"].to_numpy(np.int64)
    used = np.flatnonzero(refs > 0)
    end_refs = (int(used[-1]) + 1) * cs if len(used) else cs
    rep.repairable = not bool(getattr(res, "needs_rebuild", False))
    if not rep.repairable:
        rep.notes.append("refcount structures need a rebuild: `check -r leaks` stops; `-r all` rebuilds them")
    if not len(leak):
        rep.end_after_repair = max(end_refs, _last_counted(cl, cs))
        return rep
    idx = (leak["host_offset"].to_numpy(np.uint64) // np.uint64(cs)).astype(np.int64)
    found = pd.to_numeric(leak["found"], errors="coerce").fillna(0).to_numpy(np.int64)
    expected = pd.to_numeric(leak["expected"], errors="coerce").fillna(0).to_numpy(np.int64)
    free = expected == 0
    rep.leaked_clusters = len(idx)
    rep.unreferenced_clusters = int(free.sum())
    rep.overcounted_clusters = int((~free).sum())
    rep.reclaim_bytes = rep.unreferenced_clusters * cs
    fidx = idx[free]
    tail = fidx * cs >= end_refs
    rep.tail_bytes = int(tail.sum()) * cs
    rep.inside_bytes = rep.reclaim_bytes - rep.tail_bytes
    rep.end_after_repair = end_refs
    likely = classify(img, fidx, tail, cl)
    rep.ranges = _ranges(fidx, tail, likely, found[free], cs)
    if rep.overcounted_clusters:
        rep.notes.append(f"{rep.overcounted_clusters} cluster(s) are still referenced but over-counted: "
                         "repair lowers their refcount, no space is freed")
    return rep


def _last_counted(cl: pd.DataFrame, cs: int) -> int:
    rc = cl["refcount"].fillna(0).to_numpy(np.int64)
    used = np.flatnonzero((rc > 0) | (cl["references"].to_numpy(np.int64) > 0))
    return (int(used[-1]) + 1) * cs if len(used) else cs


def _empty_ranges() -> pd.DataFrame:
    return pd.DataFrame({"start": pd.Series([], dtype="uint64"), "end": pd.Series([], dtype="uint64"),
                         "clusters": pd.Series([], dtype="int64"), "bytes": pd.Series([], dtype="int64"),
                         "location": pd.Categorical([], categories=["inside", "tail"]),
                         "likely": pd.Categorical([], categories=list(CLASSES)),
                         "refcount": pd.Series([], dtype="int64"), "references": pd.Series([], dtype="int64")})


def _ranges(idx: np.ndarray, tail: np.ndarray, likely: np.ndarray, refcount: np.ndarray, cs: int) -> pd.DataFrame:
    """Runs of adjacent leaked clusters with the same location and class."""
    if not len(idx):
        return _empty_ranges()
    order = np.argsort(idx, kind="stable")
    idx, tail, likely, refcount = idx[order], tail[order], likely[order], refcount[order]
    brk = np.ones(len(idx), bool)
    brk[1:] = (np.diff(idx) != 1) | (tail[1:] != tail[:-1]) | (likely[1:] != likely[:-1])
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], len(idx))
    n = ends - starts
    return pd.DataFrame({
        "start": (idx[starts] * cs).astype(np.uint64), "end": ((idx[ends - 1] + 1) * cs).astype(np.uint64),
        "clusters": n.astype(np.int64), "bytes": (n * cs).astype(np.int64),
        "location": pd.Categorical(np.where(tail[starts], "tail", "inside"), categories=["inside", "tail"]),
        "likely": pd.Categorical([CLASSES[k] for k in likely[starts]], categories=list(CLASSES)),
        "refcount": np.maximum.reduceat(refcount, starts).astype(np.int64),
        "references": np.zeros(len(starts), np.int64),
    })


# ---------------------------------------------------------------------------- content classification
def classify(img: Any, idx: np.ndarray, tail: np.ndarray, cl: pd.DataFrame) -> np.ndarray:
    """Class code (index into CLASSES) of each leaked cluster ``idx`` (sorted or not)."""
    cs = img.cluster_size
    out = np.where(tail, CLASSES.index("aborted allocation at the tail"), CLASSES.index("orphaned data"))
    sample = np.arange(len(idx)) < min(MAX_SAMPLED, max(1, MAX_SAMPLED_BYTES // cs))
    out[~sample] = CLASSES.index("not sampled")
    if img.format != "qcow2" or not sample.any():
        return out
    ent = _read_entries(img, idx[sample], cs)
    table, owner, target = _table_like(ent, cs, img.src.size)
    refblock = ~table & _refblock_like(ent, getattr(img.meta, "refcount_order", 4), cs)
    zero = ~ent.any(axis=1)
    is_l2 = (cl["role"] == "l2").to_numpy()
    in_table = table[owner]
    owner, target = owner[in_table], target[in_table]
    hit = np.isin(target, idx[sample][table]) | (is_l2[np.minimum(target, len(is_l2) - 1)] & (target < len(is_l2)))
    hits = np.bincount(owner, weights=hit, minlength=len(ent))
    l1 = table & (hits * 2 > np.bincount(owner, minlength=len(ent)))
    data_targets = target[~l1[owner]]
    sub = out[sample]
    sub[zero] = CLASSES.index("zero-filled allocation")
    sub[np.isin(idx[sample], data_targets) & ~table & ~refblock] = CLASSES.index("data of a deleted snapshot")
    sub[refblock] = CLASSES.index("former refcount block")
    sub[table & ~l1] = CLASSES.index("former L2 table")
    sub[table & l1] = CLASSES.index("former L1 table")
    out[sample] = sub
    return out


def _read_entries(img: Any, idx: np.ndarray, cs: int) -> np.ndarray:
    """The clusters as rows of big-endian u64 (bounded: at most MAX_SAMPLED clusters)."""
    rows = np.zeros((len(idx), cs // 8), np.uint64)
    for k, c in enumerate(idx.tolist()):
        buf = img.src.read(int(c) * cs, cs, "leaked cluster", zero_fill=True)
        rows[k] = np.frombuffer(buf, ">u8").astype(np.uint64)
    return rows


def _table_like(ent: np.ndarray, cs: int, file_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster: does every non-zero entry look like a qcow2 L1/L2 entry?  And (row, cluster) pairs of
    the clusters the plausible standard entries name."""
    nz = ent != 0
    comp = (ent & np.uint64(_COMPRESSED)) != 0
    off = ent & np.uint64(_OFFSET)
    std_ok = ((ent & np.uint64(_RESERVED)) == 0) & (off % np.uint64(cs) == 0) & (off < np.uint64(file_size)) \
        & ((off != 0) | ((ent & np.uint64(1)) != 0))
    cb = cs.bit_length() - 1
    comp_ok = (ent & np.uint64((1 << (70 - cb)) - 1)) < np.uint64(file_size)  # compressed: offset in low 70-cb bits
    ok = np.where(comp, comp_ok, std_ok) & nz
    table = nz.any(axis=1) & (ok.sum(axis=1) == nz.sum(axis=1))
    row, col = np.nonzero(ok & ~comp & (off != 0))
    return table, row, (off[row, col] // np.uint64(cs)).astype(np.int64)


def _refblock_like(ent: np.ndarray, order: int, cs: int) -> np.ndarray:
    """Counters of width 2^order that are all small (< 256) with at least one set (order >= 3)."""
    if order < 3:
        return np.zeros(len(ent), bool)
    raw = ent.astype(">u8").view(np.uint8).reshape(len(ent), -1)
    width = 1 << (order - 3)
    vals = raw.reshape(len(ent), -1, width)
    high = vals[:, :, :-1].any(axis=2) if width > 1 else np.zeros(vals.shape[:2], bool)
    low = vals[:, :, -1]
    return ~high.any(axis=1) & (low != 0).any(axis=1) & ((low > 1).sum(axis=1) * 4 < (low != 0).sum(axis=1) + 4)
