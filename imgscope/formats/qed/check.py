"""qemu-compatible QED check (read-only), following qemu 7.2's ``qed_check``.

qemu keeps one "used" bit per file cluster and walks the L1 table in order:
the L1 table's clusters are marked first; each non-zero L1 entry must pass
``qed_check_table_offset`` (else one corruption) and its clusters are marked
(any already marked: one corruption each and the table is skipped); then every
L2 entry other than 0 and 1 counts as allocated (and fragmented when it does
not follow the previous one in the same table), must pass
``qed_check_cluster_offset`` (else one corruption) and is marked (one
corruption if already marked).  Unmarked clusters after the header are leaks.

Two qemu details are reproduced because they change the numbers:
the file size is rounded *down* to a whole cluster, and qemu's cluster index
is ``offset / (cluster_size - 1)`` (``qed_bytes_to_clusters``), which skips
one index every ``cluster_size - 1`` clusters — on files larger than
``(cluster_size - 1) * cluster_size`` bytes qemu counts leaks that do not
exist.  imgscope reports the real leaked clusters as ``QED-LEAK-001`` rows and
qemu's extra count as ``QED-LEAK-002``, so the leaks counter still equals qemu's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...check import CheckResult
from . import layout as L

_U = np.uint64


@dataclass
class QedScan:
    """Everything ``qed_check`` finds, as arrays (shared by the check and the repair planner)."""

    bad_l1: list[int] = field(default_factory=list)                 # L1 indices with an invalid table offset
    bad_l2: list[tuple[int, int, int]] = field(default_factory=list)  # (L1 index, L2 table offset, entry index)
    dups: list[tuple[int, str, int]] = field(default_factory=list)   # (host offset, referencing structure, count)
    allocated: int = 0
    fragmented: int = 0
    qemu_leaks: int = 0
    leaked: np.ndarray = field(default_factory=lambda: np.zeros(0, _U))  # host offsets of really leaked clusters

    @property
    def duplicate_count(self) -> int:
        return sum(d[2] for d in self.dups)


class _Used:
    """qemu's used-cluster bitmap (its index function) next to a true one."""

    def __init__(self, cs: int, file_size: int) -> None:
        self.cs = cs
        self.nq = file_size // (cs - 1)          # qed_bytes_to_clusters(file_size), file_size cluster aligned
        self.qemu = np.zeros(self.nq + 64, bool)  # qemu allocates whole 32-bit words
        self.true = np.zeros(file_size // cs, bool)

    def mark_table(self, off: int, n: int) -> int:
        """qed_set_used_clusters(off, n): consecutive qemu indices; returns the clusters already marked."""
        i = off // (self.cs - 1)
        dups = int(self.qemu[i:i + n].sum())
        self.qemu[i:i + n] = True
        self.true[off // self.cs:off // self.cs + n] = True
        return dups

    def mark_data(self, offs: np.ndarray) -> np.ndarray:
        """Mark one cluster per offset, in order; returns which offsets hit an already marked index."""
        idx = (offs // _U(self.cs - 1)).astype(np.int64)
        dup = self.qemu[idx].copy()
        _, first = np.unique(idx, return_index=True)
        again = np.ones(len(idx), bool)
        again[first] = False
        dup |= again
        self.qemu[idx] = True
        self.true[(offs // _U(self.cs)).astype(np.int64)] = True
        return dup


def scan(img: Any) -> QedScan:
    t = img.tables
    h = img.h
    cs, ts = t.cs, t.ts
    out = QedScan()
    used = _Used(cs, t.file_size)
    used.mark_table(h.l1_table_offset, ts)
    l1 = t.l1
    qemu_ok = t.table_ok(l1, qemu=True)
    for i in np.flatnonzero(l1).tolist():
        off = int(l1[i])
        if not qemu_ok[i]:
            out.bad_l1.append(i)
            continue
        n = used.mark_table(off, ts)
        if n:
            out.dups.append((off, f"L1[{i}] (L2 table)", n))
            continue
        _scan_l2(t, i, off, t.store.tables[t.store.slot[i]], used, out)
    hs = h.header_size
    out.qemu_leaks = int(np.count_nonzero(~used.qemu[hs:used.nq])) if used.nq > hs else 0
    real = np.flatnonzero(~used.true)
    out.leaked = real[real >= hs].astype(_U) * _U(cs)
    return out


def _scan_l2(t: Any, i: int, off: int, ent: np.ndarray, used: _Used, out: QedScan) -> None:
    """qed_check_l2_table for the table of L1 entry ``i``."""
    alloc = np.flatnonzero(ent > L.ENTRY_ZERO)
    vals = ent[alloc]
    out.allocated += len(vals)
    if len(vals) > 1:
        out.fragmented += int(np.count_nonzero(vals[1:] != vals[:-1] + _U(t.cs)))
    ok = t.cluster_ok(vals)
    out.bad_l2.extend((i, off, int(j)) for j in alloc[~ok].tolist())
    good = vals[ok]
    dup = used.mark_data(good)
    out.dups.extend((int(v), f"L2 table at {off:#x}", 1) for v in good[dup].tolist())


def check_image(img: Any) -> CheckResult:
    t = img.tables
    h = img.h
    cs = t.cs
    res = CheckResult(img.path, "qed", has_end_offset=False)
    res.total_clusters = -(-h.image_size // cs)
    if img.dirty:
        res.add("QED-HDR-001", structure="header.features", host_offset=L.FEATURES_OFFSET)
        res.notes.append("The need-check flag is set (the image was not closed cleanly); `imgscope check -r leaks` "
                         "clears it once no corruption remains.")
    for reason in img.meta.qemu_refuses:
        res.add("QED-HDR-003", structure="header", found=reason)
    res.refuse_like_qemu(img)
    s = scan(img)
    res.allocated_clusters = s.allocated
    res.fragmented_clusters = s.fragmented
    if s.bad_l1:
        idx = np.array(s.bad_l1, np.int64)
        res.add("QED-L1-001", len(idx), structure=[f"L1[{i}]" for i in s.bad_l1],
                host_offset=_U(t.l1_offset) + idx.astype(_U) * _U(8), found=[hex(int(t.l1[i])) for i in s.bad_l1],
                guest_offset=idx.astype(_U) * _U(t.nelems * cs))
    if s.bad_l2:
        res.add("QED-L2-001", len(s.bad_l2), structure=[f"L2 table at {o:#x}" for _, o, _ in s.bad_l2],
                host_offset=[o + 8 * j for _, o, j in s.bad_l2],
                found=[hex(int(t.store.tables[t.store.slot[i]][j])) for i, _, j in s.bad_l2],
                guest_offset=[(i * t.nelems + j) * cs for i, _, j in s.bad_l2])
    if s.dups:
        res.add("QED-DUP-001", len(s.dups), host_offset=[d[0] for d in s.dups], structure=[d[1] for d in s.dups],
                count=[d[2] for d in s.dups], _counted=s.duplicate_count)
    real = len(s.leaked)
    res.add("QED-LEAK-001", real, host_offset=s.leaked, _counted=min(real, s.qemu_leaks))
    if s.qemu_leaks > real:
        res.add("QED-LEAK-002", 1, count=s.qemu_leaks - real, found=s.qemu_leaks - real,
                _counted=s.qemu_leaks - real)
    return res
