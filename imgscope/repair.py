"""Format-neutral repair: a plan of writes, and a crash-safe applier with an undo log.

A format's planner (see :data:`PLANNERS`) computes the complete new state as an
ordered list of :class:`Write` s, each tagged with a *phase*; nothing is written
while planning.  :func:`apply_plan` then, holding qemu's writer locks
(:mod:`imgscope.lock`):

1. saves the original bytes of every range it will write (and the file length)
   into an undo log (:mod:`imgscope.undo`) and makes it durable (fdatasync, then its directory);
2. applies the writes phase by phase, with an fdatasync after each phase
   (1 new structures in free space and claim-removing entry fixes, 2 the
   single-sector header switch, 3 releases, 4 flags that need the new
   refcounts, 5 the header feature-bit clears);
3. on any error restores the file from the undo log (the corrupt bit is never set).

See docs/repair.md for the safety model.
"""
from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .check import CheckResult
from .errors import ImageInUse, RepairError
from .io import Source

PHASES = {1: "prepare", 2: "switch", 3: "release", 4: "flags", 5: "header"}
#: format -> "module:function(img, mode, allow_data_loss) -> Plan"
PLANNERS = {"qcow2": "imgscope.formats.qcow2.repair:plan_repair", "qed": "imgscope.formats.qed.repair:plan_repair"}
KILL_ENV = "IMGSCOPE_REPAIR_KILL_AFTER"
SECTOR = 512


@dataclass
class Write:
    offset: int
    data: bytes
    structure: str
    reason: str
    phase: int


@dataclass
class Plan:
    """Everything a repair would write, in order, and what it fixes (qemu's counters)."""

    path: str
    format: str
    mode: str
    allow_data_loss: bool = False
    writes: list[Write] = field(default_factory=list)
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    losses: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None          # the repair cannot run (e.g. -r leaks on an image needing a rebuild)
    before: CheckResult | None = None  # read-only check of the image as it is
    expected: CheckResult | None = None  # check of the image as the plan leaves it (simulated)
    replaced: list[int] = field(default_factory=list)  # clusters of the old refcount structure a rebuild frees

    def add(self, offset: int, data: bytes, structure: str, reason: str, phase: int) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown repair phase {phase}")
        self.writes.append(Write(int(offset), bytes(data), structure, reason, phase))

    def ordered(self) -> list[Write]:
        return sorted(self.writes, key=lambda w: w.phase)  # stable: planner order within a phase

    def patches(self, upto: int = 99) -> list[tuple[int, bytes]]:
        return [(w.offset, w.data) for w in self.ordered() if w.phase <= upto]

    def frame(self) -> Any:
        """One row per write: offset, length, structure, reason, phase (the ``--dry-run`` table)."""
        import pandas as pd
        rows = [{"offset": w.offset, "length": len(w.data), "structure": w.structure, "reason": w.reason,
                 "phase": w.phase} for w in self.ordered()]
        df = pd.DataFrame(rows, columns=["offset", "length", "structure", "reason", "phase"])
        return df.astype({"offset": "uint64", "length": "uint64", "phase": "uint8",
                          "structure": "string", "reason": "string"})

    def loss_frame(self) -> Any:
        """Guest ranges a data-loss fix makes read as zeros or from the backing file.

        Columns: layer, guest_offset, length, host_offset, reason.
        """
        import pandas as pd
        return pd.DataFrame(self.losses, columns=["layer", "guest_offset", "length", "host_offset", "reason"])

    def json(self) -> dict[str, Any]:
        return {"filename": self.path, "format": self.format, "mode": self.mode,
                "corruptions-fixed": self.corruptions_fixed, "leaks-fixed": self.leaks_fixed,
                "writes": [{"offset": w.offset, "length": len(w.data), "structure": w.structure, "reason": w.reason,
                            "phase": w.phase} for w in self.ordered()],
                "data-loss": self.losses, "notes": self.notes, **({"error": self.error} if self.error else {})}


# ---------------------------------------------------------------------------- simulation

class PatchedSource(Source):
    """A read-only view of ``base`` with ``patches`` (offset, bytes) applied: the image as a plan leaves it.

    Planners run the format's own check on it to compute and verify the new state
    before anything is written.  Closing it leaves ``base`` open.
    """

    def __init__(self, base: Source, patches: list[tuple[int, bytes]]) -> None:  # noqa: D107 - no super(): no file
        self.base = base
        self.path = base.path
        self.fd = base.fd
        self.writable = False
        self.patches = [(int(o), bytes(d)) for o, d in patches if d]
        self.size = max([base.size] + [o + len(d) for o, d in self.patches])
        self.allocated = base.allocated

    def close(self) -> None:
        pass

    def _apply(self, buf: bytearray | memoryview, offset: int) -> None:
        end = offset + len(buf)
        for o, d in self.patches:
            lo, hi = max(o, offset), min(o + len(d), end)
            if lo < hi:
                buf[lo - offset:hi - offset] = d[lo - o:hi - o]

    def read(self, offset: int, length: int, structure: str, *, zero_fill: bool = False) -> bytes:
        if offset >= 0 and length >= 0 and offset + length > self.size and not zero_fill:
            return super().read(offset, length, structure)  # raises the usual FormatError
        buf = bytearray(self.base.read(offset, length, structure, zero_fill=True))
        self._apply(buf, offset)
        return bytes(buf)

    def readinto(self, buf: memoryview, offset: int) -> None:
        self.base.readinto(buf, offset)
        self._apply(buf, offset)

    def data_ranges(self) -> list[tuple[int, int]]:
        return sorted(self.base.data_ranges() + [(o, o + len(d)) for o, d in self.patches])


def simulate(img: Any, patches: list[tuple[int, bytes]]) -> Any:
    """The image object ``img`` would be after ``patches`` (same driver, nothing written)."""
    return type(img)(PatchedSource(img.src, patches))


# ---------------------------------------------------------------------------- applying

def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError("short write")
        view, offset = view[n:], offset + n


def default_undo_path(path: str) -> str:
    d, base = os.path.split(os.path.abspath(path))
    fd, name = tempfile.mkstemp(prefix=f".{base}.", suffix=".imgscope-undo", dir=d)
    os.close(fd)
    return name


def apply_plan(src: Source, plan: Plan, undo_file: str | None = None) -> str | None:
    """Apply ``plan`` to the writable ``src`` crash-safely; returns the undo log kept (None when removed).

    The caller holds the image locks.  Phase-2 writes must each fit in one sector.
    """
    from . import undo
    if not src.writable:
        raise RepairError(f"{src.path}: not opened for writing")
    writes = plan.ordered()
    for w in writes:
        if w.phase == 2 and w.offset // SECTOR != (w.offset + len(w.data) - 1) // SECTOR:
            raise RepairError(f"planner error: header switch at {w.offset:#x} spans two sectors")
    st = os.fstat(src.fd)
    size = st.st_size
    records = undo.build_records(lambda o, n: src.read(o, n, "original bytes for the undo log"), size,
                                 [(w.offset, w.data) for w in writes])
    keep = undo_file is not None
    log_path = undo_file or default_undo_path(src.path)
    undo.write_log(log_path, src.path, st, size, records)
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    try:
        for i, w in enumerate(writes):
            if i and w.phase != writes[i - 1].phase:
                os.fdatasync(src.fd)  # data and size durable (as qemu's flushes); timestamps may lag
            _pwrite_all(src.fd, w.data, w.offset)
            if kill_after and i + 1 == kill_after:
                os._exit(137)  # test hook: a crash right after this write
        os.fdatasync(src.fd)
    except BaseException as exc:
        log = undo.UndoLog(src.path, size, st.st_dev, st.st_ino, records, True)
        try:
            undo.restore(src.fd, log, force=True)
        except BaseException as exc2:
            raise RepairError(f"{src.path}: repair failed ({exc}) and restoring failed too ({exc2}); "
                              f"restore with `imgscope undo {log_path}`") from exc
        if not keep:
            os.unlink(log_path)
        raise RepairError(f"{src.path}: repair failed ({exc}); the image was restored unchanged") from exc
    if not keep:
        os.unlink(log_path)
        undo.fsync_dir(log_path)
        return None
    return log_path


# ---------------------------------------------------------------------------- entry points

#: formats whose automatic repair on a read-write open (qemu: a dirty qcow2, a QED with need-check)
#: also drops invalid references -- QED's fsck zeroes bad L1/L2 entries, qcow2's never drops data
OPEN_REPAIR_DROPS_DATA = frozenset({"qed"})


def replay_open_repair(img: Any) -> Plan | None:
    """What qemu's automatic repair would write when it opens ``img`` read-write (None: it would not).

    qemu repairs on open only when the image says it was not closed cleanly; the
    repair is its ``check -r all``.  Nothing is written: the plan is simulated.
    """
    if not img.dirty:
        return None
    return plan_for(img, "all", allow_data_loss=img.format in OPEN_REPAIR_DROPS_DATA)


def planner(fmt: str) -> Any:
    spec = PLANNERS.get(fmt)
    if spec is None:
        return None
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def plan_for(img: Any, mode: str, allow_data_loss: bool = False, rebuild: bool = False) -> Plan | None:
    """The repair plan for an opened image (None when its format has no repair).

    ``rebuild`` asks for fresh refcount structures even where qemu would fix counters in place.
    """
    if mode not in ("leaks", "all"):
        raise ValueError(f"repair mode must be 'leaks' or 'all', not {mode!r}")
    fn = planner(img.format)
    return None if fn is None else fn(img, mode, allow_data_loss, **({"rebuild": True} if rebuild else {}))


def _ensure_free(path: str) -> None:
    from .lock import probe
    who = probe(path)
    if who:
        raise ImageInUse(f"{path}: image is in use by {who}; stop the VM or process using it before repairing")


def _unsupported(path: str, fmt: str) -> CheckResult:
    res = CheckResult(path, fmt, supported=False)
    res.notes.append(f"imgscope cannot repair {fmt} images")
    return res


def _failed(plan: Plan) -> CheckResult:
    res = plan.before or CheckResult(plan.path, plan.format)
    res.check_errors += 1
    res.error = plan.error
    res.notes.append(f"ERROR {plan.error}")
    return res


def run_repair(path: str, mode: str, fmt: str | None = None, allow_data_loss: bool = False,
               undo_file: str | None = None, dry_run: bool = False, rebuild: bool = False) -> CheckResult:
    """Repair an image like ``qemu-img check -r MODE`` and return the re-check (with the fixed counters).

    With ``dry_run`` nothing is opened for writing: the result is the *simulated*
    re-check and ``result.plan`` holds the writes.  Raises :class:`ImageInUse`
    when another process holds the image's locks, :class:`RepairError` when a
    repair cannot be planned or applied (the image is then unchanged).
    """
    import imgscope
    from .lock import exclusive_for_repair
    path = os.fspath(path)
    _ensure_free(path)
    if dry_run:
        with imgscope.open(path, fmt) as img:
            plan = plan_for(img, mode, allow_data_loss, rebuild)
            if plan is None:
                return _unsupported(path, img.format)
        res = _failed(plan) if plan.error else _result(plan.expected or plan.before, plan)
        res.plan = plan  # type: ignore[attr-defined]
        return res
    with Source(path, writable=True) as wsrc, exclusive_for_repair(wsrc.fd, path):
        with imgscope.open(path, fmt) as img:
            plan = plan_for(img, mode, allow_data_loss, rebuild)
            if plan is None:
                return _unsupported(path, img.format)
        if plan.error:
            res = _failed(plan)
        else:
            kept = apply_plan(wsrc, plan, undo_file) if plan.writes else None
            with imgscope.open(path, fmt) as img:
                res = _result(img.check(), plan)
            if kept:
                res.notes.append(f"undo log: {kept} (`imgscope undo {kept}` restores the image)")
    res.plan = plan  # type: ignore[attr-defined]
    return res


def _result(res: CheckResult, plan: Plan) -> CheckResult:
    res.corruptions_fixed = plan.corruptions_fixed
    res.leaks_fixed = plan.leaks_fixed
    res.repaired = True
    res.notes.extend(plan.notes)
    return res
