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
    # VMDK (imgscope/formats/vmdk/check.py; qemu stops at the first grain past EOF)
    Problem("VMDK-GRN-001", "grain-past-eof", "error", "corruptions",
            "{structure}: grain of guest offset {guest_offset} at {host_offset:#x} starts at or after the end of its "
            "extent file ({found} bytes)", (("drop the grain table entry", "data-loss"),)),
    Problem("VMDK-GRN-002", "grain-overlap", "error", None,
            "{structure}: grain at {host_offset:#x} overlaps {found}"),
    Problem("VMDK-GRN-003", "grain-in-overhead", "error", None,
            "{structure}: grain at {host_offset:#x} lies inside the metadata area (before grain offset {expected})"),
    Problem("VMDK-GRN-004", "zeroed-gte-without-flag", "warning", None,
            "{structure}: grain table entry 1 (zeroed grain) at guest offset {guest_offset} but the zeroed-grain "
            "flag is clear: it reads sector 1 of the file"),
    Problem("VMDK-GT-001", "gt-rgt-mismatch", "error", None,
            "{structure}: grain table entry for guest offset {guest_offset} is {found} but the redundant copy says "
            "{expected}"),
    Problem("VMDK-GT-002", "grain-table-past-eof", "error", None,
            "{structure}: grain table at {host_offset:#x} lies past the end of the file (reads as unallocated)"),
    Problem("VMDK-HDR-001", "unclean-shutdown", "warning", None,
            "{structure}: uncleanShutdown is set: a writer did not close the extent"),
    Problem("VMDK-HDR-002", "newline-bytes", "error", None,
            "{structure}: newline-detection bytes are {found} instead of {expected} (text-mode transfer?)"),
    Problem("VMDK-CID-001", "parent-cid-mismatch", "error", None,
            "parentCID {found} differs from the parent's CID {expected}: the parent changed after this delta was made"),
    Problem("VMDK-MRK-001", "stream-marker", "error", None,
            "{structure}: grain marker at {host_offset:#x} is invalid: {found}"),
    # VHD (no qemu check; imgscope-only findings)
    Problem("VHD-FTR-001", "footer-checksum", "error", None,
            "{structure} checksum is {found}, computed {expected}"),
    Problem("VHD-FTR-002", "footer-copies-differ", "warning", None,
            "the footer copy at offset 0 differs from the trailing footer ({found})"),
    Problem("VHD-FTR-003", "footer-missing", "error", None,
            "no valid trailing footer at {host_offset:#x} ({found})"),
    Problem("VHD-DYN-001", "dynamic-header-checksum", "error", None,
            "dynamic disk header checksum is {found}, computed {expected}"),
    Problem("VHD-BAT-001", "block-past-eof", "error", None,
            "BAT entry {structure}: block at {host_offset:#x} ends at {found}, past the data area ({expected})",
            (("drop the BAT entry", "data-loss"),)),
    Problem("VHD-BAT-002", "block-overlap", "error", None,
            "BAT entry {structure}: block at {host_offset:#x} overlaps {found}"),
    Problem("VHD-SIZ-001", "size-mismatch", "info", None,
            "footer current_size {found} differs from the CHS geometry size {expected}"),
    # VHDX (imgscope/formats/vhdx/check.py)
    Problem("VHDX-HDR-001", "header-invalid", "error", None,
            "{structure} at {host_offset:#x} is invalid ({found}); the other header is used"),
    Problem("VHDX-RGN-001", "region-table-invalid", "error", None,
            "{structure} at {host_offset:#x} is invalid ({found})"),
    Problem("VHDX-RGN-002", "region-tables-differ", "warning", None, "the two region tables differ"),
    Problem("VHDX-RGN-003", "region-overlap", "error", None,
            "{structure} {found} overlaps region {expected}"),
    Problem("VHDX-BAT-001", "bat-start-past-eof", "error", "corruptions",
            "BAT entry {structure}: payload block at {host_offset:#x} starts after the end of file ({found})",
            (("drop the BAT entry", "data-loss"),)),
    Problem("VHDX-BAT-002", "bat-end-past-eof", "error", "corruptions",
            "BAT entry {structure}: payload block at {host_offset:#x} ends after the end of file ({found})"),
    Problem("VHDX-BAT-003", "bat-overlaps-region", "error", "corruptions",
            "BAT entry {structure}: payload block at {host_offset:#x} overlaps region {found}"),
    Problem("VHDX-BAT-004", "bat-offset-overflow", "error", "corruptions",
            "BAT entry {structure}: file offset {host_offset:#x} overflows"),
    Problem("VHDX-BAT-005", "bat-block-shared", "error", None,
            "BAT entry {structure}: payload block at {host_offset:#x} is also used by entry {found}"),
    Problem("VHDX-LOG-001", "log-pending", "warning", None,
            "the log holds {found} entries that must be replayed (log GUID {structure}); imgscope replayed them in "
            "memory, qemu refuses a read-only open"),
    # QED (imgscope/formats/qed/check.py; qemu's qed_check)
    Problem("QED-HDR-001", "need-check", "warning", None,
            "need-check flag set: the image was not closed cleanly and must be checked before use",
            (("clear the flag once no corruption remains (-r leaks|all)", "safe"),)),
    Problem("QED-HDR-003", "qemu-cannot-open", "warning", None,
            "qemu refuses to open this image: {found}"),
    Problem("QED-L1-001", "l1-invalid-offset", "error", "corruptions",
            "{structure}: L2 table offset {found} is unaligned, inside the header or runs past the end of file",
            (("zero the L1 entry (its guest range then reads from the backing file or as zeros)", "data-loss"),)),
    Problem("QED-L2-001", "l2-invalid-offset", "error", "corruptions",
            "{structure}: data cluster offset {found} of guest offset {guest_offset} is unaligned, inside the header "
            "or past the end of file",
            (("zero the L2 entry (the cluster then reads from the backing file or as zeros)", "data-loss"),)),
    Problem("QED-DUP-001", "cluster-referenced-twice", "error", "corruptions",
            "cluster at {host_offset:#x} is referenced again by {structure} ({count} cluster(s))"),
    Problem("QED-LEAK-001", "leaked", "warning", "leaks",
            "cluster at {host_offset:#x} is referenced by no table (leaked; QED has no free-space map, "
            "so qemu only counts it)"),
    Problem("QED-LEAK-002", "qemu-leak-artifact", "info", "leaks",
            "qemu-img counts {found} leaked cluster(s) that do not exist: its cluster index divides by "
            "cluster_size - 1"),
    # VDI (imgscope/formats/vdi/check.py; qemu's vdi_co_check)
    Problem("VDI-MAP-001", "block-index-too-large", "error", "corruptions",
            "{structure}: block index {found} is not below blocks_in_image {expected}"),
    Problem("VDI-MAP-002", "block-index-shared", "error", "corruptions",
            "{structure}: block index {found} is also used by another guest block"),
    Problem("VDI-MAP-003", "block-past-eof", "error", None,
            "{structure}: block index {found} places guest data at {host_offset:#x}, past the end of the file"),
    Problem("VDI-HDR-001", "allocated-count-mismatch", "error", "corruptions",
            "header.blocks_allocated is {found} but the block map allocates {expected} blocks"),
    Problem("VDI-HDR-002", "qemu-cannot-open", "warning", None, "qemu refuses to open this image: {found}"),
    Problem("VDI-HDR-003", "block-extra-ignored", "warning", None,
            "header.block_extra is {found}: qemu (and imgscope) read each block from the start of its slot; "
            "VirtualBox's placement would put {found} bytes in front of every block's data"),
    Problem("VDI-LEAK-001", "unused-block", "warning", None,
            "block slot {found} at {host_offset:#x} is inside the file but used by no guest block"),
    # qcow version 1 (imgscope/formats/qcow/check.py; qemu has no check for qcow)
    Problem("QCOW1-L1-001", "l2-past-eof", "error", None,
            "{structure}: L2 table at {host_offset:#x} lies past the end of the file (reads as unallocated)"),
    Problem("QCOW1-L2-001", "data-unaligned", "error", None,
            "{structure}: data cluster of guest offset {guest_offset} at {host_offset:#x} is not cluster aligned"),
    Problem("QCOW1-REF-001", "reference-past-eof", "error", None,
            "{structure}: {found} bytes of guest offset {guest_offset} at {host_offset:#x} lie past the end of file"),
    Problem("QCOW1-DUP-001", "cluster-referenced-twice", "error", None,
            "cluster at {host_offset:#x} is referenced {found} times ({structure})"),
    Problem("QCOW1-OVL-001", "metadata-overlap", "error", None,
            "cluster at {host_offset:#x} holds {found}"),
    Problem("QCOW1-LEAK-001", "leaked", "warning", None,
            "cluster at {host_offset:#x} is referenced by no table (leaked)"),
    # FVD (imgscope/formats/fvd/check.py; qemu has no FVD driver)
    Problem("FVD-HDR-001", "dirty", "warning", None,
            "clean_shutdown is 0: the image was not closed cleanly ({found})"),
    Problem("FVD-JNL-001", "journal-pending", "warning", None,
            "the journal holds {found} record(s) a writable open replays, changing {expected}"),
    Problem("FVD-JNL-002", "journal-record-invalid", "error", None,
            "journal record at {host_offset:#x}: {found}"),
    Problem("FVD-LAY-001", "region-invalid", "error", None, "the {structure} at {host_offset:#x} {found}"),
    Problem("FVD-LAY-002", "bitmap-too-small", "error", None,
            "the bitmap has {found} bytes, the base image needs {expected}"),
    Problem("FVD-TBL-001", "chunk-past-eof", "error", None,
            "{structure}: chunk {found} at {host_offset:#x} ends past the end of the file"),
    Problem("FVD-TBL-002", "chunk-shared", "error", None,
            "{structure}: chunk {found} at {host_offset:#x} is also used by another virtual chunk"),
    Problem("FVD-TBL-003", "table-dirty-bit", "warning", None,
            "{structure} is {found}: the in-memory dirty bit was written to disk (masked when reading)"),
    Problem("FVD-TBL-004", "chunk-unused", "warning", None,
            "chunk {found} at {host_offset:#x}, below the highest allocated chunk, is used by no table entry"),
]

CATALOGUE: dict[str, Problem] = {p.id: p for p in _P}


def problem(pid: str) -> Problem:
    return CATALOGUE[pid]


@dataclass(frozen=True)
class QemuText:
    """What ``qemu-img check`` prints on stderr for one finding of a problem.

    ``template`` is formatted with the finding's fields plus the batch fields ``index`` (a cluster,
    table or L1 index) and ``entry`` (a raw table entry) the check recorded for it. ``repaired_in``:
    the ``-r`` mode under which qemu fixes the finding in place and says ``Repairing`` instead of the
    template's first word.  ``qemu_pass``: the part of qemu's check that prints it; ``calculate`` walks
    the tables in the order the findings are recorded, the others print consecutive findings sorted by
    (index, problem), as qemu walks clusters and L1 entries.
    """
    template: str
    repaired_in: str | None = None
    qemu_pass: str = "calculate"
    stops: bool = False  # qemu ends its check at the first such finding


#: problem id -> qemu's message (block/qcow2-refcount.c, block/qcow2-snapshot.c, block/vmdk.c); problems without
#: an entry are ones qemu prints nothing for, and show in imgscope's own block of the human output
QEMU_TEXT: dict[str, QemuText] = {
    "Q2-SNP-001": QemuText("ERROR snapshot {structure} l1_offset={found}: L1 table is not cluster aligned; "
                           "snapshot table entry corrupted"),
    "Q2-SNP-002": QemuText("ERROR snapshot {structure} l1_size={found:#x}: L1 table is too large; "
                           "snapshot table entry corrupted"),
    "Q2-SNP-003": QemuText("ERROR snapshot table entry {index} is incomplete", "all"),
    "Q2-SNP-005": QemuText("ERROR {found} snapshots in image with data file"),
    "Q2-REF-001": QemuText("ERROR: counting reference for region exceeding the end of the file by one cluster or "
                           "more: offset {host_offset:#x} size {found:#x}"),
    "Q2-L1-001": QemuText("ERROR found L1 entry with reserved bits set: {found}"),
    "Q2-L1-002": QemuText("ERROR l2_offset={host_offset:x}: Table is not cluster aligned; L1 entry corrupted"),
    "Q2-L2-001": QemuText("ERROR found l2 entry with reserved bits set: {entry:x}"),
    "Q2-L2-002": QemuText("ERROR: coffset={host_offset:#x}: copied flag must never be set for compressed clusters"),
    "Q2-L2-003": QemuText("ERROR compressed cluster {index} with data file, entry={entry:#x}"),
    "Q2-L2-004": QemuText("ERROR compressed cluster {index} with non-zero subcluster allocation bitmap, "
                          "entry={entry:#x}"),
    "Q2-L2-005": QemuText("ERROR offset={host_offset:x}: Allocated cluster has corrupted subcluster allocation "
                          "bitmap"),
    "Q2-L2-006": QemuText("ERROR offset={host_offset:x}: Preallocated cluster is not properly aligned; L2 entry "
                          "corrupted.", repaired_in="all"),
    "Q2-L2-007": QemuText("ERROR offset={host_offset:x}: Data cluster is not properly aligned; L2 entry corrupted."),
    "Q2-L2-008": QemuText("ERROR: Unallocated cluster has non-zero subcluster allocation map"),
    "Q2-RT-001": QemuText("ERROR refcount table entry {found} has reserved bits set"),
    "Q2-RT-002": QemuText("ERROR refcount block {found} is not cluster aligned; refcount table entry corrupted"),
    "Q2-RT-003": QemuText("ERROR refcount block {found} is outside image"),
    "Q2-RT-004": QemuText("ERROR refcount block {found} refcount={expected}"),
    "Q2-RC-001": QemuText("ERROR cluster {index} refcount={found} reference={expected}", "all", "refcounts"),
    "Q2-RC-002": QemuText("Leaked cluster {index} refcount={found} reference={expected}", "leaks", "refcounts"),
    "Q2-RC-003": QemuText("ERROR cluster {index} refcount={found} reference={expected}", qemu_pass="refcounts"),
    "Q2-RC-004": QemuText("Can't get refcount for cluster {index}: Input/output error", qemu_pass="refcounts"),
    "Q2-CP-001": QemuText("ERROR OFLAG_COPIED L2 cluster: l1_index={index} l1_entry={entry:x} refcount={expected}",
                          "all", "oflag-copied"),
    "VMDK-GRN-001": QemuText("ERROR: cluster offset for sector {index} points after EOF", stops=True),
    "Q2-CP-002": QemuText("ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={expected}", "all",
                          "oflag-copied"),
}
