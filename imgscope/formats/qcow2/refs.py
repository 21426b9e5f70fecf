"""Every reference a qcow2 file makes to its own host clusters (FORMATS.md §2.13).

One walk serves ``clusters()`` and ``check()``: rows of (byte range, role,
owner, weight).  Rows for data and L2 entries are produced once per distinct
L2 table and weighted by the number of L1 entries (over all layers) that point
at it, which is exactly how qemu's checker counts shared tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import native
from ...arrays import unique
from ...refrows import GLOBAL, SHARED, RefRows, ranges
from . import layout as L

_U = np.uint64
MAX_SNAPSHOT_L1_ENTRIES = (32 << 20) // 8  # qemu QCOW_MAX_L1_SIZE / 8


@dataclass
class L1Path:
    """One L1 table of the image: the active one or a snapshot's."""

    label: str
    layer: int            # 0 = active, k = snapshot index + 1
    offset: int
    size: int
    entries: np.ndarray   # raw u64 entries
    slots: np.ndarray     # store slot per entry (0 = no L2)
    skipped: str | None = None  # why qemu's checker would skip this table


@dataclass
class Walk:
    paths: list[L1Path]
    slot_weight: np.ndarray   # L1 entries pointing at each store slot (all counted layers)
    slot_owner: np.ndarray    # layer owning the slot, SHARED when several
    rows: RefRows
    problems: list[tuple[str, int, str]] = field(default_factory=list)
    alloc: slice = field(default_factory=lambda: slice(0, 0))  # rows of data and compressed clusters
    alloc_slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # their table slot
    alloc_bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # chunk starts in alloc


def l1_paths(img: Any) -> list[L1Path]:
    m, t = img.meta, img.tables
    h = m.header
    paths = [L1Path("active", 0, h.l1_table_offset, h.l1_size,
                    t.read_l1(h.l1_table_offset, h.l1_size, "qcow2 active L1 table"), np.zeros(0, np.int64))]
    for i, sn in enumerate(m.snapshots):
        p = L1Path(f"snapshot:{sn.id}", i + 1, sn.l1_table_offset, sn.l1_size, np.zeros(0, _U), np.zeros(0, np.int64))
        if sn.l1_table_offset % m.cluster_size:
            p.skipped = "L1 table is not cluster aligned"
        elif sn.l1_size > MAX_SNAPSHOT_L1_ENTRIES:
            p.skipped = "L1 table is too large"
        else:
            p.entries = t.read_l1(sn.l1_table_offset, sn.l1_size, f"qcow2 snapshot {sn.id} L1 table")
        paths.append(p)
    for p, slots in zip(paths, t.slots_many([p.entries & _U(L.L1E_OFFSET_MASK) for p in paths])):
        p.slots = slots
    return paths


def slot_weights(img: Any, paths: list[L1Path]) -> tuple[np.ndarray, np.ndarray]:
    """(L1 entries of counted layers pointing at each slot, owning layer or SHARED) — reads no L2 table."""
    nslots = len(img.tables.slot_offsets)
    weight = np.zeros(nslots, np.int64)
    owner = np.full(nslots, GLOBAL, np.int64)
    for p in paths:
        if p.skipped:
            continue
        used = p.slots[p.slots > 0]
        weight += np.bincount(used, minlength=nslots)
        first = owner[used] == GLOBAL
        owner[used[first]] = p.layer
        owner[used[~first & (owner[used] != p.layer)]] = SHARED
    return weight, owner


def walk(img: Any) -> Walk:
    m, t = img.meta, img.tables
    cs = m.cluster_size
    h = m.header
    paths = l1_paths(img)
    weight, owner = slot_weights(img, paths)
    parts: list[tuple] = [ranges(0, cs, "header")]
    for p in paths:
        if p.skipped:
            continue
        parts.append(ranges(p.offset, p.size * 8, "l1", p.layer))
        parts.append(ranges((p.entries & _U(L.L1E_OFFSET_MASK))[p.slots > 0], cs, "l2", p.layer))
    # data references: each distinct table once, weighted
    first_alloc = sum(len(part[0]) for part in parts)
    data, alloc_slot, bounds = _data_rows(img, np.flatnonzero(weight), owner, weight)
    parts += data
    alloc = slice(first_alloc, first_alloc + len(alloc_slot))
    if m.snapshots:
        parts.append(ranges(h.snapshots_offset, m.snapshots_size, "snapshot_table"))
    parts.append(ranges(h.refcount_table_offset, h.refcount_table_clusters * cs, "refcount_table"))
    if m.fde is not None and h.crypt_method == 2:
        parts.append(ranges(m.fde.offset, m.fde.length, "crypto"))
    if m.bitmaps_ext is not None:
        parts.append(ranges(m.bitmaps_ext.bitmap_directory_offset, m.bitmaps_ext.bitmap_directory_size,
                            "bitmap_directory"))
        for bm in m.bitmaps:
            parts.append(ranges(bm.table_offset, bm.table_size * 8, "bitmap_table"))
            if bm.table_size and bm.table_offset + bm.table_size * 8 <= img.src.size:
                ent = t.read_l1(bm.table_offset, bm.table_size, f"qcow2 bitmap {bm.name!r} table")
                offs = ent & _U(0x00FFFFFFFFFFFE00)
                parts.append(ranges(offs[offs != 0], cs, "bitmap_data"))
    rt = t.reftable() & _U(L.REFT_OFFSET_MASK)
    parts.append(ranges(rt[rt != 0], cs, "refcount_block"))
    return Walk(paths, weight, owner, RefRows.join(parts), alloc=alloc, alloc_slot=alloc_slot, alloc_bounds=bounds)


def _data_rows(img: Any, live: np.ndarray, owner: np.ndarray, weight: np.ndarray
               ) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Rows of the data and compressed clusters the tables in slots ``live`` reference, one per entry.

    Tables are decoded a chunk at a time (no decoded store of every table is kept).  Returns the
    row parts, the slot of each row and the row positions where each chunk of slots starts: a
    (cluster, slot) pair never spans two chunks.
    """
    m, t = img.meta, img.tables
    parts: list[tuple] = []
    slots: list[np.ndarray] = []
    if m.has_data_file or not len(live):  # data clusters live in the external data file
        return parts, np.zeros(0, np.int32), np.zeros(1, np.int64)
    starts = [0]
    for sl, ent in t.table_chunks(t.slot_offsets[live], 1 << 20):  # large pieces: freed back to the OS
        k = ent.kind
        slot_of = np.repeat(live[sl], t.l2e)
        csel = k == native.COMPRESSED
        if m.extended_l2:
            csel &= (ent.alloc | ent.zero) == 0
        for sel, role in (((k == native.NORMAL) | (k == native.ZERO_ALLOC), "data"), (csel, "compressed")):
            pos = np.flatnonzero(sel)
            s = slot_of[pos]
            parts.append(ranges(ent.host[pos], ent.length[pos], role, owner[s], weight[s]))
            slots.append(s.astype(np.int32))
        starts.append(starts[-1] + sum(len(a) for a in slots[-2:]))
    return parts, np.concatenate(slots), np.asarray(starts, np.int64)


def shared_by(img: Any, ncl: int) -> np.ndarray:
    """Number of layers (active + snapshots) whose guest view reaches each host cluster.

    Exact unless one layer reaches the same cluster through two different L2 tables.
    """
    w = img.walk()
    nslots = len(w.slot_weight)
    out = np.zeros(ncl, np.uint32)
    layers_per_slot = np.zeros(nslots, np.int64)
    for p in w.paths:
        if not p.skipped:
            layers_per_slot[unique(p.slots[p.slots > 0])] += 1
    host = w.rows.off[w.alloc]
    cb = img.tables.cb
    b = w.alloc_bounds
    step = max(1, len(b) * (1 << 20) // max(1, int(b[-1])))  # about a million rows at a time
    for i in range(0, len(b) - 1, step):
        lo, hi = int(b[i]), int(b[min(i + step, len(b) - 1)])
        cl = (host[lo:hi] >> _U(cb)).astype(np.int64)
        slot = w.alloc_slot[lo:hi].astype(np.int64)
        ok = cl < ncl
        # one count per (cluster, table) pair: several compressed streams in a cluster are one use
        pair = unique(cl[ok] * nslots + slot[ok])
        pc, ps = pair // nslots, pair % nslots
        np.add.at(out, pc, layers_per_slot[ps].astype(np.uint32))
    return out
