"""Block status of a qcow2 layer, as qemu's ``qcow2_co_block_status`` reports it."""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...extents import DATA, OFFSET_VALID, ZERO, Extents

_U = np.uint64


def unit_status(gm: Any, crypto: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """(unit size, status per unit, host offset per unit) for a guest map."""
    cs = gm.cluster_size
    kind = gm.kind
    if gm.subclusters > 1:
        n = gm.subclusters
        unit = cs // n
        bit = np.arange(n, dtype=np.uint32)
        alloc = ((gm.alloc[:, None] >> bit) & 1).astype(bool)
        zero = ((gm.zero[:, None] >> bit) & 1).astype(bool)
        normal = (kind == native.NORMAL)[:, None]
        comp = (kind == native.COMPRESSED)[:, None]
        st = np.zeros(alloc.shape, np.uint8)
        st[normal & alloc & ~zero] = DATA | OFFSET_VALID
        st[normal & zero] = ZERO | OFFSET_VALID
        st[normal & ~alloc & ~zero] = OFFSET_VALID  # allocated cluster, subcluster reads from backing
        st[~normal & ~comp & zero] = ZERO
        st[np.broadcast_to(comp, st.shape)] = DATA
        off = gm.host[:, None] + (bit.astype(_U) * _U(unit))[None, :]
        status, offset = st.reshape(-1), off.reshape(-1)
    else:
        unit = cs
        table = np.array([0, DATA | OFFSET_VALID, ZERO, ZERO | OFFSET_VALID, DATA], np.uint8)
        status = table[kind]
        offset = gm.host.copy()
    if crypto:
        status = status & np.uint8(~OFFSET_VALID & 0xFF)
    offset = np.where(status & OFFSET_VALID, offset, _U(0))
    return unit, status, offset


def metadata_preallocated(img: Any) -> bool:
    """qemu's qcow2_detect_metadata_preallocation: far more clusters in use than stored."""
    cs = img.cluster_size
    real_clusters = img.src.allocated // cs
    threshold = max(real_clusters * 10 // 9, real_clusters + 2)
    refs = img.tables.refcounts()
    return int(np.count_nonzero(refs)) >= threshold


def active_extents(img: Any) -> Extents:
    m = img.meta
    gm = img.tables.guest_map(None)
    unit, status, offset = unit_status(gm, bool(m.header.crypt_method))
    if not m.has_data_file and np.any(status == (DATA | OFFSET_VALID)) and metadata_preallocated(img):
        status = _zero_holes(img, status, offset)
    return Extents.from_units(unit, status, offset, gm.virtual_size)


def _zero_holes(img: Any, status: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Mark DATA units whose host bytes sit in a file hole (or past EOF) as ZERO too."""
    ranges = img.src.data_ranges()
    starts = np.array([r[0] for r in ranges], _U)
    ends = np.array([r[1] for r in ranges], _U)
    cand = status == (DATA | OFFSET_VALID)
    off = offset[cand]
    i = np.searchsorted(starts, off, side="right") - 1
    in_data = (i >= 0) & (off < ends[np.clip(i, 0, max(len(ends) - 1, 0))]) if len(ends) else np.zeros(len(off), bool)
    out = status.copy()
    idx = np.flatnonzero(cand)
    out[idx[~in_data]] |= ZERO
    return out
