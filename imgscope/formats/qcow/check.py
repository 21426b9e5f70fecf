"""imgscope's own check of qcow v1 images (qemu-img has none: it exits 63).

The result is ``CheckResult(supported=False)`` — exit code 63 and no qemu
counters, like qemu — but its findings list what a qcow v1 file can get wrong
(FORMATS.md §8): L2 tables past the end of the file, unaligned data clusters,
references past the end of the file, host clusters used twice (compressed
streams may share a host cluster with each other, nothing else may), data
overlapping the header or L1 table, and clusters nothing references (leaks).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import native
from ...check import CheckResult, Labels
from ...model import COMPRESSED, DATA
from . import layout as L
from .tables import classify

_U = np.uint64


def _touch(ncl: int, cb: int, off: np.ndarray, length: np.ndarray, size: int) -> np.ndarray:
    """References per host cluster of the byte ranges, clipped to the file."""
    off = np.asarray(off, _U)
    length = np.asarray(length, _U)
    inside = (off < _U(size)) & (length > 0)
    end = np.minimum(off[inside] + length[inside], _U(size))
    counts = np.zeros(ncl, np.uint32)
    native.add_refs(counts, off[inside], end - off[inside], cb, 0xFFFFFFFF)
    return counts


def check_image(img: Any) -> CheckResult:
    t = img.tables
    cs, cb, size = t.cs, t.cb, img.src.size
    res = CheckResult(img.path, "qcow", supported=False, has_cluster_stats=False, has_end_offset=False)
    res.notes.append("qemu-img has no check for qcow (version 1) images; the findings are imgscope's own.")
    l2_end = t.l1 + _U(t.table_bytes)
    past = (t.l1 != 0) & ((l2_end > _U(size)) | (l2_end < t.l1))
    if past.any():
        idx = np.flatnonzero(past)
        res.add("QCOW1-L1-001", len(idx), structure=Labels("L1[{}]", idx), host_offset=t.l1[idx],
                guest_offset=idx.astype(_U) * _U(t.nelems * cs))
    l1i, j, raw, table = t.table_entries()
    kind, host, length, flags = classify(raw, cb)
    guest = (l1i.astype(_U) * _U(t.nelems) + j.astype(_U)) * _U(cs)

    def where(mask: np.ndarray) -> list[str]:
        return [f"L2 table at {o:#x}" for o in table[mask].tolist()]

    unal = (flags & native.F_UNALIGNED) != 0
    if unal.any():
        res.add("QCOW1-L2-001", int(unal.sum()), structure=where(unal), host_offset=host[unal],
                guest_offset=guest[unal])
    alloc = (kind == DATA) | (kind == COMPRESSED)
    end = host + length
    beyond = alloc & ((end > _U(size)) | (end < host))
    if beyond.any():
        over = np.where(host[beyond] >= _U(size), length[beyond], end[beyond] - _U(size))
        res.add("QCOW1-REF-001", int(beyond.sum()), structure=where(beyond), host_offset=host[beyond],
                guest_offset=guest[beyond], found=over)
    _sharing(res, t, kind, host, length, size)
    return res


def _sharing(res: CheckResult, t: Any, kind: np.ndarray, host: np.ndarray, length: np.ndarray, size: int) -> None:
    """Duplicates, overlaps with metadata, and leaks, per host cluster."""
    cs, cb = t.cs, t.cb
    h = t.img.h
    ncl = -(-size // cs)
    meta_off = [0, t.l1_offset] + ([h.backing_file_offset] if h.backing_file_offset else [])
    meta_len = [L.HEADER_SIZE, t.l1_bytes] + ([h.backing_file_size] if h.backing_file_offset else [])
    meta = _touch(ncl, cb, meta_off, meta_len, size) > 0
    l2off = t.l1[t.l1 != 0]
    data = kind == DATA
    plain = _touch(ncl, cb, np.concatenate([l2off, host[data]]),
                   np.concatenate([np.full(len(l2off), t.table_bytes, _U), length[data]]), size)
    comp = _touch(ncl, cb, host[kind == COMPRESSED], length[kind == COMPRESSED], size) > 0
    at = (lambda m: np.flatnonzero(m).astype(_U) * _U(cs))
    dup = plain > 1
    if dup.any():
        res.add("QCOW1-DUP-001", int(dup.sum()), host_offset=at(dup), found=plain[dup],
                structure="L2 tables and data clusters")
    for mask, what in ((meta & ((plain > 0) | comp), "header or L1 table and an L2 table or data"),
                       (comp & (plain > 0), "compressed data and an L2 table or data cluster")):
        if mask.any():
            res.add("QCOW1-OVL-001", int(mask.sum()), host_offset=at(mask), found=what)
    leak = ~meta & (plain == 0) & ~comp
    if leak.any():
        res.add("QCOW1-LEAK-001", int(leak.sum()), host_offset=at(leak))
