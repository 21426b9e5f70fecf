"""qemu-compatible VDI check (read-only), following qemu 7.2's ``vdi_co_check``.

qemu walks all ``blocks_in_image`` block map entries: an allocated entry
(below 0xFFFFFFFE) must be below blocks_in_image (else one corruption,
"block index too large"); in-range entries are counted and a slot used a
second time is one corruption ("also used by"); finally the count must equal
the header's blocks_allocated (else one corruption).  qemu has no leak check
and no cluster statistics for VDI, and ``-r`` is not supported (exit 63).

imgscope adds two findings of its own (not counted by qemu): slots that end
past the end of the file (``VDI-MAP-003``) and slots inside the file that no
guest block uses (``VDI-LEAK-001``), plus ``VDI-HDR-002`` for anything qemu
refuses to open (the check then exits 1 without JSON, as qemu-img does).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...check import CheckResult, Labels
from . import layout as L
from .tables import allocated, slot_offsets

_U = np.uint64


def check_image(img: Any) -> CheckResult:
    h = img.h
    res = CheckResult(img.path, "vdi", has_cluster_stats=False, has_end_offset=False)
    for reason in img.qemu_refuses:
        res.add("VDI-HDR-002", structure="header", found=reason)
    if h.block_extra:
        res.add("VDI-HDR-003", structure="header.block_extra", found=h.block_extra, host_offset=0x17C)
    res.refuse_like_qemu(img)
    e = img.bmap
    nb = h.blocks_in_image
    alloc = allocated(e)
    big = alloc & (e >= np.uint32(nb))
    block = np.arange(len(e), dtype=np.int64)
    if big.any():
        res.add("VDI-MAP-001", int(big.sum()), structure=Labels("block map[{}]", block[big]),
                found=e[big], expected=nb, host_offset=_U(h.offset_bmap) + block[big].astype(_U) * _U(4),
                guest_offset=block[big].astype(_U) * _U(h.block_size))
    ok = alloc & ~big
    idx = np.flatnonzero(ok)
    _, first = np.unique(e[idx], return_index=True)
    again = np.ones(len(idx), bool)
    again[first] = False
    dup = idx[again]
    if len(dup):
        res.add("VDI-MAP-002", len(dup), structure=Labels("block map[{}]", dup), found=e[dup],
                host_offset=slot_offsets(img, e[dup]), guest_offset=dup.astype(_U) * _U(h.block_size))
    count = len(idx)
    if count != h.blocks_allocated:
        res.add("VDI-HDR-001", structure="header.blocks_allocated", found=h.blocks_allocated, expected=count,
                host_offset=L.BLOCKS_ALLOCATED_OFFSET)
    _own_findings(img, res, e, ok)
    return res


def _own_findings(img: Any, res: CheckResult, e: np.ndarray, ok: np.ndarray) -> None:
    """Slots past EOF and unused slots (imgscope only)."""
    h = img.h
    size, slot = img.src.size, img.slot_size
    start = slot_offsets(img, e)
    past = ok & (start + _U(slot) > _U(size))
    if past.any():
        b = np.flatnonzero(past)
        res.add("VDI-MAP-003", len(b), structure=Labels("block map[{}]", b), found=e[b],
                host_offset=start[b], guest_offset=b.astype(_U) * _U(h.block_size))
    nslots = max(0, (size - h.offset_data) // slot) if size > h.offset_data else 0
    if nslots > h.blocks_in_image:  # slots past the map's range cannot be referenced by a valid entry either
        nslots = h.blocks_in_image
    used = np.zeros(nslots, bool)
    inside = e[ok][e[ok] < np.uint32(nslots)]
    used[inside.astype(np.int64)] = True
    free = np.flatnonzero(~used)
    if len(free):
        res.add("VDI-LEAK-001", len(free), found=free, host_offset=slot_offsets(img, free.astype(np.uint32)))
