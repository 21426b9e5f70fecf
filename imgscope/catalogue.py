"""The catalogue of problems ``check`` can report, apart from the code that finds them.

Each problem has a stable id, a severity, the qemu counter it adds to (None when
qemu-img does not count it: imgscope-only findings never change the
qemu-compatible numbers), a message template and the fixes that apply with
their risk class:

* ``safe``: no guest data can change (refcounts, flags, leaked space);
* ``data-loss``: a reference is dropped, the guest range reads as zeros or from
  the backing file — needs ``--allow-data-loss``;
* ``none``: reported only; no automatic fix.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    id: str
    cls: str          # short class name used to group findings
    severity: str     # error | warning | info
    counter: str | None  # corruptions | leaks | check_errors | None (imgscope-only)
    message: str      # str.format template over the finding's fields
    fixes: tuple[tuple[str, str], ...] = ()  # (fix, risk)


_P = [
    # header / state
    Problem("Q2-HDR-001", "dirty", "warning", None,
            "dirty bit set (lazy refcounts): on-disk refcounts are stale; repair rebuilds them from the lookup tables",
            (("rebuild refcounts and clear the dirty bit", "safe"),)),
    Problem("Q2-HDR-002", "corrupt-bit", "error", None, "corrupt bit set: qemu opens the image read-only",
            (("clear the corrupt bit once no corruption remains", "safe"),)),
    Problem("Q2-HDR-003", "unknown-incompatible", "error", None,
            "unknown incompatible feature bits {found}: guest data cannot be interpreted safely"),
    Problem("Q2-HDR-004", "bitmaps-autoclear", "warning", None,
            "bitmaps extension present but autoclear bit 0 clear: every bitmap is inconsistent"),
    Problem("Q2-BM-001", "bitmap-in-use", "warning", None, "bitmap {structure} is marked in use: its contents are stale"),
    # snapshot table
    Problem("Q2-SNP-001", "snapshot-l1-unaligned", "error", "corruptions",
            "snapshot {structure}: L1 table offset {found} is not cluster aligned; snapshot skipped"),
    Problem("Q2-SNP-002", "snapshot-l1-too-large", "error", "corruptions",
            "snapshot {structure}: L1 table of {found} entries is too large; snapshot skipped"),
    Problem("Q2-SNP-003", "snapshot-incomplete", "error", "corruptions",
            "snapshot {structure}: version 3 entry has only {found} bytes of extra data (needs 16)"),
    Problem("Q2-SNP-004", "snapshot-duplicate-id", "error", None, "snapshot id {found} appears more than once"),
    Problem("Q2-SNP-005", "snapshots-with-data-file", "error", "corruptions",
            "{found} snapshots in an image with an external data file"),
    # references
    Problem("Q2-REF-001", "reference-past-eof", "error", "corruptions",
            "{structure} references {found} bytes at {host_offset:#x}, a cluster or more past end of file",
            (("drop the reference", "data-loss"),)),
    Problem("Q2-REF-002", "refcount-overflow", "error", "corruptions",
            "cluster at {host_offset:#x} needs {expected} references, more than the refcount width holds",
            (("widen refcounts (qemu-img amend -o refcount_bits=…)", "none"),)),
    Problem("Q2-L1-001", "l1-reserved-bits", "error", "corruptions", "{structure} entry {found} has reserved bits set",
            (("clear the reserved bits", "safe"),)),
    Problem("Q2-L1-002", "l2-unaligned", "error", "corruptions",
            "{structure}: L2 table offset {found} is not cluster aligned", (("drop the L2 table", "data-loss"),)),
    Problem("Q2-L2-001", "l2-reserved-bits", "error", "corruptions", "{structure}: entry {found} has reserved bits set",
            (("clear the reserved bits", "safe"),)),
    Problem("Q2-L2-002", "copied-on-compressed", "error", "corruptions",
            "{structure}: compressed cluster at {host_offset:#x} has OFLAG_COPIED set", (("clear the flag", "safe"),)),
    Problem("Q2-L2-003", "compressed-with-data-file", "error", "corruptions",
            "{structure}: compressed cluster in an image with an external data file"),
    Problem("Q2-L2-004", "compressed-with-bitmap", "error", "corruptions",
            "{structure}: compressed cluster with a non-zero subcluster bitmap"),
    Problem("Q2-L2-005", "subcluster-alloc-and-zero", "error", "corruptions",
            "{structure}: subclusters both allocated and zero at {host_offset:#x}"),
    Problem("Q2-L2-006", "prealloc-unaligned", "error", "corruptions",
            "{structure}: preallocated zero cluster at unaligned offset {host_offset:#x}",
            (("turn the entry into a plain zero cluster", "safe"),)),
    Problem("Q2-L2-007", "data-unaligned", "error", "corruptions",
            "{structure}: data cluster at unaligned offset {host_offset:#x}", (("drop the entry", "data-loss"),)),
    Problem("Q2-L2-008", "unallocated-with-bitmap", "error", "corruptions",
            "{structure}: unallocated cluster has subcluster allocation bits"),
    # refcount structures
    Problem("Q2-RT-001", "reftable-reserved-bits", "error", "corruptions",
            "refcount table entry {found} has reserved bits set", (("rebuild refcount structures", "safe"),)),
    Problem("Q2-RT-002", "refblock-unaligned", "error", "corruptions",
            "refcount block {found} is not cluster aligned", (("rebuild refcount structures", "safe"),)),
    Problem("Q2-RT-003", "refblock-outside-image", "error", "corruptions",
            "refcount block {found} at {host_offset:#x} is outside the image", (("rebuild refcount structures", "safe"),)),
    Problem("Q2-RT-004", "refblock-refcount", "error", "corruptions",
            "refcount block {found} at {host_offset:#x} has {expected} references (shares its cluster)",
            (("rebuild refcount structures", "safe"),)),
    Problem("Q2-RC-001", "refcount-too-low", "error", "corruptions",
            "cluster at {host_offset:#x}: refcount {found} < {expected} references",
            (("raise the refcount", "safe"),)),
    Problem("Q2-RC-002", "leaked", "warning", "leaks",
            "cluster at {host_offset:#x}: refcount {found} > {expected} references (leaked)",
            (("lower the refcount / free the cluster", "safe"),)),
    Problem("Q2-RC-003", "refcount-zero", "error", "corruptions",
            "cluster at {host_offset:#x} is referenced {expected} times but its refcount is 0",
            (("rebuild refcount structures", "safe"),)),
    Problem("Q2-RC-004", "refcount-unreadable", "error", "check_errors",
            "refcount of cluster at {host_offset:#x} cannot be read (refcount block unaligned)"),
    Problem("Q2-CP-001", "copied-l1", "error", "corruptions",
            "{structure}: OFLAG_COPIED is {found} but the L2 table's refcount is {expected}",
            (("rewrite the flag", "safe"),)),
    Problem("Q2-CP-002", "copied-l2", "error", "corruptions",
            "{structure}: OFLAG_COPIED is {found} but the data cluster's refcount is {expected}",
            (("rewrite the flag", "safe"),)),
    Problem("Q2-OVL-001", "metadata-overlap", "error", None,
            "cluster at {host_offset:#x} has incompatible roles {found}"),
]

CATALOGUE: dict[str, Problem] = {p.id: p for p in _P}


def problem(pid: str) -> Problem:
    return CATALOGUE[pid]
