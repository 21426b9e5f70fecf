"""imgscope repair -r all/leaks against qemu-img check -r on copies of the same damaged images.

For every image: the JSON (re-check + fixed counters) and exit code equal
qemu-img's; afterwards qemu-img check is clean and the guest content of the
active layer and of every snapshot is unchanged.  Where imgscope fixes more
than qemu (reserved bits, COPIED on compressed clusters), the corruptions qemu
leaves are exactly the extra ones imgscope counts as fixed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_qemu
from repair_helpers import (add_refcount, copy, create, dirty, guest, l1_entry, l2_entry, poke, qemu_check,
                            qemu_io, reftable_entry, set_incompatible, snapshot, without_name)

from imgscope.formats.qcow2 import layout as L
from imgscope.repair import run_repair

pytestmark = pytest.mark.usefixtures("qemu")


@pytest.fixture(scope="module")
def qemu() -> None:
    require_qemu()


def _plain(p: Path, opts: str = "") -> Path:
    create(p, opts=opts)
    qemu_io(p, "write -P 1 0 128k", "write -c -P 2 1M 64k", "write -P 3 2M 64k")
    return p


def _with_snapshot(p: Path) -> Path:
    _plain(p)
    snapshot(p, "s1")
    qemu_io(p, "write -P 9 2M 4k", "write -P 8 3M 64k")
    return p


def _leaky(p: Path) -> Path:
    _plain(p)
    add_refcount(p, l2_entry(p, 0)[1] & L.L2E_OFFSET_MASK, +1)
    add_refcount(p, l2_entry(p, 2 << 20)[1] & L.L2E_OFFSET_MASK, +2)
    return p


def _low_shared(p: Path) -> Path:
    _with_snapshot(p)
    add_refcount(p, l2_entry(p, 64 << 10)[1] & L.L2E_OFFSET_MASK, -1)  # shared with s1: 2 -> 1
    return p


def _zero(p: Path) -> Path:
    _plain(p)
    add_refcount(p, l2_entry(p, 2 << 20)[1] & L.L2E_OFFSET_MASK, -1)  # 1 -> 0: needs a rebuild
    return p


def _l2_reserved(p: Path) -> Path:
    _plain(p)
    where, e = l2_entry(p, 0)
    poke(p, where, e | (1 << 58) | (1 << 4))
    return p


def _l1_reserved(p: Path) -> Path:
    _plain(p)
    where, e = l1_entry(p, 0)
    poke(p, where, e | (1 << 60))
    return p


def _copied_compressed(p: Path) -> Path:
    _plain(p)
    where, e = l2_entry(p, 1 << 20)
    poke(p, where, e | L.OFLAG_COPIED)
    return p


def _prealloc_unaligned(p: Path) -> Path:
    """A zero cluster that stays allocated (write -z on data), its offset made unaligned: qemu fixes it."""
    _plain(p)
    qemu_io(p, "write -z 2M 64k")
    where, e = l2_entry(p, 2 << 20)
    assert e & L.OFLAG_ZERO and e & L.L2E_OFFSET_MASK
    EXPECTED[p] = guest(p, p.parent)  # qemu cannot read the damaged image
    poke(p, where, e + 0x200)
    return p


def _corrupt_bit(p: Path) -> Path:
    _plain(p)
    set_incompatible(p, L.INCOMPAT_CORRUPT)
    return p


def _leak_and_low(p: Path) -> Path:
    _with_snapshot(p)
    add_refcount(p, l2_entry(p, 3 << 20)[1] & L.L2E_OFFSET_MASK, +1)
    add_refcount(p, l2_entry(p, 64 << 10)[1] & L.L2E_OFFSET_MASK, -1)
    return p


def _refblock_outside(p: Path) -> Path:
    _plain(p)
    poke(p, reftable_entry(p)[0], 1 << 30)  # qemu grows the file to 1 GiB to reach it; imgscope rebuilds
    return p


def _l2_past_eof(p: Path) -> Path:
    _plain(p)
    where, e = l1_entry(p, 0)
    poke(p, where, (e & ~L.L1E_OFFSET_MASK) | (16 << 20))
    return p


def _data_past_eof(p: Path) -> Path:
    _plain(p)
    where, e = l2_entry(p, 2 << 20)
    poke(p, where, (e & ~L.L2E_OFFSET_MASK) | (16 << 20))
    return p


def _reftable_reserved(p: Path) -> Path:
    _plain(p)
    where, e = reftable_entry(p)
    poke(p, where, e | 1)
    return p


def _refblock_unaligned(p: Path) -> Path:
    _plain(p)
    where, e = reftable_entry(p)
    poke(p, where, e + 0x200)
    return p


EXPECTED: dict[Path, dict[str, str]] = {}  # guest content of images qemu cannot read once damaged

CASES = {
    "dirty": lambda p: dirty(p),
    "dirty-snapshot": lambda p: dirty(p, snap=True),
    "dirty-compressed": lambda p: dirty(p, compressed=True),
    "dirty-extended-l2": lambda p: dirty(p, "extended_l2=on", snap=True),
    "dirty-refcount1": lambda p: dirty(p, "refcount_bits=1"),
    **{f"dirty-refcount{b}": (lambda b: lambda p: dirty(p, f"refcount_bits={b}", snap=True))(b) for b in (2, 4, 8, 32,
                                                                                                           64)},
    "leaky": _leaky,
    "low-shared": _low_shared,
    "leak-and-low": _leak_and_low,
    "refcount-zero": _zero,
    "corrupt-bit": _corrupt_bit,
    "prealloc-unaligned": _prealloc_unaligned,
    "refblock-outside": _refblock_outside,
    "l2-past-eof": _l2_past_eof,
    "data-past-eof": _data_past_eof,
    "snapshot-clean": _with_snapshot,
}
#: damage qemu-img leaves in place and imgscope fixes (safe fixes beyond qemu)
BEYOND = {"l2-reserved": _l2_reserved, "l1-reserved": _l1_reserved, "copied-compressed": _copied_compressed}


def _pair(tmp_path: Path, build) -> tuple[Path, Path, dict[str, str]]:  # noqa: ANN001
    ours = build(tmp_path / "ours.qcow2")
    theirs = copy(ours, tmp_path / "theirs.qcow2")
    return ours, theirs, EXPECTED.pop(ours, None) or guest(ours, tmp_path)


def _after(path: Path, tmp_path: Path, content: dict[str, str], rc_expected: int = 0) -> None:
    rc, report = qemu_check(path)
    assert rc == rc_expected, report
    if rc == 0:
        assert guest(path, tmp_path) == content


@pytest.mark.parametrize("case", sorted(CASES))
def test_repair_all_matches_qemu(tmp_path: Path, case: str) -> None:
    ours, theirs, content = _pair(tmp_path, CASES[case])
    res = run_repair(str(ours), "all")
    rc_q, j_q = qemu_check(theirs, "all")
    assert (res.exit_code(), without_name(res.qemu_json())) == (rc_q, without_name(j_q))
    _after(ours, tmp_path, content, rc_q)
    if case.startswith("dirty"):
        assert not (L.Header.parse(ours.read_bytes()[:112]).incompatible_features & L.INCOMPAT_DIRTY)


@pytest.mark.parametrize("case", sorted(BEYOND))
def test_repair_beyond_qemu(tmp_path: Path, case: str) -> None:
    ours, theirs, content = _pair(tmp_path, BEYOND[case])
    res = run_repair(str(ours), "all")
    rc_q, j_q = qemu_check(theirs, "all")
    left = j_q.pop("corruptions")
    assert rc_q == 2 and left > 0
    j_q["corruptions-fixed"] = j_q.get("corruptions-fixed", 0) + left
    assert (res.exit_code(), without_name(res.qemu_json())) == (0, without_name(j_q))
    _after(ours, tmp_path, content)


@pytest.mark.parametrize("case", ["reftable-reserved", "refblock-unaligned"])
def test_repair_where_qemu_fails(tmp_path: Path, case: str) -> None:
    """qemu's rebuild trips over the old refcount block here and marks the image corrupt (QEMU_CHECK.md c8)."""
    build = {"reftable-reserved": _reftable_reserved, "refblock-unaligned": _refblock_unaligned}[case]
    ours, theirs, content = _pair(tmp_path, build)
    assert qemu_check(theirs, "all")[0] == 1
    res = run_repair(str(ours), "all")
    assert res.exit_code() == 0 and res.corruptions_fixed >= 1
    _after(ours, tmp_path, content)


@pytest.mark.parametrize("case", ["leaky", "low-shared", "leak-and-low", "dirty", "snapshot-clean", "corrupt-bit"])
def test_repair_leaks_matches_qemu(tmp_path: Path, case: str) -> None:
    ours, theirs, content = _pair(tmp_path, CASES[case])
    res = run_repair(str(ours), "leaks")
    rc_q, j_q = qemu_check(theirs, "leaks")
    ours_json = None if res.exit_code() == 1 else without_name(res.qemu_json())
    assert (res.exit_code(), ours_json) == (rc_q, without_name(j_q))
    assert guest(ours, tmp_path) == content


def test_leaks_then_all_on_dirty(tmp_path: Path) -> None:
    """-r leaks refuses a dirty image like qemu (rc 1, nothing written); -r all then repairs it."""
    p = dirty(tmp_path / "d.qcow2", snap=True)
    before = p.read_bytes()
    res = run_repair(str(p), "leaks")
    assert res.exit_code() == 1 and "rebuild" in res.error
    assert p.read_bytes() == before
    assert run_repair(str(p), "all").exit_code() == 0
    assert qemu_check(p)[0] == 0


def test_dry_run_writes_nothing(tmp_path: Path, backend: str) -> None:
    p = dirty(tmp_path / "d.qcow2", snap=True)
    before = p.read_bytes()
    res = run_repair(str(p), "all", dry_run=True)
    assert p.read_bytes() == before
    df = res.plan.frame()
    assert list(df.columns) == ["offset", "length", "structure", "reason", "phase"]
    assert list(df["phase"]) == sorted(df["phase"]) and 2 in set(df["phase"])
    switch = df[df["phase"] == 2]
    assert len(switch) == 1 and int(switch["offset"].iloc[0]) == 48 and int(switch["length"].iloc[0]) == 12
    theirs = copy(p, tmp_path / "t.qcow2")
    rc_q, j_q = qemu_check(theirs, "all")
    assert (res.exit_code(), without_name(res.qemu_json())) == (rc_q, without_name(j_q))  # the simulated re-check
    import imgscope
    with imgscope.open(p) as img:
        assert img.repair("all").equals(df)


def test_data_loss_needs_permission(tmp_path: Path) -> None:
    """An unaligned data cluster: qemu never fixes it; imgscope drops it only with allow_data_loss."""
    p = _plain(tmp_path / "u.qcow2")
    where, e = l2_entry(p, 2 << 20)
    poke(p, where, e + 0x200)
    theirs = copy(p, tmp_path / "t.qcow2")
    res = run_repair(str(p), "all")
    rc_q, j_q = qemu_check(theirs, "all")
    assert (res.exit_code(), without_name(res.qemu_json())) == (rc_q, without_name(j_q)) and rc_q == 2
    assert any("allow-data-loss" in n for n in res.notes)
    res = run_repair(str(p), "all", allow_data_loss=True)
    assert res.exit_code() == 0 and res.corruptions_fixed >= 1
    assert res.plan.losses == [{"layer": "active", "guest_offset": 2 << 20, "length": 64 << 10,
                                "host_offset": (e & L.L2E_OFFSET_MASK) + 0x200,
                                "reason": "data cluster not cluster aligned"}]
    assert qemu_check(p)[0] == 0


def test_dropped_l2_table_lists_guest_ranges(tmp_path: Path) -> None:
    p = _l2_past_eof(tmp_path / "l2.qcow2")
    res = run_repair(str(p), "all", allow_data_loss=True)
    assert res.exit_code() == 0 and qemu_check(p)[0] == 0
    assert [(x["layer"], x["guest_offset"], x["length"]) for x in res.plan.losses] == [("active", 0, 4 << 20)]
    assert set(res.plan.loss_frame().columns) == {"layer", "guest_offset", "length", "host_offset", "reason"}
