"""The qcow2 repair planner: ``qemu-img check -r leaks|all`` semantics, planned as writes.

Order of decisions (each step sees the image as the previous steps leave it,
simulated with :func:`imgscope.repair.simulate` — nothing is written here):

1. entry fixes (``-r all``): qemu's unaligned-preallocated-zero → plain zero, and
   beyond qemu the *safe* ones (reserved bits in L1/L2 entries, OFLAG_COPIED on
   compressed entries); with ``allow_data_loss`` also the fixes that drop a
   reference (unaligned data cluster, entry or L2 table past EOF, unaligned L2
   table), listing every guest range that loses its data, per layer;
2. refcounts: where qemu would rebuild (a refcount of 0 for a used cluster, a
   broken refcount table or block) ``-r all`` builds a fresh structure
   (:mod:`.rebuild`) and switches the header to it in one sector write; otherwise
   wrong counters are corrected in place, like qemu (``rebuild=True`` forces the
   fresh structure).  ``-r leaks`` only lowers too-high counters, and fails like
   qemu ("need to rebuild") when a rebuild would be needed;
3. OFLAG_COPIED on the active L1/L2 entries, against the *new* refcounts (clears
   in phase 1, sets in phase 4, once the refcounts saying 1 are durable);
4. the dirty and corrupt bits are cleared last, when nothing remains.

The plan is then verified by checking the simulated result; the fixed counters
are counted the way qemu's repair pass counts them (QEMU_CHECK.md b.1).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import native
from ...arrays import unique
from ...check import CheckResult
from ...errors import RepairError
from ...repair import Plan, simulate
from . import layout as L
from . import rebuild as rb
from .check import check_image, ondisk_array
from .entries import entry_fixes
from .tables import CHUNK_ENTRIES, _runs

_U = np.uint64
REFCOUNT_IDS = ("Q2-RC-001", "Q2-RC-002", "Q2-RC-003", "Q2-RC-004", "Q2-RT-001", "Q2-RT-002", "Q2-RT-003",
                "Q2-RT-004")
REFTABLE_IDS = ("Q2-RT-001", "Q2-RT-002", "Q2-RT-003", "Q2-RT-004")
COMPARE_IDS = ("Q2-RC-001", "Q2-RC-003")
COPIED_IDS = ("Q2-CP-001", "Q2-CP-002")
#: problems that make any refcount repair unsafe: the check skipped a snapshot, so a
#: repair would free clusters the snapshot still uses
BLOCKING_IDS = ("Q2-SNP-001", "Q2-SNP-002")
HEADER_INCOMPAT_OFFSET = 72


def counted(res: CheckResult, *pids: str) -> int:
    """What ``pids`` add to qemu's counters in ``res``."""
    return sum(int(b.get("_counted", b["n"])) for b in res.batches if b["problem"] in pids)


def _calc(res: CheckResult) -> int:
    """Corruptions counted before qemu's compare_refcounts (calculate_refcounts + snapshot table)."""
    return res.corruptions - counted(res, *COMPARE_IDS, *COPIED_IDS)


# ---------------------------------------------------------------------------- table edits

@dataclass
class _Table:
    offset: int
    structure: str
    orig: np.ndarray                     # raw u64 words as on disk
    changes: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)  # phase -> (word, value, why)
    cur: np.ndarray | None = None


class Edits:
    """Entry changes to L1/L2 tables, by phase; turned into one write per table and phase."""

    def __init__(self, img: Any) -> None:
        self.img = img
        self.tables: dict[int, _Table] = {}

    def table(self, offset: int, words: int, structure: str) -> _Table:
        tb = self.tables.get(offset)
        if tb is None:
            raw = self.img.src.read(offset, words * 8, structure, zero_fill=True)
            orig = native.be64(raw, words, structure, offset)
            tb = self.tables[offset] = _Table(offset, structure, orig, cur=orig.copy())
        return tb

    def set(self, tb: _Table, word: int, value: int, phase: int, why: str) -> None:
        if int(tb.cur[word]) != value:
            tb.cur[word] = _U(value)
            tb.changes.setdefault(phase, []).append((word, value, why))

    def patches(self) -> list[tuple[int, bytes]]:
        """Every changed table in its final state (for simulating the result)."""
        return [(tb.offset, tb.cur.astype(">u8").tobytes()) for tb in self.tables.values() if tb.changes]

    def add_to(self, plan: Plan) -> None:
        for tb in self.tables.values():
            state = tb.orig.copy()
            for phase in sorted(tb.changes):
                ch = tb.changes[phase]
                for word, value, _ in ch:
                    state[word] = _U(value)
                lo, hi = min(w for w, _, _ in ch), max(w for w, _, _ in ch)
                why = Counter(r for _, _, r in ch)
                reason = "; ".join(f"{r} ({n} entr{'y' if n == 1 else 'ies'})" for r, n in why.items())
                plan.add(tb.offset + lo * 8, state[lo:hi + 1].astype(">u8").tobytes(), tb.structure, reason, phase)


# ---------------------------------------------------------------------------- planner

def plan_repair(img: Any, mode: str, allow_data_loss: bool = False, rebuild: bool = False) -> Plan:
    """Plan ``qemu-img check -r MODE`` (plus imgscope's safe fixes under ``all``) for ``img``.

    ``rebuild`` replaces the refcount structure (atomic header switch) even where
    qemu would correct counters in place.
    """
    m = img.meta
    if m.incompatible & ~L.INCOMPAT_KNOWN:
        raise RepairError(f"{img.path}: unknown incompatible feature bits {m.incompatible & ~L.INCOMPAT_KNOWN:#x}; "
                          "imgscope cannot know what a write would break")
    before = check_image(img)
    plan = Plan(img.path, "qcow2", mode, allow_data_loss, before=before)
    if counted(before, *BLOCKING_IDS):
        raise RepairError(f"{img.path}: a snapshot's L1 table is unusable (see `imgscope check`); a refcount repair "
                          "would free clusters the snapshot still uses, so nothing is repaired")
    edits = Edits(img)
    if mode == "all":
        entry_fixes(img, edits, plan, allow_data_loss)
    patches = edits.patches()
    mid_img = simulate(img, patches) if patches else img
    mid = check_image(mid_img) if patches else before
    refcounts, ref_writes, fixed = _refcounts(img, mid, plan, mode, rebuild)
    if plan.error:
        return plan
    copied = 0
    if mode == "all" or (not mid.check_errors and _calc(mid) + counted(mid, *COMPARE_IDS) == 0):
        copied = _copied(img, edits, refcounts)
    edits.add_to(plan)
    plan.writes.extend(ref_writes)
    _finish(img, plan, before, mid, copied, fixed)
    return plan


def _refcounts(img: Any, mid: CheckResult, plan: Plan, mode: str,
               rebuild: bool) -> tuple[np.ndarray, list, bool]:
    """Plan the refcount fix: (refcounts after the repair, their writes, whether refcounts are fixed)."""
    ondisk, computed = ondisk_array(img, mid), mid.computed
    if not (counted(mid, *REFCOUNT_IDS) or mid.needs_rebuild):
        return ondisk.astype(_U), [], False
    if mode == "leaks":
        if mid.needs_rebuild:
            plan.error = "need to rebuild refcount structures (use -r all)"
            return ondisk, [], False
        if not counted(mid, "Q2-RC-002"):
            return ondisk.astype(_U), [], False
        new, writes = _in_place(img, mid, leaks_only=True)
        return new, writes, True
    if not (rebuild or mid.needs_rebuild or counted(mid, *REFTABLE_IDS)):
        new, writes = _in_place(img, mid, leaks_only=False)
        return new, writes, True
    if counted(mid, "Q2-REF-002"):
        raise RepairError(f"{img.path}: refcounts overflow their width; widen them first "
                          "(qemu-img amend -o refcount_bits=...)")
    built, counts = rb.rebuild(img, computed, ondisk)
    plan.replaced = rb.old_structure(img, len(computed))[0].tolist()
    writes = [_w(off, data, structure, reason, 1) for off, data, structure, reason in built]
    rt_off, rt_clusters = built[-1][0], len(built[-1][1]) // img.meta.cluster_size
    writes.append(_w(rb.SWITCH_OFFSET, rb.switch(rt_off, rt_clusters), "qcow2 header.refcount_table_offset/clusters",
                     f"switch to the new refcount table at {rt_off:#x}", 2))
    return counts, writes, True


def _w(off: int, data: bytes, structure: str, reason: str, phase: int) -> Any:
    from ...repair import Write
    return Write(int(off), bytes(data), structure, reason, phase)


def _in_place(img: Any, mid: CheckResult, leaks_only: bool) -> tuple[np.ndarray, list]:
    """Set wrong counters in the existing refcount blocks (phase 3), as qemu does when no rebuild is needed.

    Counters are cluster-aligned and at most 8 bytes, so each lies in one sector:
    after a crash every counter is either its old or its new value, i.e. the
    image has a subset of the problems it had.
    """
    t, m = img.tables, img.meta
    cs, order = t.cs, m.refcount_order
    per_block = cs * 8 >> order
    new = ondisk_array(img, mid).astype(_U)
    want = mid.computed.astype(_U)
    wrong = np.flatnonzero(new > want if leaks_only else new != want)
    new[wrong] = want[wrong]
    rt = t.reftable()
    store = []
    for bi in unique(wrong // per_block).tolist():
        off = int(rt[bi]) & L.REFT_OFFSET_MASK
        old = img.src.read(off, cs, f"qcow2 refcount block {bi}")
        vals = native.refblock_decode(old, order, per_block, f"qcow2 refcount block {bi}", off)
        lo = bi * per_block
        part = new[lo:lo + per_block]
        vals[:len(part)] = part
        data = native.refblock_encode(vals, order, cs)
        diff = np.flatnonzero(np.frombuffer(data, np.uint8) != np.frombuffer(old, np.uint8))
        a, b = int(diff[0]), int(diff[-1]) + 1
        n = int(((wrong >= lo) & (wrong < lo + per_block)).sum())
        store.append(_w(off + a, data[a:b], f"qcow2 refcount block {bi}", f"correct {n} refcount(s)", 3))
    return new, store


def _copied(img: Any, edits: Edits, refcounts: np.ndarray) -> int:
    """OFLAG_COPIED of the active L1 and its L2 tables against ``refcounts``; returns the fixes (qemu's count)."""
    m, t = img.meta, img.tables
    cb, cs = t.cb, t.cs
    h = m.header
    fixes = 0

    def rc(cluster: np.ndarray) -> np.ndarray:
        out = np.zeros(len(cluster), np.int64)
        ok = cluster < len(refcounts)
        out[ok] = refcounts[cluster[ok]].astype(np.int64)
        return out

    l1 = edits.table(h.l1_table_offset, h.l1_size, "qcow2 active L1 table")
    l2off = l1.cur & _U(L.L1E_OFFSET_MASK)
    has = np.flatnonzero(l2off != 0)  # as qemu: also tables that are unaligned or past EOF (clearing is safe)
    want = rc((l2off[has] >> _U(cb)).astype(np.int64)) == 1
    for i, w in zip(has.tolist(), want.tolist()):
        e = int(l1.cur[i])
        if bool(e >> 63) != w:
            edits.set(l1, i, e | L.OFLAG_COPIED if w else e & ~L.OFLAG_COPIED, 4 if w else 1,
                      "set OFLAG_COPIED" if w else "clear OFLAG_COPIED")
            fixes += 1
    step = 2 if m.extended_l2 else 1
    tables = l2off[has]
    offs = unique(tables[(tables % _U(cs) == 0) & (tables < _U(img.src.size))])
    # only tables already edited or with a COPIED flag to change go through the per-table edit below
    # (a table read, decoded and left unchanged adds nothing to the plan)
    fresh = np.array([o not in edits.tables for o in offs.tolist()], bool)
    visit = set(_copied_candidates(img, offs[fresh], refcounts))
    for off in offs.tolist():
        if off not in edits.tables and off not in visit:
            continue
        tb = edits.table(off, t.l2e * step, "qcow2 L2 table")
        raw = tb.cur.astype(">u8").tobytes()
        dec = native.l2_decode(raw, t.l2e, cb, m.extended_l2, m.has_data_file, "qcow2 L2 table", off)
        std = np.flatnonzero((dec.kind == native.NORMAL) | (dec.kind == native.ZERO_ALLOC))
        refs = np.ones(len(std), np.int64) if m.has_data_file else rc((dec.host[std] >> _U(cb)).astype(np.int64))
        have = (dec.flags[std] & native.F_COPIED) != 0
        for j, w in zip(std[have != (refs == 1)].tolist(), (refs == 1)[have != (refs == 1)].tolist()):
            e = int(tb.cur[j * step])
            edits.set(tb, j * step, e | L.OFLAG_COPIED if w else e & ~L.OFLAG_COPIED, 4 if w else 1,
                      "set OFLAG_COPIED" if w else "clear OFLAG_COPIED")
            fixes += 1
    return fixes


#: L2 entries handed to one native.l2_scan call by _copied_candidates (as check.py's fused scan)
_SCAN_ENTRIES = CHUNK_ENTRIES * 32


def _copied_candidates(img: Any, offs: np.ndarray, refcounts: np.ndarray) -> list[int]:
    """The L2 tables at ``offs`` (as on disk) that may hold a standard entry whose OFLAG_COPIED disagrees
    with ``refcounts`` (refcount 1 <=> COPIED): a superset, found by the check's fused kernel run as
    for active tables with ``refcounts`` as the on-disk ones (dirty 2: a COPIED mismatch; dirty 1: an
    entry needing a check finding, also kept).  Its reference counts go to a scratch array, unused."""
    m, t = img.meta, img.tables
    if not len(offs):
        return []
    src = img.src
    mm = src.mapping() if hasattr(src, "mapping") else None
    lb = t.l2_bytes
    ondisk = np.ascontiguousarray(refcounts, dtype=_U)
    scratch = np.zeros(len(ondisk) + 2, np.uint8)
    out: list[int] = []
    per = max(1, _SCAN_ENTRIES // t.l2e)
    for a in range(0, len(offs), per):
        part = offs[a:a + per]
        if mm is not None:
            buf, toff = mm, part
        else:
            buf = bytearray(len(part) * lb)
            view = memoryview(buf)
            for first, count, start in _runs(part, lb):
                src.readinto(view[first * lb:(first + count) * lb], start)
            toff = np.arange(len(part), dtype=_U) * _U(lb)
        n = len(part)
        _, dirty = native.l2_scan(buf, toff, np.zeros(n, np.uint32), np.ones(n, np.uint32), t.l2e, t.cb,
                                  m.extended_l2, m.has_data_file, src.size, scratch, 255, ondisk, None)
        out.extend(part[dirty != 0].tolist())
        if mm is not None:
            src.release(int(part.min()), int(part.max()) + lb - int(part.min()))
    return out


def _finish(img: Any, plan: Plan, before: CheckResult, mid: CheckResult, copied: int,
            refcount_fixed: bool) -> None:
    """Verify the simulated result, add the header flag clears, set qemu's fixed counters."""
    m = img.meta
    flags = m.incompatible & (L.INCOMPAT_DIRTY | L.INCOMPAT_CORRUPT)
    header = None
    final = None
    if m.version >= 3 and flags:
        # the dirty and corrupt bits only add findings that count neither as corruptions nor as check
        # errors (Q2-HDR-001/002), so the image with them cleared decides whether to clear them: one
        # simulated check instead of two when they are cleared
        new = m.incompatible & ~flags
        header = (HEADER_INCOMPAT_OFFSET, int(new).to_bytes(8, "big"))
        cleared = check_image(simulate(img, plan.patches() + [header]))
        if not cleared.corruptions and not cleared.check_errors:
            final = cleared
        else:
            header = None
    if final is None:
        final = check_image(simulate(img, plan.patches()))
    if refcount_fixed and plan.mode == "all" and (counted(final, *REFCOUNT_IDS) or final.needs_rebuild):
        raise RepairError(f"{img.path}: planner error: the rebuilt refcounts do not verify; nothing was written")
    if header is not None:
        names = [n for b, n in ((L.INCOMPAT_DIRTY, "dirty"), (L.INCOMPAT_CORRUPT, "corrupt")) if flags & b]
        plan.add(header[0], header[1], "qcow2 header.incompatible_features", f"clear the {' and '.join(names)} bit", 5)
    plan.expected = final
    if plan.mode == "all":
        plan.corruptions_fixed = max(0, _calc(before) - _calc(final)) + copied + \
            (counted(mid, *COMPARE_IDS) if refcount_fixed else 0)
        plan.leaks_fixed = counted(mid, "Q2-RC-002") if refcount_fixed else 0
        if refcount_fixed:  # qemu grows the file to reach a refblock outside it, counts that as a fix, and
            plan.corruptions_fixed += counted(mid, "Q2-RT-003")  # then the block's zero refcount as another
    else:
        plan.leaks_fixed = counted(before, "Q2-RC-002") if refcount_fixed else 0
        plan.corruptions_fixed = copied
    left = {p for p in final.summary() if p not in ("Q2-HDR-001",)}
    for pid in sorted(left):
        plan.notes.append(f"not repaired: {pid} ({final.summary()[pid]} finding(s)); see `imgscope check --findings`")
