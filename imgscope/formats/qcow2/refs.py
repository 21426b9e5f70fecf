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
    store = t.store
    parts: list[tuple] = [ranges(0, cs, "header")]
    for p in paths:
        if p.skipped:
            continue
        parts.append(ranges(p.offset, p.size * 8, "l1", p.layer))
        parts.append(ranges((p.entries & _U(L.L1E_OFFSET_MASK))[p.slots > 0], cs, "l2", p.layer))
    # data references: each distinct table once, weighted
    live = np.flatnonzero(weight)
    if len(live):
        idx = (live[:, None] * t.l2e + np.arange(t.l2e)[None, :]).reshape(-1)
        kind = store.kind[idx]
        sel = (kind == native.NORMAL) | (kind == native.ZERO_ALLOC)
        if m.has_data_file:
            sel &= False
        csel = kind == native.COMPRESSED
        if m.has_data_file:
            csel &= False
        if m.extended_l2:
            csel &= (store.alloc[idx] | store.zero[idx]) == 0
        slot_of = np.repeat(live, t.l2e)
        for mask, role in ((sel, "data"), (csel, "compressed")):
            s = slot_of[mask]
            parts.append(ranges(store.host[idx][mask], store.length[idx][mask], role, owner[s], weight[s]))
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
    return Walk(paths, weight, owner, RefRows.join(parts))


# imgscope/formats/fvd (being written concurrently) still imports the old private names;
# drop these two once it uses imgscope.refrows.
_rows, _one = RefRows.join, ranges


def shared_by(img: Any, ncl: int) -> np.ndarray:
    """Number of layers (active + snapshots) whose guest view reaches each host cluster.

    Exact unless one layer reaches the same cluster through two different L2 tables.
    """
    t = img.tables
    w = img.walk()
    store = t.store
    out = np.zeros(ncl, np.uint32)
    layers_per_slot = np.zeros(len(w.slot_weight), np.int64)
    for p in w.paths:
        if not p.skipped:
            layers_per_slot[np.unique(p.slots[p.slots > 0])] += 1
    live = np.flatnonzero(layers_per_slot)
    if not len(live):
        return out
    idx = (live[:, None] * t.l2e + np.arange(t.l2e)[None, :]).reshape(-1)
    k = store.kind[idx]
    sel = (k == native.NORMAL) | (k == native.ZERO_ALLOC) | (k == native.COMPRESSED)
    cl = (store.host[idx][sel] >> _U(t.cb)).astype(np.int64)
    slot = np.repeat(live, t.l2e)[sel]
    ok = cl < ncl
    # one count per (cluster, table) pair: several compressed streams in a cluster are one use
    pair = np.unique(cl[ok] * len(layers_per_slot) + slot[ok])
    pc, ps = pair // len(layers_per_slot), pair % len(layers_per_slot)
    out += np.bincount(pc, weights=layers_per_slot[ps], minlength=ncl).astype(np.uint32)
    return out
