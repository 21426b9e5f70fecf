"""Entry-level qcow2 fixes for ``repair -r all``: what to change in L1 and L2 entries.

Risk classes (imgscope.catalogue): *safe* fixes never change what a guest
reads — clearing reserved bits (Q2-L1-001, Q2-L2-001), clearing OFLAG_COPIED on
compressed entries (Q2-L2-002), turning a preallocated zero cluster that is
unaligned or past EOF into a plain zero cluster (Q2-L2-006; qemu does the
unaligned case too).  *data-loss* fixes drop a reference that cannot be
followed safely — a data cluster at an unaligned offset (Q2-L2-007), a data or
compressed cluster past EOF (Q2-REF-001), an L2 table that is unaligned
(Q2-L1-002) or past EOF — and are applied only with ``allow_data_loss``; each
affected guest range is listed per layer in ``plan.losses``.  All of these
only remove claims, so they are written in phase 1, before the refcounts change.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from ... import native
from ...repair import Plan
from . import layout as L
from .refs import l1_paths, slot_weights

_U = np.uint64
ALL_ZEROES = 0xFFFFFFFF00000000  # extended L2: every subcluster reads as zeros


#: every condition an entry fix handles is one of these findings of the read-only check (a past-EOF
#: L2 table or cluster is Q2-REF-001; a past-EOF compressed cluster with an extended-L2 bitmap Q2-L2-004)
TRIGGER_IDS = ("Q2-L1-001", "Q2-L1-002", "Q2-REF-001", "Q2-L2-001", "Q2-L2-002", "Q2-L2-004", "Q2-L2-006",
               "Q2-L2-007")


def entry_fixes(img: Any, edits: Any, plan: Plan, allow_data_loss: bool) -> None:
    """Register the entry fixes of ``-r all`` in ``edits`` (phase 1); note what needs data loss.

    When ``plan.before`` (the check of the same image) has none of :data:`TRIGGER_IDS` there is
    nothing to fix and no table is read.
    """
    before = plan.before
    if before is not None and not any(b["problem"] in TRIGGER_IDS for b in before.batches):
        return
    paths = l1_paths(img)
    weight, _ = slot_weights(img, paths)
    w = SimpleNamespace(paths=paths, slot_weight=weight)
    _l1_fixes(img, edits, plan, allow_data_loss, w)
    _l2_fixes(img, edits, plan, allow_data_loss, w)


def _vsize(img: Any, layer: int) -> int:
    m = img.meta
    if layer == 0:
        return m.virtual_size
    sn = m.snapshots[layer - 1]
    return sn.disk_size if sn.disk_size is not None else m.virtual_size


def _l1_fixes(img: Any, edits: Any, plan: Plan, allow: bool, w: Any) -> None:
    t, cs = img.tables, img.meta.cluster_size
    size = img.src.size
    span = t.l2e * cs
    for p in w.paths:
        if p.skipped or not p.size:
            continue
        e = p.entries
        resv = np.flatnonzero((e & _U(L.L1E_RESERVED_MASK)) != 0)
        l2off = e & _U(L.L1E_OFFSET_MASK)
        bad = np.flatnonzero((l2off != 0) & (((l2off % _U(cs)) != 0) | (l2off >= _U(size))))
        if not len(resv) and not len(bad):
            continue
        tb = edits.table(p.offset, p.size, f"qcow2 {p.label} L1 table")
        for i in resv.tolist():
            edits.set(tb, i, int(tb.cur[i]) & ~L.L1E_RESERVED_MASK, 1, "clear reserved bits")
        for i in bad.tolist():
            off = int(l2off[i])
            why = "L2 table not cluster aligned" if off % cs else "L2 table past end of file"
            if not allow:
                plan.notes.append(f"{p.label} L1[{i}]: {why} at {off:#x}; dropping it loses guest data "
                                  "(needs --allow-data-loss)")
                continue
            edits.set(tb, i, 0, 1, f"drop L1 entry: {why} (data loss)")
            lo = i * span
            n = max(0, min(lo + span, _vsize(img, p.layer)) - lo)
            plan.losses.append({"layer": p.label, "guest_offset": lo, "length": n, "host_offset": off, "reason": why})


def _fix_masks(m: Any, ent: Any, size: int, cs: int) -> list[np.ndarray]:
    """Per decoded entry, one mask per fix of :func:`_l2_fixes` (same order)."""
    kind, host, length, flags = ent.kind, ent.host, ent.length, ent.flags
    comp = kind == native.COMPRESSED
    std = (kind == native.NORMAL) | (kind == native.ZERO_ALLOC)
    has_data = (ent.alloc != 0) if m.extended_l2 else ((flags & native.F_ZERO) == 0)
    end = host + length
    past = (std | comp) & ~bool(m.has_data_file) & ((end - np.minimum(end, _U(size))) >= _U(cs))
    unal = std & ((flags & native.F_UNALIGNED) != 0)
    return [~comp & ((flags & native.F_RESERVED) != 0),
            comp & ((flags & native.F_COPIED) != 0),
            std & ~has_data & (unal | past),
            std & has_data & unal & ~past,
            (comp | (std & has_data)) & past]


_L2_FIXES = (("clear reserved bits", None),
             ("clear OFLAG_COPIED on a compressed cluster", None),
             ("unaligned or past-EOF preallocated zero cluster -> plain zero cluster", None),
             ("drop entry: data cluster at an unaligned offset (data loss)", "data cluster not cluster aligned"),
             ("drop entry: cluster past end of file (data loss)", "cluster past end of file"))


def _l2_fixes(img: Any, edits: Any, plan: Plan, allow: bool, w: Any) -> None:
    m, t = img.meta, img.tables
    cs, size = t.cs, img.src.size
    slot_off = t.slot_offsets.tolist()
    live = [s for s in np.flatnonzero(w.slot_weight).tolist() if slot_off[s] % cs == 0 and slot_off[s] < size]
    if not live:
        return
    live_a = np.asarray(live, np.int64)
    # the live tables streamed a chunk at a time (no whole-store decode); hits kept per fix, in entry order
    hits: list[list[np.ndarray]] = [[] for _ in _L2_FIXES]
    hosts: list[list[np.ndarray]] = [[] for _ in _L2_FIXES]
    for sl, ent in t.table_chunks(t.slot_offsets[live_a]):
        for i, mask in enumerate(_fix_masks(m, ent, size, cs)):
            k = np.flatnonzero(mask)
            if len(k):
                hits[i].append(k + sl.start * t.l2e)
                hosts[i].append(ent.host[k])
    step = 2 if m.extended_l2 else 1
    for (why, loss), ks, hs in zip(_L2_FIXES, hits, hosts):
        if not ks:
            continue
        for k, h in zip(np.concatenate(ks).tolist(), np.concatenate(hs).tolist()):
            slot, j = live[k // t.l2e], k % t.l2e
            if loss and not allow:
                plan.notes.append(f"L2 table {slot_off[slot]:#x} entry {j}: {loss} ({int(h):#x}); dropping it "
                                  "loses guest data (needs --allow-data-loss)")
                continue
            tb = edits.table(slot_off[slot], t.l2e * step, "qcow2 L2 table")
            _fix_entry(edits, tb, j * step, why, m.extended_l2)
            if loss:
                _losses(img, plan, w, slot, j, int(h), loss)


def _fix_entry(edits: Any, tb: Any, word: int, why: str, extended: bool) -> None:
    e = int(tb.cur[word])
    if why.startswith("clear reserved"):
        edits.set(tb, word, e & ~L.L2E_STD_RESERVED_MASK, 1, why)
    elif why.startswith("clear OFLAG"):
        edits.set(tb, word, e & ~L.OFLAG_COPIED, 1, why)
    elif why.startswith("unaligned or past-EOF preallocated"):
        if extended:  # as qemu's fix_l2_entry_by_zero: allocated subclusters become zero ones
            bm = int(tb.cur[word + 1])
            edits.set(tb, word + 1, (bm | (bm << 32)) & ALL_ZEROES, 1, why)
            edits.set(tb, word, 0, 1, why)
        else:
            edits.set(tb, word, L.OFLAG_ZERO, 1, why)
    else:
        edits.set(tb, word, 0, 1, why)
        if extended:
            edits.set(tb, word + 1, 0, 1, why)


def _losses(img: Any, plan: Plan, w: Any, slot: int, j: int, host: int, why: str) -> None:
    """Every (layer, guest cluster) that reads the dropped entry."""
    t, cs = img.tables, img.meta.cluster_size
    for p in w.paths:
        if p.skipped:
            continue
        for i in np.flatnonzero(p.slots == slot).tolist():
            g = (i * t.l2e + j) * cs
            if g < _vsize(img, p.layer):
                plan.losses.append({"layer": p.label, "guest_offset": g, "length": cs, "host_offset": host,
                                    "reason": why})
