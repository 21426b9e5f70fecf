"""imgscope's own check of FVD images (qemu has no FVD driver: the result says "not supported", exit 63).

The findings follow the checker invariants of FORMATS.md §9.1 (implementation
variant): metadata regions page aligned, inside ``metadata_size`` and not
overlapping; a bitmap large enough for the base image; table entries empty or
unique chunk indices whose chunk lies inside the file; no dirty marker left in
the on-disk table; and the dirty state — ``clean_shutdown`` = 0, with the
journal records a writable open would replay.  None of them is counted by a
qemu counter.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...check import CheckResult
from . import layout as L

_U = np.uint64


def check_image(img: Any) -> CheckResult:
    res = CheckResult(img.path, "fvd", supported=False, has_cluster_stats=False, has_end_offset=False)
    res.notes.append("qemu has no FVD driver and no check for it; the findings are imgscope's own "
                     "(built from the format description, see docs/formats/fvd.md).")
    _layout(img, res)
    if img.compact:
        _table(img, res)
    _journal(img, res)
    return res


def regions(img: Any) -> list[tuple[str, int, int]]:
    """(name, offset, length) of the metadata regions the header declares."""
    h = img.h
    out = [("header", 0, L.HEADER_SIZE)]
    if img.base_in_use:
        out.append(("bitmap", h.bitmap_offset, h.bitmap_size))
    if img.compact:
        out.append(("table", h.table_offset, L.table_bytes(img.virtual_size, h.chunk_size)))
    if h.journal_size:
        out.append(("journal", h.journal_offset, h.journal_size))
    return out


def _layout(img: Any, res: CheckResult) -> None:
    h = img.h
    regs = regions(img)
    for name, off, length in regs[1:]:
        if off % L.PAGE:
            res.add("FVD-LAY-001", structure=name, host_offset=off, found=f"offset {off:#x} is not 4 KiB aligned")
        if off + length > h.metadata_size:
            res.add("FVD-LAY-001", structure=name, host_offset=off,
                    found=f"ends at {off + length:#x}, past metadata_size {h.metadata_size:#x}")
        if off + length > img.src.size:
            res.add("FVD-LAY-001", structure=name, host_offset=off,
                    found=f"ends at {off + length:#x}, past the end of the file ({img.src.size:#x})")
    for i, (a, ao, al) in enumerate(regs):
        for b, bo, bl in regs[i + 1:]:
            if ao < bo + bl and bo < ao + al:
                res.add("FVD-LAY-001", structure=a, host_offset=ao, found=f"overlaps the {b} at {bo:#x}")
    if img.base_in_use:
        need = L.bitmap_bytes(h.base_img_size, h.block_size)
        if h.bitmap_size < need:
            res.add("FVD-LAY-002", structure="bitmap", host_offset=h.bitmap_offset, found=h.bitmap_size,
                    expected=need)


def _table(img: Any, res: CheckResult) -> None:
    h = img.h
    e = img.table
    alloc, idx = img.chunk_index()
    chunks = np.flatnonzero(alloc)
    cs = _U(h.chunk_size)
    guest = chunks.astype(_U) * cs

    def names(sel: np.ndarray) -> list[str]:
        return [f"table[{c}]" for c in chunks[sel].tolist()]

    dirty = (e[chunks] & np.uint32(L.DIRTY_TABLE)) != 0
    if dirty.any():
        res.add("FVD-TBL-003", int(dirty.sum()), structure=names(dirty), found=[f"{v:#010x}" for v in
                                                                             e[chunks][dirty].tolist()],
                guest_offset=guest[dirty])
    start = img.chunk_offsets(idx[chunks])
    if not img.data_file:
        past = start + cs > _U(img.src.size)
        if past.any():
            res.add("FVD-TBL-001", int(past.sum()), structure=names(past), found=idx[chunks][past],
                    host_offset=start[past], guest_offset=guest[past])
    _, first = np.unique(idx[chunks], return_index=True)
    again = np.ones(len(chunks), bool)
    again[first] = False
    if again.any():
        res.add("FVD-TBL-002", int(again.sum()), structure=names(again), found=idx[chunks][again],
                host_offset=start[again], guest_offset=guest[again])
    if len(chunks) and not img.data_file:
        in_file = max(0, (img.src.size - img.data_offset) // h.chunk_size)  # slots past EOF cannot leak
        used = np.zeros(min(int(idx[chunks].max()) + 1, in_file), bool)
        used[idx[chunks][idx[chunks] < len(used)].astype(np.int64)] = True
        free = np.flatnonzero(~used)
        if len(free):
            res.add("FVD-TBL-004", len(free), found=free, host_offset=img.chunk_offsets(free.astype(np.uint32)))


def _journal(img: Any, res: CheckResult) -> None:
    h = img.h
    records = img.journal_records()
    for off, why in img.journal_problems:
        res.add("FVD-JNL-002", host_offset=off, structure="journal", found=why)
    if h.clean_shutdown:
        return
    res.add("FVD-HDR-001", structure="header.clean_shutdown", host_offset=L.CLEAN_SHUTDOWN_OFFSET,
            found=(f"{len(records)} journal record(s) would be replayed" if h.journal_size else
                   "there is no journal: the bitmap and table may be inconsistent"))
    if records:
        table, bits = replay(img, records, res)
        res.add("FVD-JNL-001", structure="journal", host_offset=h.journal_offset, found=len(records),
                expected=f"{table} table entries and {bits} bitmap blocks")


def replay(img: Any, records: list, res: CheckResult | None = None) -> tuple[int, int]:
    """Apply the journal to copies of the table and bitmap (as a writable open would); return how many
    table entries and bitmap blocks change.  Records writing outside the table are reported, not applied."""
    table = img.table.copy()
    bitmap = img.bitmap.copy()
    bs = img.h.block_size or 1
    for r in records:
        if r.kind == "table":
            if not len(table) or r.first + r.count > len(table):
                if res is not None:
                    res.add("FVD-JNL-002", host_offset=r.offset, structure="journal",
                            found=f"table record for chunks {r.first}..{r.first + r.count - 1} outside the table")
                continue
            ent = r.entries
            table[r.first:r.first + r.count] = np.where(ent == np.uint32(L.EMPTY_TABLE), ent,
                                                        ent & np.uint32(~L.DIRTY_TABLE & 0xFFFFFFFF))
        elif len(bitmap) and r.count:
            lo = r.first * L.SECTOR // bs
            hi = -(-(r.first + r.count) * L.SECTOR // bs)
            bitmap[max(lo, 0):max(min(hi, len(bitmap)), 0)] = True
    return int((table != img.table).sum()), int((bitmap != img.bitmap).sum())
