"""Block status of a qcow2 layer, as qemu's ``qcow2_co_block_status`` reports it.

A layer is walked a chunk of L2 tables at a time: each chunk is decoded and
turned into runs of equal status (``native.unit_runs``), and the runs are
merged across chunks, so mapping a 1 TiB image never holds per-cluster arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...extents import DATA, OFFSET_VALID, Extents, split_by_host_data

_U = np.uint64


def unit_status(gm: Any, crypto: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """(unit size, status per unit, host offset per unit) for a guest map."""
    return native.unit_status(gm.kind, gm.host, gm.alloc, gm.zero, gm.subclusters, gm.cluster_size, crypto)


def metadata_preallocated(img: Any) -> bool:
    """qemu's qcow2_detect_metadata_preallocation: far more clusters in use than stored."""
    cs = img.cluster_size
    real_clusters = img.src.allocated // cs
    threshold = max(real_clusters * 10 // 9, real_clusters + 2)
    return img.tables.count_nonzero_refcounts() >= threshold


def active_extents(img: Any) -> Extents:
    return layer_extents(img, None)


def layer_extents(img: Any, layer: int | None) -> Extents:
    """Extents of the active layer (None) or of snapshot ``layer`` (index into the table)."""
    m, t = img.meta, img.tables
    l1, vsize, _ = t.layer_l1(layer)
    nclusters = -(-vsize // t.cs)
    sub = 32 if m.extended_l2 else 1
    unit = t.cs // sub
    starts, sts, offs = _layer_runs(t, l1, nclusters, sub, bool(m.header.crypt_method))
    starts, sts, offs = _merge(starts, sts, offs, unit, nclusters * sub)
    begin = starts.astype(np.int64) * unit
    end = np.minimum(np.append(begin[1:], vsize), vsize)
    ext = Extents(begin, (end - begin).astype(np.int64), sts, offs, vsize)
    if np.any(sts == (DATA | OFFSET_VALID)) and metadata_preallocated(img):
        ranges = host_data_ranges(img)
        if ranges is not None:
            ext = split_by_host_data(ext, ranges)
    return ext


def host_data_ranges(img: Any) -> list[tuple[int, int]] | None:
    """Data ranges of the file guest data lives in: the image itself or its external data file.

    qemu recurses into the data file too (BDRV_BLOCK_RECURSE); imgscope opens it read-only
    by the rules of backing files (relative to the image's directory); None when it cannot.
    """
    m = img.meta
    if not m.has_data_file:
        return img.src.data_ranges()
    if not m.data_file:
        return None
    from ...chain import resolve_backing_path
    from ...errors import ImgscopeError
    from ...io import Source
    try:
        with Source(resolve_backing_path(img.path, m.data_file)) as src:
            return src.data_ranges()
    except ImgscopeError:
        return None


def _layer_runs(t: Any, l1: np.ndarray, nclusters: int, sub: int,
                crypto: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs (first unit, status, offset) of one layer, chunk by chunk (not merged across chunks)."""
    starts: list[np.ndarray] = []
    sts: list[np.ndarray] = []
    offs: list[np.ndarray] = []
    per_table = t.l2e * sub
    ext = sub > 1
    covered = 0
    for first, count, ent in t.layer_windows(l1, nclusters):
        u0 = first * per_table
        if ent is None:
            starts.append(np.array([u0], np.int64))
            sts.append(np.zeros(1, np.uint8))
            offs.append(np.zeros(1, _U))
        else:
            n = min(count * t.l2e, nclusters - first * t.l2e)
            s, st, off = native.unit_runs(ent.kind[:n], ent.host[:n], ent.alloc[:n] if ext else None,
                                          ent.zero[:n] if ext else None, sub, t.cs, crypto)
            starts.append(s + u0)
            sts.append(st)
            offs.append(off)
        covered = first + count
    if covered * t.l2e < nclusters:  # past the end of the L1 table: unallocated
        starts.append(np.array([covered * per_table], np.int64))
        sts.append(np.zeros(1, np.uint8))
        offs.append(np.zeros(1, _U))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, _U)
    return np.concatenate(starts), np.concatenate(sts), np.concatenate(offs)


def _merge(starts: np.ndarray, sts: np.ndarray, offs: np.ndarray, unit: int,
           total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge neighbouring runs with equal status and (where OFFSET_VALID) contiguous host offsets."""
    length = np.diff(np.append(starts, total)).astype(_U) * _U(unit)
    code = sts | np.where(sts & OFFSET_VALID, np.uint8(native.OFFSET_VALID), np.uint8(0)).astype(np.uint8)
    keep = native.run_starts(code, offs, length)
    return starts[keep], sts[keep], offs[keep]
