"""VHD consistency findings.  qemu has no VHD check (``qemu-img check`` exits 63), so
every finding here is imgscope-only and the result stays ``supported=False``; a footer
whose checksum is wrong is one qemu refuses to open, so the check then exits 1 like qemu-img."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...check import CheckResult
from . import layout as L
from .driver import trailing_footer_offset

_U = np.uint64


def check_image(img: Any) -> CheckResult:
    m = img.meta
    res = CheckResult(img.path, "vpc", supported=False, has_cluster_stats=False, has_end_offset=False)
    _footers(img, res)
    if m.dynamic:
        want = L.checksum(m.dyn_raw, L.DYN_CHECKSUM_AT)
        if want != m.dyn.checksum:
            res.add("VHD-DYN-001", host_offset=m.footer.data_offset, found=f"{m.dyn.checksum:#010x}",
                    expected=f"{want:#010x}")
        _blocks(img, res)
    chs = m.footer.cylinders * m.footer.heads * m.footer.sectors_per_track * L.SECTOR
    if m.footer.current_size != chs:
        res.add("VHD-SIZ-001", found=m.footer.current_size, expected=chs)
    res.refuse_like_qemu(img)  # before finding it has no check (63), qemu-img fails to open it (1)
    return res


def _footers(img: Any, res: CheckResult) -> None:
    """Checksum of the footer in use; for dynamic disks the trailing copy must exist and agree."""
    m = img.meta
    want = L.checksum(m.footer_raw, L.FOOTER_CHECKSUM_AT)
    if want != m.footer.checksum:
        res.add("VHD-FTR-001", host_offset=m.footer_offset, structure="footer", found=f"{m.footer.checksum:#010x}",
                expected=f"{want:#010x}")
    if not m.dynamic:
        return
    at = trailing_footer_offset(img.src)
    tail = img.src.read(at, L.FOOTER_SIZE, "vhd trailing footer", zero_fill=True) if at >= L.FOOTER_SIZE else b""
    if tail[:8] != L.COOKIE:
        res.add("VHD-FTR-003", host_offset=max(at, 0), found="no 'conectix' cookie")
        return
    fields = L.Footer.parse(tail)
    tsum = L.checksum(tail, L.FOOTER_CHECKSUM_AT)
    if tsum != fields.checksum:
        res.add("VHD-FTR-001", host_offset=at, structure="trailing footer", found=f"{fields.checksum:#010x}",
                expected=f"{tsum:#010x}")
    if tail != m.footer_raw:
        diff = [k for k in m.footer if not k.startswith("_") and m.footer[k] != fields[k]]
        res.add("VHD-FTR-002", host_offset=at, found=", ".join(diff) or "reserved bytes")


def _blocks(img: Any, res: CheckResult) -> None:
    """Blocks must lie between the BAT and the trailing footer and must not overlap."""
    m = img.meta
    bat = m.bat
    alloc = np.flatnonzero(bat != L.BAT_UNUSED)
    if not len(alloc):
        return
    start = bat[alloc].astype(_U) * _U(L.SECTOR)
    end = start + _U(m.bitmap_size + m.block_size)
    data_end = _U(max(trailing_footer_offset(img.src), 0))
    past = end > data_end
    if past.any():
        res.add("VHD-BAT-001", int(past.sum()), structure=[str(i) for i in alloc[past].tolist()],
                host_offset=start[past], found=end[past].tolist(), expected=int(data_end))
    meta_end = _U(max(m.dyn.table_offset + m.bat_bytes, m.footer.data_offset + L.DYN_HEADER_SIZE))
    low = start < meta_end
    if low.any():
        res.add("VHD-BAT-002", int(low.sum()), structure=[str(i) for i in alloc[low].tolist()],
                host_offset=start[low], found="the footer copy, dynamic header or BAT")
    order = np.argsort(start, kind="stable")
    s, e, idx = start[order], end[order], alloc[order]
    prev_end = np.maximum.accumulate(e)[:-1]
    clash = np.flatnonzero(s[1:] < prev_end) + 1
    if len(clash):
        res.add("VHD-BAT-002", len(clash), structure=[str(i) for i in idx[clash].tolist()], host_offset=s[clash],
                found=[f"the block of BAT entry {idx[c - 1]}" for c in clash.tolist()])
