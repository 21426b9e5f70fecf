"""The qcow2 planner's shortcuts give the plans of the full computations they skip.

* entry fixes are skipped when the check found nothing they fix (``entries.TRIGGER_IDS``), and
  otherwise stream the live L2 tables instead of decoding the whole store;
* OFLAG_COPIED: only tables with a flag to change (``repair._copied_candidates``) are edited;
* the rebuild's allocator (first fit with a "nothing free below" hint) and its counters (grown
  geometrically) equal the naive first fit and growth by concatenation.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import require_qemu
from hypothesis import given, settings
from hypothesis import strategies as st

import imgscope
from imgscope.formats.qcow2 import entries
from imgscope.formats.qcow2 import rebuild as rb
from imgscope.formats.qcow2 import repair as qrepair
from imgscope.formats.qcow2.tables import Qcow2Tables
from imgscope.repair import plan_for


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


def _plan_digest(path: Path, mode: str, allow: bool) -> dict:
    with imgscope.open(path) as img:
        plan = plan_for(img, mode, allow)
    j = plan.json()
    for w, ww in zip(j["writes"], plan.ordered()):
        w["sha"] = hashlib.sha256(ww.data).hexdigest()
    return {"plan": j, "expected": plan.expected.qemu_json() if plan.expected else None,
            "summary": plan.expected.summary() if plan.expected else None}


def _copied_flags(p: Path, opts: str = "") -> Path:
    """COPIED missing on clusters with refcount 1 and set on clusters shared with a snapshot, in several
    L2 tables (phase-1 clears and phase-4 sets)."""
    from repair_helpers import create, l2_entry, poke, qemu_io, snapshot
    create(p, "2G", opts)
    offs = [i * (256 << 20) + (1 << 20) for i in range(8)]  # one per L2 table with 64 KiB clusters
    qemu_io(p, *[f"write -P {i + 1} {o} 128k" for i, o in enumerate(offs)])
    snapshot(p, "s1")
    qemu_io(p, *[f"write -P 9 {o} 64k" for o in offs[::2]])
    for o in (offs[2], offs[6]):  # rewritten after the snapshot: refcount 1
        where, e = l2_entry(p, o)
        poke(p, where, e & ~(1 << 63))
    for o in (offs[3] + (64 << 10), offs[5] + (64 << 10)):  # shared with the snapshot: refcount 2
        where, e = l2_entry(p, o)
        poke(p, where, e | (1 << 63))
    return p


@pytest.mark.parametrize("case", ["dirty-snapshot", "dirty-extended-l2", "data-past-eof", "l2-past-eof",
                                  "prealloc-unaligned", "l2-reserved", "l1-reserved", "copied-compressed",
                                  "copied-flags", "copied-flags-extended-l2"])
@pytest.mark.parametrize("allow", [False, True])
def test_shortcuts_give_the_full_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                      allow: bool) -> None:
    require_qemu()
    import test_repair_qemu as T
    builders = {**T.CASES, **T.BEYOND, "copied-flags": _copied_flags,
                "copied-flags-extended-l2": lambda p: _copied_flags(p, "extended_l2=on")}
    p = builders[case](tmp_path / "i.qcow2")
    fast = _plan_digest(p, "all", allow)
    with monkeypatch.context() as mp:  # one table per chunk in the streamed paths
        chunks = Qcow2Tables.table_chunks
        mp.setattr(Qcow2Tables, "table_chunks", lambda self, offsets, max_entries=1: chunks(self, offsets, 1))
        mp.setattr(qrepair, "_SCAN_ENTRIES", 1)
        assert _plan_digest(p, "all", allow) == fast
    monkeypatch.setattr(entries, "TRIGGER_IDS", _Everything())
    monkeypatch.setattr(qrepair, "_copied_candidates", lambda img, offs, refcounts: offs.tolist())
    assert _plan_digest(p, "all", allow) == fast


def _first_fit(free: np.ndarray, end: int, n: int) -> tuple[int, int]:
    """The allocator without the hint: (first cluster, new end)."""
    for i in range(len(free) - n + 1):
        if free[i:i + n].all():
            free[i:i + n] = False
            return i, end
    return end, end + n


@settings(max_examples=150, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=30))
def test_space_is_first_fit(free: list[bool], ops: list[tuple[bool, int]]) -> None:
    mask = np.array(free, bool)
    space = rb._Space(mask, len(mask) + 2)
    ref, ref_end = mask.copy(), len(mask) + 2
    taken: list[tuple[int, int]] = []
    for give, n in ops:
        if give and taken:
            first, k = taken.pop()
            space.give(first, k)
            if first + k <= len(ref):
                ref[first:first + k] = True
            elif first + k == ref_end:
                ref_end = first
            continue
        got = space.take(n)
        want, ref_end = _first_fit(ref, ref_end, n)
        assert got == want
        assert space.end == ref_end
        np.testing.assert_array_equal(space.free, ref)
        taken.append((got, n))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 20), st.lists(st.tuples(st.integers(0, 60), st.integers(1, 4)), max_size=40),
       st.sampled_from([1, 4, 16]))
def test_counts_grow_like_concatenation(n0: int, bumps: list[tuple[int, int]], per_block: int) -> None:
    c = rb._Counts(np.arange(n0, dtype=np.uint64) % np.uint64(3))
    ref = np.arange(n0, dtype=np.uint64) % np.uint64(3)
    for first, n in bumps:
        c.bump(first, n)
        if first + n > len(ref):
            ref = np.concatenate([ref, np.zeros(first + n - len(ref), np.uint64)])
        ref[first:first + n] += np.uint64(1)
        assert c.nonzero_blocks(per_block) == np.unique(np.flatnonzero(ref) // per_block).tolist()
    out = c.array()
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, ref)
