"""The QED repair planner: ``qemu-img check -r leaks|all`` semantics, planned as writes.

qemu's ``qed_check`` with a fix flag (any ``-r``) zeroes every invalid L1
and L2 entry, counts them as fixed, and — when no corruption and no error is
left — clears the need-check flag.  Leaked clusters are never reclaimed
(QED has no free-space map; ``qemu-img convert`` is the way to drop them) and
stay counted, so a leaky image still exits 3 after ``-r leaks``.

imgscope plans the same, with one difference for safety: zeroing an invalid
entry drops whatever guest data the entry was meant to map, so it is planned
only for ``-r all`` *with* ``allow_data_loss`` (every guest range that then
reads from the backing file or as zeros is listed in ``plan.losses``).
Without it the invalid entries stay, they stay corruptions, and the
need-check flag is kept — exactly what qemu would do had it not fixed them.
Duplicated clusters cannot be fixed without choosing an owner; they block the
flag too.
"""
from __future__ import annotations

from typing import Any

from ...repair import Plan, simulate
from . import layout as L
from .check import check_image, scan

ZERO_ENTRY = L.TableEntry.build(0)


def plan_repair(img: Any, mode: str, allow_data_loss: bool = False) -> Plan:
    """The writes that repair ``img`` (nothing is written here; see imgscope.repair.apply_plan)."""
    plan = Plan(img.path, "qed", mode, allow_data_loss)
    plan.before = check_image(img)
    if img.meta.qemu_refuses:  # qemu-img check -r cannot open it either
        plan.error = f"qemu refuses to open this image: {'; '.join(img.meta.qemu_refuses)}"
        return plan
    s = scan(img)
    if s.bad_l1 or s.bad_l2:
        if mode == "all" and allow_data_loss:
            _zero_invalid_entries(img, s, plan)
        else:
            plan.notes.append(f"{len(s.bad_l1) + len(s.bad_l2)} invalid table entries left as they are: zeroing "
                              "them (what qemu's -r does) loses their guest data; use -r all --allow-data-loss")
    after = check_image(simulate(img, plan.patches())) if plan.writes else plan.before
    if img.dirty and after.corruptions == 0 and after.check_errors == 0:
        features = img.h.features & ~L.F_NEED_CHECK
        plan.add(L.FEATURES_OFFSET, L.header_field("features").build(features), "header.features",
                 "clear the need-check flag: the check found no corruption", 5)
    elif img.dirty:
        plan.notes.append("the need-check flag stays set: corruptions remain")
    if after.leaks:
        plan.notes.append(f"{after.leaks} leaked clusters stay (QED has no free-space map; qemu-img convert or "
                          "imgscope's clusters() shows where they are)")
    plan.expected = check_image(simulate(img, plan.patches())) if plan.writes else plan.before
    return plan


def _zero_invalid_entries(img: Any, s: Any, plan: Plan) -> None:
    t = img.tables
    cs, span = t.cs, t.nelems * t.cs
    vsize = img.virtual_size
    for i in s.bad_l1:
        plan.add(t.l1_offset + 8 * i, ZERO_ENTRY, f"L1[{i}]", f"invalid L2 table offset {int(t.l1[i]):#x}", 1)
        if i * span < vsize:
            plan.losses.append({"layer": "active", "guest_offset": i * span, "length": min(span, vsize - i * span),
                                "host_offset": int(t.l1[i]), "reason": "invalid L2 table offset"})
    for i, off, j in s.bad_l2:
        value = int(t.store.tables[t.store.slot[i]][j])
        plan.add(off + 8 * j, ZERO_ENTRY, f"L2 table at {off:#x}[{j}]", f"invalid cluster offset {value:#x}", 1)
        guest = (i * t.nelems + j) * cs
        if guest < vsize:
            plan.losses.append({"layer": "active", "guest_offset": guest, "length": cs, "host_offset": value,
                                "reason": "invalid data cluster offset"})
    plan.corruptions_fixed = len(s.bad_l1) + len(s.bad_l2)
