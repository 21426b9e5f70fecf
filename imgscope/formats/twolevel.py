"""Two-level lookup tables (L1 -> L2 -> cluster entry), shared by QED and qcow v1.

Neither format has refcounts or internal snapshots: one L1 table lists the
offsets of L2 tables and each L2 entry maps one guest cluster.  This module
reads every distinct L2 table once (the total bounded by
``max_metadata_bytes``; bytes past the end of the file read as zeros, as qemu
reads them) and gathers the raw entry of every guest cluster.  The formats
classify the raw entries themselves (QED: 0/1/offset, qcow v1: 0/compressed/offset).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..arrays import unique
from ..io import Source
from ..limits import enforce

#: decode(buffer, count, structure, offset) -> uint64 entries in host order
Decoder = Callable[[bytes, int, str, int], np.ndarray]


def le64(buf: bytes, n: int, structure: str = "table", offset: int | None = None) -> np.ndarray:
    """``n`` little-endian u64 entries (QED tables); the buffer length is checked by numpy."""
    from ..errors import FormatError
    if n * 8 > len(buf):
        raise FormatError(structure, offset, "buffer shorter than the entries it should hold")
    return np.frombuffer(buf, dtype="<u8", count=n).astype(np.uint64)


@dataclass
class L2Store:
    """Every loaded L2 table, once, and which one each L1 entry uses."""

    offsets: np.ndarray  # uint64, host offset of each loaded table (distinct, ascending)
    tables: np.ndarray   # uint64 [len(offsets), nelems], raw entries
    slot: np.ndarray     # int64 per L1 entry: row of ``tables``, -1 = no table


def load_l2(src: Source, l2_offsets: np.ndarray, load: np.ndarray, nelems: int, table_bytes: int,
            decode: Decoder, structure: str) -> L2Store:
    """Read the L2 tables at ``l2_offsets[load]`` (each distinct offset once)."""
    l2_offsets = np.asarray(l2_offsets, np.uint64)
    want = unique(l2_offsets[load])
    enforce("max_metadata_bytes", len(want) * table_bytes, structure, int(want[0]) if len(want) else None)
    tables = np.zeros((len(want), nelems), np.uint64)
    for i, off in enumerate(want.tolist()):
        where = f"{structure} at {off:#x}"
        tables[i] = decode(src.read(off, table_bytes, where, zero_fill=True), nelems, where, off)
    slot = np.full(len(l2_offsets), -1, np.int64)
    slot[load] = np.searchsorted(want, l2_offsets[load])
    return L2Store(want, tables, slot)


def guest_entries(store: L2Store, nelems: int, nclusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw L2 entry, L1 index) of every guest cluster; the entry is 0 where no table is loaded."""
    gc = np.arange(nclusters, dtype=np.int64)
    l1i = gc // nelems
    nl1 = len(store.slot)
    slot = np.where(l1i < nl1, store.slot[np.minimum(l1i, max(nl1 - 1, 0))], -1) if nl1 else np.full(nclusters, -1)
    raw = np.zeros(nclusters, np.uint64)
    has = slot >= 0
    raw[has] = store.tables[slot[has], (gc % nelems)[has]]
    return raw, l1i
