"""qemu-compatible qcow2 check (read-only), following qemu 7.2's passes:
``calculate_refcounts`` → ``check_refblocks`` → ``compare_refcounts`` →
``check_oflag_copied`` (../shared/QEMU_CHECK.md b.1/b.2), counted the same way.

Everything is vectorised over the decoded tables; each distinct L2 table is
examined once and its findings weighted by the number of L1 entries (active
and snapshot) that point at it — qemu walks it once per L1 path.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from ... import native
from ...arrays import unique
from ...check import CheckResult, Labels
from ...limits import LIMITS, enforce
from . import layout as L
from .refs import MAX_SNAPSHOT_L1_ENTRIES, l1_paths, slot_weights
from .tables import CHUNK_ENTRIES, _runs

_U = np.uint64


class _Imrt:
    """qemu's in-memory refcount table: computed references per host cluster."""

    def __init__(self, file_size: int, cb: int, refcount_bits: int, res: CheckResult) -> None:
        self.file_size = file_size
        self.cb = cb
        self.cs = 1 << cb
        self.nb = -(-file_size // self.cs)
        # the narrowest counter that holds the width's maximum: counters saturate there
        self.counts = np.zeros(self.nb + 2, np.uint8 if refcount_bits <= 8 else
                               np.uint16 if refcount_bits <= 16 else np.uint32)
        self.max = (1 << refcount_bits) - 1
        self.res = res
        self.used = self.nb  # qemu grows its table on demand; clusters [0, used) are compared

    def inc(self, off: Any, length: Any, structure: str, weight: Any = None) -> None:
        off = np.atleast_1d(np.asarray(off, _U))
        length = np.atleast_1d(np.asarray(length, _U))
        w = None if weight is None else np.atleast_1d(np.asarray(weight, np.uint32))
        keep = length > 0
        # "region exceeding the end of the file by one cluster or more" is not counted
        end = off + length
        wrap = end < off
        past = keep & (wrap | ((end - np.minimum(end, _U(self.file_size))) >= _U(self.cs)))
        if past.any():
            wp = w[past] if w is not None else np.ones(int(past.sum()), np.uint32)
            self.res.add("Q2-REF-001", int(past.sum()), host_offset=off[past], found=length[past], structure=structure,
                         count=wp, _counted=int(wp.sum()))
        keep &= ~past
        if not keep.any():
            return
        last = int(((off[keep] + length[keep] - _U(1)) >> _U(self.cb)).max())
        self.used = max(self.used, last + 1)
        over = native.add_refs(self.counts, off[keep], length[keep], self.cb, self.max,
                               w[keep] if w is not None else None)
        if over:
            self._overflow(over, structure)

    def _overflow(self, n: int, structure: str) -> None:
        at = np.flatnonzero(self.counts >= self.max)
        self.res.add("Q2-REF-002", len(at) or 1, host_offset=(at.astype(_U) << _U(self.cb)) if len(at) else None,
                     structure=structure, expected=f">{self.max}", _counted=n)


def check_image(img: Any) -> CheckResult:
    """The check, streaming the L2 tables a chunk at a time (bounded memory).

    Findings and counters equal those of one pass over all tables at once; when a
    refcount overflows (whose report depends on the order references are added)
    the check is redone with every table in one chunk, which is that order.
    """
    res = _check(img, CHUNK_ENTRIES)
    if res is None:
        res = _check(img, None)
    return res


def _check(img: Any, chunk: int | None) -> CheckResult | None:
    m, t = img.meta, img.tables
    res = CheckResult(img.path, "qcow2")
    cs, cb = m.cluster_size, m.cluster_bits
    h = m.header
    res.total_clusters = -(-m.virtual_size // cs)
    _state_findings(img, res)
    imrt = _Imrt(img.src.qemu_size, cb, 1 << m.refcount_order, res)  # "past EOF" as qemu means it
    paths = l1_paths(img)
    slot_weight, _ = slot_weights(img, paths)
    w = SimpleNamespace(paths=paths)

    # -- calculate_refcounts --------------------------------------------------------------
    imrt.inc(0, cs, "header")
    counted = [p for p in w.paths if not p.skipped]
    for p in w.paths:
        if p.skipped:
            sn = m.snapshots[p.layer - 1]
            pid = "Q2-SNP-001" if "aligned" in p.skipped else "Q2-SNP-002"
            res.add(pid, structure=f"{sn.id} ({sn.name})",
                    found=hex(sn.l1_table_offset) if pid == "Q2-SNP-001" else sn.l1_size, layer=p.label)
    if m.has_data_file and m.snapshots:
        res.add("Q2-SNP-005", found=len(m.snapshots))
    for p in ([] if _l1_refs_at_once(imrt, counted, cs) else counted):
        imrt.inc(p.offset, p.size * 8, f"{p.label} L1 table")
        e = p.entries
        bad = (e & _U(L.L1E_RESERVED_MASK)) != 0
        if bad.any():
            res.add("Q2-L1-001", int(bad.sum()), structure=f"{p.label} L1", found=[f"{x:x}" for x in e[bad].tolist()],
                    layer=p.label, host_offset=p.offset + np.flatnonzero(bad).astype(_U) * _U(8))
        l2off = e & _U(L.L1E_OFFSET_MASK)
        has = l2off != 0
        imrt.inc(l2off[has], np.full(int(has.sum()), cs, _U), f"{p.label} L2 tables")
        unal = has & ((l2off % _U(cs)) != 0)
        if unal.any():
            res.add("Q2-L1-002", int(unal.sum()), structure=f"{p.label} L1", layer=p.label,
                    found=[hex(x) for x in l2off[unal].tolist()], host_offset=l2off[unal])
    scan = _scan_tables(img, res, imrt, slot_weight, paths[0], chunk)
    if scan is None:
        return None
    if m.snapshots:
        imrt.inc(h.snapshots_offset, m.snapshots_size, "snapshot table")
    imrt.inc(h.refcount_table_offset, h.refcount_table_clusters * cs, "refcount table")
    if m.fde is not None and h.crypt_method == 2 and m.fde.length:
        imrt.inc(m.fde.offset, m.fde.length, "LUKS header")
    if m.bitmaps and (m.autoclear & L.AUTOCLEAR_BITMAPS):
        _bitmaps(img, imrt)
    rebuild = _refblocks(img, res, imrt)

    # -- compare_refcounts ------------------------------------------------------------------
    ondisk, unreadable = _ondisk_prefix(img, res, imrt.used)
    computed = imrt.counts[:imrt.used]
    idx_all, what, last_used = native.refcmp(ondisk, computed, unreadable, native.scan_threads())
    idx = idx_all[what == native.CMP_UNREADABLE]
    if len(idx):
        res.add("Q2-RC-004", len(idx), host_offset=idx.astype(_U) << _U(cb), index=idx)
    for code, pid in ((native.CMP_ZERO, "Q2-RC-003"), (native.CMP_LOW, "Q2-RC-001"), (native.CMP_HIGH, "Q2-RC-002")):
        idx = idx_all[what == code]
        if len(idx):
            res.add(pid, len(idx), host_offset=idx.astype(_U) << _U(cb),
                    found=native.refcounts_at(ondisk, unreadable, idx)[0], expected=computed[idx], index=idx)
    rebuild = rebuild or bool((what == native.CMP_ZERO).any())
    res.image_end_offset = (last_used + 1) * cs if last_used >= 0 else cs
    res.needs_rebuild = rebuild  # type: ignore[attr-defined]

    # -- check_oflag_copied -----------------------------------------------------------------
    _oflag_copied(img, res, w, scan)
    if isinstance(ondisk, native.RefView):
        img.src.release(0, img.src.size)  # the refcount blocks' pages leave this process again
    res.ondisk_used = (ondisk, unreadable)  # type: ignore[attr-defined]
    res.computed = computed  # type: ignore[attr-defined]
    return res


def _l1_refs_at_once(imrt: _Imrt, counted: list, cs: int) -> bool:
    """The L1 tables and the L2 tables they point at, counted with one add when no L1 entry and
    no reference needs a finding (what the per-table loop would count; with 1,000 snapshots the
    loop costs more than the L2 scan).  False, with nothing counted, when the loop must run."""
    if not counted:
        return True
    ents = np.concatenate([p.entries for p in counted])
    if ((ents & _U(L.L1E_RESERVED_MASK)) != 0).any():
        return False
    l2off = ents & _U(L.L1E_OFFSET_MASK)
    l2off = l2off[l2off != 0]
    if ((l2off % _U(cs)) != 0).any():
        return False
    l1off = np.array([p.offset for p in counted], _U)
    l1len = np.array([p.size * 8 for p in counted], _U)
    off = np.concatenate([l1off, l2off])
    ln = np.concatenate([l1len, np.full(len(l2off), cs, _U)])
    keep = ln > 0
    off, ln = off[keep], ln[keep]
    if not len(off):
        return True
    end = off + ln
    fs = _U(imrt.file_size)
    if ((end < off) | ((end - np.minimum(end, fs)) >= _U(imrt.cs))).any():
        return False  # a reference past EOF: reported per table by the loop
    first, last = off >> _U(imrt.cb), (end - _U(1)) >> _U(imrt.cb)
    span = (last - first + _U(1)).astype(np.int64)
    touched = unique(np.repeat(first.astype(np.int64), span) +
                     (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span)))
    if int(touched[-1]) >= len(imrt.counts):
        return False
    before = imrt.counts[touched].copy()
    if native.add_refs(imrt.counts, off, ln, imrt.cb, imrt.max):
        imrt.counts[touched] = before  # an overflow: its report depends on the loop's order
        return False
    imrt.used = max(imrt.used, int(touched[-1]) + 1)
    return True


def _state_findings(img: Any, res: CheckResult) -> None:
    m = img.meta
    if m.incompatible & L.INCOMPAT_DIRTY:
        res.add("Q2-HDR-001", structure="header.incompatible_features")
        res.notes.append("The dirty bit is set (lazy refcounts): refcount mismatches below are expected after an "
                         "unclean shutdown; `imgscope check -r all` rebuilds the refcounts from the lookup tables.")
    if m.incompatible & L.INCOMPAT_CORRUPT:
        res.add("Q2-HDR-002", structure="header.incompatible_features")
    unknown = m.incompatible & ~L.INCOMPAT_KNOWN
    if unknown:
        res.add("Q2-HDR-003", structure="header.incompatible_features", found=hex(unknown))
    res.refuse_like_qemu(img)
    if m.bitmaps_ext is not None and not (m.autoclear & L.AUTOCLEAR_BITMAPS):
        res.add("Q2-HDR-004", structure="header.autoclear_features")
    for b in m.bitmaps:
        if b.flags & L.BITMAP_FLAG_IN_USE:
            res.add("Q2-BM-001", structure=b.name, host_offset=b.entry_offset)
    ids = Counter(s.id for s in m.snapshots)  # (list.count per id: 13 ms with 1,000 snapshots)
    for sid in sorted(i for i, n in ids.items() if n > 1):
        res.add("Q2-SNP-004", found=sid)
    if m.version >= 3:
        for i, s in enumerate(m.snapshots):
            if s.extra_data_size < 16:
                res.add("Q2-SNP-003", structure=f"{s.id} ({s.name})", found=s.extra_data_size,
                        host_offset=s.entry_offset, index=i)


#: the order one pass over every table emits the L2 pass's findings in (chunks are merged into it)
_SCAN_ORDER = (("Q2-L2-001", None), ("Q2-L2-002", None), ("Q2-L2-003", None), ("Q2-L2-004", None),
               ("Q2-REF-001", "compressed clusters"), ("Q2-REF-002", "compressed clusters"),
               ("Q2-L2-005", None), ("Q2-L2-008", None), ("Q2-L2-006", None), ("Q2-L2-007", None),
               ("Q2-REF-001", "data clusters"), ("Q2-REF-002", "data clusters"))


class _Sink:
    """Collects the L2 pass's findings chunk by chunk and emits one batch per kind, in _SCAN_ORDER."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str | None], list[tuple[int, dict[str, Any]]]] = {}

    def add(self, pid: str, n: int = 1, **cols: Any) -> None:
        if n > 0:
            key = (pid, cols.get("structure") if pid.startswith("Q2-REF") else None)
            self.parts.setdefault(key, []).append((n, cols))

    @property
    def overflowed(self) -> bool:
        return any(pid == "Q2-REF-002" for pid, _ in self.parts)

    def flush(self, res: CheckResult) -> None:
        for key in _SCAN_ORDER:
            parts = self.parts.get(key)
            if not parts:
                continue
            if len(parts) == 1:
                res.add(key[0], parts[0][0], **parts[0][1])
                continue
            cols: dict[str, Any] = {}
            for k, v in parts[0][1].items():
                vals = [p[1].get(k) for p in parts]
                if k == "_counted":
                    cols[k] = sum(int(x) for x in vals)
                elif isinstance(v, (np.ndarray, list)):
                    cols[k] = np.concatenate([np.asarray(x) for x in vals])
                else:
                    cols[k] = v
            res.add(key[0], sum(p[0] for p in parts), **cols)


@dataclass
class _Scan:
    """What the L2 pass leaves for check_oflag_copied: COPIED mismatches per active table slot."""

    copied: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _scan_tables(img: Any, res: CheckResult, imrt: _Imrt, slot_weight: np.ndarray, active: Any,
                 chunk: int | None) -> _Scan | None:
    """check_refcounts_l2 for every distinct table (weighted by its L1 references), the
    fragmentation counters and the OFLAG_COPIED comparison of the active tables, in one
    streamed pass; None when a refcount overflowed in chunked mode (see check_image)."""
    t = img.tables
    live = np.flatnonzero(slot_weight)
    active_n = np.bincount(active.slots[active.slots > 0], minlength=len(slot_weight))
    if chunk is not None and getattr(img.src, "mapping", lambda: None)() is not None \
            and not hasattr(res, "ondisk_all"):
        # cold cache: queue all the metadata reads of the check now (posix_fadvise), the refcount
        # blocks (the active tables' COPIED test reads them) ahead of the L2 tables, so the disk streams
        img.src.prefetch((t.reftable() & _U(L.REFT_OFFSET_MASK)).tolist(), t.cs)
        img.src.prefetch(t.slot_offsets[live].tolist(), t.l2_bytes)
        _ondisk_all(img, res, prefetched=True)
    ondisk, bad = res_refcounts(img, res)
    sink, scan, frag = _Sink(), _Scan(), np.zeros(3, np.int64)
    if chunk is not None:
        return _scan_fused(img, res, imrt, slot_weight, live, active_n, ondisk, bad, sink, scan)
    imrt.res = sink  # type: ignore[assignment]
    try:
        for sl, ent in t.table_chunks(t.slot_offsets[live], chunk):
            slots = live[sl]
            _chunk_entries(img, sink, imrt, slots, ent, slot_weight)
            act = active_n[slots]
            if act.any():
                frag += _chunk_fragmentation(img, ent, act)
                _chunk_copied(img, scan, slots, ent, act, ondisk, bad)
    finally:
        imrt.res = res
    if chunk is not None and sink.overflowed:
        return None
    sink.flush(res)
    res.compressed_clusters, res.allocated_clusters, res.fragmented_clusters = (int(x) for x in frag)
    return scan


#: tables handed to one fused-kernel call (and page cache mapped at once): this many L2 entries
FUSED_CHUNK_FACTOR = 32


def _scan_fused(img: Any, res: CheckResult, imrt: _Imrt, slot_weight: np.ndarray, live: np.ndarray,
                active_n: np.ndarray, ondisk: np.ndarray, bad: np.ndarray | None, sink: _Sink,
                scan: _Scan) -> _Scan | None:
    """_scan_tables with the fused kernel (native.l2_scan): clean tables are counted without decoding
    them into arrays; tables with anything to report go through the decoded-entry path below, in
    slot order, so findings equal a one-pass scan's (tables whose only findings are OFLAG_COPIED
    mismatches are counted by the kernel and decoded for check_oflag_copied only, whose report is
    in L1 order whatever the scan order).  None when a refcount overflowed (the caller
    redoes the check in one chunk, whose order defines the overflow report)."""
    m, t = img.meta, img.tables
    src = img.src
    mm = src.mapping() if hasattr(src, "mapping") else None
    lb = t.l2_bytes
    # a file the kernel can read itself: its threads pread each table into a buffer of their own (mapping
    # the tables costs a page fault per few pages and unmapping them a TLB flush); other sources' tables
    # go through one reused buffer of a few MiB read here: fresh pages cost more than reading
    per = max(1, CHUNK_ENTRIES * (FUSED_CHUNK_FACTOR if mm is not None else 4) // t.l2e)
    rbuf = bytearray(min(per, len(live)) * lb) if mm is None else None
    frag = np.zeros(3, np.int64)
    weight32 = slot_weight.astype(np.uint32)
    active32 = active_n.astype(np.uint32)
    scratch = native.ScanScratch()
    imrt.res = sink  # type: ignore[assignment]
    try:
        for a in range(0, len(live), per):
            slots = live[a:a + per]
            offs = t.slot_offsets[slots]
            _account(t, offs)
            if mm is not None:
                buf, toff = mm, offs
            else:
                buf, toff = _read_tables(t, offs, rbuf), np.arange(len(offs), dtype=_U) * _U(lb)
            stats, dirty = native.l2_scan(buf, toff, weight32[slots], active32[slots], t.l2e, t.cb,
                                          m.extended_l2, m.has_data_file, imrt.file_size, imrt.counts, imrt.max,
                                          ondisk, bad, scratch, fd=src.fd if mm is not None else -1)
            if stats[4]:
                return None
            frag += stats[:3]
            imrt.used = max(imrt.used, int(stats[3]))
            d = np.flatnonzero(dirty == 1)
            if len(d):
                ds = slots[d]
                ent = _entries_at(img, buf, toff[d], int(offs[d[0]]))
                _chunk_entries(img, sink, imrt, ds, ent, slot_weight)
                act = active_n[ds]
                if act.any():
                    frag += _chunk_fragmentation(img, ent, act)
                    _chunk_copied(img, scan, ds, ent, act, ondisk, bad)
            c = np.flatnonzero(dirty == 2)  # counted by the kernel; only their COPIED mismatches are left
            # decoded CHUNK_ENTRIES at a time: small arrays whose memory is reused (26 B per entry, fresh
            # pages for a large batch cost more than the decoding)
            g = max(1, CHUNK_ENTRIES // t.l2e)
            for k in range(0, len(c), g):
                ck = c[k:k + g]
                _chunk_copied(img, scan, slots[ck], _entries_at(img, buf, toff[ck], int(offs[ck[0]])),
                              active_n[slots[ck]], ondisk, bad)
            if mm is not None and (dirty != 0).any():  # tables decoded from the mapping
                src.release(int(offs.min()), int(offs.max()) + lb - int(offs.min()))
    finally:
        imrt.res = res
    if sink.overflowed:
        return None
    sink.flush(res)
    res.compressed_clusters, res.allocated_clusters, res.fragmented_clusters = (int(x) for x in frag)
    return scan


def _account(t: Any, offsets: np.ndarray) -> None:
    """The metadata-bytes limit, charged exactly as Qcow2Tables.decode_tables charges a chunked walk."""
    per = max(1, CHUNK_ENTRIES // t.l2e)
    for a in range(0, len(offsets), per):
        n = min(per, len(offsets) - a)
        t._decoded_bytes += n * t.l2_bytes
        if t._decoded_bytes > LIMITS["max_metadata_bytes"]:
            enforce("max_metadata_bytes", t._decoded_bytes, "qcow2 L2 tables", int(offsets[a]))


def _read_tables(t: Any, offsets: np.ndarray, out: bytearray | None = None) -> bytearray:
    """The bytes of the tables at ``offsets``, back to back (adjacent ones with one read; zeros past EOF),
    at the start of ``out`` when given (its bytes after them are left as they are)."""
    buf = bytearray(len(offsets) * t.l2_bytes) if out is None else out
    view = memoryview(buf)
    for first, count, start in _runs(offsets, t.l2_bytes):
        t.src.readinto(view[first * t.l2_bytes:(first + count) * t.l2_bytes], start)
    return buf


def _entries_at(img: Any, buf: Any, toff: np.ndarray, first_offset: int) -> Any:
    """Decoded entries of the tables at byte offsets ``toff`` of ``buf`` (zeros past its end)."""
    t, m = img.tables, img.meta
    lb = t.l2_bytes
    raw = bytearray(len(toff) * lb)
    for k, o in enumerate(toff.tolist()):
        part = buf[o:o + lb]  # a copy (mmap and bytearray slices): no buffer export outlives the loop
        raw[k * lb:k * lb + len(part)] = part
    return native.l2_decode(raw, len(toff) * t.l2e, t.cb, m.extended_l2, m.has_data_file, "qcow2 L2 tables",
                            first_offset)


def _chunk_entries(img: Any, sink: _Sink, imrt: _Imrt, slots: np.ndarray, ent: Any, slot_weight: np.ndarray) -> None:
    """check_refcounts_l2 over the decoded tables of ``slots``."""
    m, t = img.meta, img.tables
    cs = m.cluster_size
    wt = np.repeat(slot_weight[slots], t.l2e).astype(np.uint32)
    kind, host, length, flags, alloc, zero = ent
    comp = kind == native.COMPRESSED
    std_alloc = (kind == native.NORMAL) | (kind == native.ZERO_ALLOC)
    entry_off = np.repeat(t.slot_offsets[slots], t.l2e) + (np.tile(np.arange(t.l2e, dtype=_U), len(slots)) *
                                                             _U(16 if m.extended_l2 else 8))

    def report(pid: str, mask: np.ndarray, **cols: Any) -> None:
        if mask.any():
            sink.add(pid, int(mask.sum()), structure="L2 table", count=wt[mask], _counted=int(wt[mask].sum()),
                     **{k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in cols.items()})

    def raw_at(mask: np.ndarray, keep: int = ~0) -> np.ndarray:
        """The raw entries (bits ``keep``) of the masked entries, in place (the decoded ones drop bits)."""
        raw = np.zeros(len(host), _U)
        raw[mask] = [int.from_bytes(img.src.read(o, 8, "qcow2 L2 entry", zero_fill=True), "big") & keep
                     for o in entry_off[mask].tolist()]
        return raw

    index = np.tile(np.arange(t.l2e, dtype=np.int64), len(slots))  # qemu prints the entry's index
    resv = ~comp & ((flags & native.F_RESERVED) != 0)
    if resv.any():
        report("Q2-L2-001", resv, host_offset=entry_off, found=_hex_at(host, resv), entry=raw_at(resv))
    report("Q2-L2-002", comp & ((flags & native.F_COPIED) != 0), host_offset=host)
    cdata, cbm = _compressed_unused(m, ent)
    for pid, mask in (("Q2-L2-003", cdata), ("Q2-L2-004", cbm)):
        if mask.any():  # qemu has cleared the COPIED flag it reported above before printing the entry
            report(pid, mask, host_offset=host, index=index, entry=raw_at(mask, ~(1 << 63) & ((1 << 64) - 1)))
    cref = comp & ~cdata & ~cbm
    if cref.any():
        imrt.inc(host[cref], length[cref], "compressed clusters", wt[cref])
    if m.extended_l2:
        report("Q2-L2-005", std_alloc & ((alloc & zero) != 0), host_offset=host)
        report("Q2-L2-008", (kind == native.UNALLOCATED) & (alloc != 0), host_offset=entry_off)
    unal = std_alloc & ((flags & native.F_UNALIGNED) != 0)
    has_data = alloc != 0 if m.extended_l2 else (flags & native.F_ZERO) == 0
    report("Q2-L2-006", unal & ~has_data, host_offset=host)
    report("Q2-L2-007", unal & has_data, host_offset=host)
    if not m.has_data_file and std_alloc.any():
        imrt.inc(host[std_alloc], np.full(int(std_alloc.sum()), cs, _U), "data clusters", wt[std_alloc])


def _hex_at(host: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Raw hex of the masked entries, placed so that ``report`` selecting ``mask`` picks them."""
    out = np.empty(len(host), object)
    out[mask] = [f"{x:x}" for x in host[mask].tolist()]
    return out


def _compressed_unused(m: Any, ent: Any) -> tuple[np.ndarray, np.ndarray]:
    """Compressed entries check_refcounts_l2 reports and then skips (no reference, no BlockFragInfo):
    with an external data file, and (extended L2) with a subcluster bitmap."""
    comp = ent.kind == native.COMPRESSED
    cdata = comp & bool(m.has_data_file)
    cbm = comp & ~cdata & ((ent.alloc.astype(np.uint64) | (ent.zero.astype(np.uint64) << _U(32))) != 0) \
        if m.extended_l2 else np.zeros(len(comp), bool)
    return cdata, cbm


def _chunk_fragmentation(img: Any, ent: Any, act: np.ndarray) -> np.ndarray:
    """(compressed, allocated, fragmented) of BlockFragInfo for these tables, times their active L1 entries.

    Contiguity restarts with each L2 table, so every table is counted on its own.
    """
    t = img.tables
    rows = np.flatnonzero(act)
    k2 = ent.kind.reshape(-1, t.l2e)[rows]
    skipped = np.logical_or(*_compressed_unused(img.meta, ent)).reshape(-1, t.l2e)[rows]
    comp = ((k2 == native.COMPRESSED) & ~skipped).sum(axis=1)
    std = (k2 == native.NORMAL) | (k2 == native.ZERO_ALLOC)
    r, c = np.nonzero(std)
    h = ent.host.reshape(-1, t.l2e)[rows][r, c]
    brk = (r[1:] == r[:-1]) & (h[1:] != h[:-1] + _U(t.cs))
    nfrag = np.bincount(r[1:][brk], minlength=len(rows))
    w = act[rows].astype(np.int64)
    return np.array([(w * comp).sum(), (w * (comp + std.sum(axis=1))).sum(), (w * (comp + nfrag)).sum()], np.int64)


def _chunk_copied(img: Any, scan: _Scan, slots: np.ndarray, ent: Any, act: np.ndarray, ondisk: np.ndarray,
                  bad: np.ndarray | None) -> None:
    """check_oflag_copied's L2 half for active tables: COPIED must be set exactly when the refcount is 1."""
    m, t = img.meta, img.tables
    for row in np.flatnonzero(act).tolist():
        sl = slice(row * t.l2e, (row + 1) * t.l2e)
        kind, host, flags = ent.kind[sl], ent.host[sl], ent.flags[sl]
        std = (kind == native.NORMAL) | (kind == native.ZERO_ALLOC)
        if not std.any():
            continue
        if m.has_data_file:
            rc2 = np.ones(int(std.sum()), np.int64)
            ok = np.ones(len(rc2), bool)
        else:
            rc2, unreadable = native.refcounts_at(ondisk, bad, (host[std] >> _U(t.cb)).astype(np.int64))
            ok = ~unreadable
        cp = (flags[std] & native.F_COPIED) != 0
        mism = ok & ((rc2 == 1) != cp)
        if mism.any():
            raw = host[std][mism] | (cp[mism].astype(_U) << _U(63)) | ((flags[std][mism] & native.F_ZERO) != 0).astype(_U)
            scan.copied[int(slots[row])] = (np.flatnonzero(std)[mism], host[std][mism], cp[mism].astype(int),
                                            rc2[mism], raw)

def _bitmaps(img: Any, imrt: _Imrt) -> None:
    m, t = img.meta, img.tables
    ext = m.bitmaps_ext
    imrt.inc(ext.bitmap_directory_offset, ext.bitmap_directory_size, "bitmap directory")
    for b in m.bitmaps:
        imrt.inc(b.table_offset, b.table_size * 8, f"bitmap {b.name} table")
        if not b.table_size:
            continue
        ent = t.read_l1(b.table_offset, b.table_size, f"qcow2 bitmap {b.name!r} table")
        offs = ent & _U(0x00FFFFFFFFFFFE00)
        offs = offs[offs != 0]
        imrt.inc(offs, np.full(len(offs), m.cluster_size, _U), f"bitmap {b.name} data")


def _refblocks(img: Any, res: CheckResult, imrt: _Imrt) -> bool:
    """check_refblocks: each reftable entry, in order; returns whether a rebuild is needed."""
    t = img.tables
    cs, cb = t.cs, t.cb
    rt = t.reftable()
    if _refblocks_at_once(imrt, rt, cs, cb):
        return False
    rebuild = False
    for i in np.flatnonzero(rt).tolist():
        e = int(rt[i])
        off = e & L.REFT_OFFSET_MASK
        if e & L.REFT_RESERVED_MASK:
            res.add("Q2-RT-001", found=i, host_offset=off)
            rebuild = True
            continue
        if off % cs:
            res.add("Q2-RT-002", found=i, host_offset=off)
            rebuild = True
            continue
        cluster = off >> cb
        if cluster >= imrt.used:
            res.add("Q2-RT-003", found=i, host_offset=off)
            continue
        if off:
            imrt.inc(off, cs, f"refcount block {i}")
            n = int(imrt.counts[cluster])
            if n != 1:
                res.add("Q2-RT-004", found=i, host_offset=off, expected=n)
                rebuild = True
    return rebuild


def _refblocks_at_once(imrt: _Imrt, rt: np.ndarray, cs: int, cb: int) -> bool:
    """check_refblocks in one step when no entry needs a finding (what the loop would count: one reference
    per block, each block's count then 1); False, with nothing counted, when the loop must run."""
    e = rt[rt != 0]
    off = e & _U(L.REFT_OFFSET_MASK)
    c = (off >> _U(cb)).astype(np.int64)
    if ((e & _U(L.REFT_RESERVED_MASK)) != 0).any() or (off % _U(cs) != 0).any() or (c >= imrt.used).any() \
            or (off >= _U(imrt.file_size)).any() or len(unique(c)) != len(c) or imrt.counts[c].any():
        return False
    imrt.counts[c] = 1
    return True


def _ondisk_refcounts(img: Any, n: int, prefetched: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """qcow2_get_refcount for clusters [0, n): values (narrowest dtype) and a mask of unreadable ones
    (None when every block is readable); ``prefetched``: the caller has asked for the blocks already."""
    t = img.tables
    per_block = t.cs * 8 >> img.meta.refcount_order
    rt = t.reftable()
    mm = img.src.mapping() if hasattr(img.src, "mapping") else None
    if mm is not None:  # every refcount block straight from the mapped file, in the narrowest dtype
        if not prefetched:
            img.src.prefetch((rt & _U(L.REFT_OFFSET_MASK)).tolist(), t.cs)
        out = native.refblocks_gather(mm, img.src.size, rt, img.meta.refcount_order, t.cb, n, t.counter_dtype(),
                                      native.scan_threads())
        img.src.release(0, img.src.size)  # the refcount blocks' pages leave this process again
        return out
    vals = t.refcounts(n, t.counter_dtype())
    bad = None
    offs = rt & _U(L.REFT_OFFSET_MASK)
    for i in np.flatnonzero(offs % _U(t.cs)).tolist():
        lo, hi = i * per_block, min(n, (i + 1) * per_block)
        if lo < n:
            bad = np.zeros(n, bool) if bad is None else bad
            bad[lo:hi] = True
            vals[lo:hi] = 0
    return vals, bad


def _ondisk_prefix(img: Any, res: CheckResult, n: int) -> tuple[Any, np.ndarray | None]:
    """On-disk refcounts of clusters [0, n), from the ones the check already read when they cover them."""
    vals, bad = res_refcounts(img, res)
    if isinstance(vals, native.RefView):
        return vals, None
    if len(vals) >= n:
        return vals[:n], (bad[:n] if bad is not None and bad[:n].any() else None)
    return _ondisk_refcounts(img, n)


def _oflag_copied(img: Any, res: CheckResult, w: Any, scan: Any) -> None:
    """check_oflag_copied over the active L1 and the L2 tables it points at."""
    m, t = img.meta, img.tables
    cb = t.cb
    active = w.paths[0]
    ondisk, bad = res_refcounts(img, res)
    l2off = active.entries & _U(L.L1E_OFFSET_MASK)
    has = np.flatnonzero(l2off != 0)
    if not len(has):
        return
    rc, unreadable = native.refcounts_at(ondisk, bad, (l2off[has] >> _U(cb)).astype(np.int64))
    readable = ~unreadable
    copied = (active.entries[has] >> _U(63)) != 0
    mism = readable & ((rc == 1) != copied)
    if mism.any():
        res.add("Q2-CP-001", int(mism.sum()), structure=Labels("active L1[{}]", has[mism]),
                layer="active", host_offset=l2off[has][mism], found=copied[mism].astype(int), expected=rc[mism],
                index=has[mism], entry=active.entries[has][mism])
    # CP-002: mismatches found per table by the scan, reported once per active L1 entry, in L1 order
    rows = [(i, scan.copied[int(sl)]) for i, sl in zip(has.tolist(), active.slots[has].tolist())
            if int(sl) in scan.copied]
    if rows:
        gidx = np.concatenate([r[0] for _, r in rows])
        l1i = np.concatenate([np.full(len(r[0]), i, np.int64) for i, r in rows])
        guest = (l1i.astype(_U) * _U(t.l2e) + gidx.astype(_U)) << _U(cb)
        res.add("Q2-CP-002", len(gidx), structure="active L2 entry", layer="active",
                host_offset=np.concatenate([r[1] for _, r in rows]), guest_offset=guest,
                found=np.concatenate([r[2] for _, r in rows]), expected=np.concatenate([r[3] for _, r in rows]),
                index=l1i, entry=np.concatenate([r[4] for _, r in rows]))


def res_refcounts(img: Any, res: CheckResult) -> tuple[Any, np.ndarray | None]:
    return res.ondisk_all if hasattr(res, "ondisk_all") else _ondisk_all(img, res)


def ondisk_array(img: Any, res: CheckResult) -> np.ndarray:
    """The on-disk refcounts of the clusters the check compared, as an array (the repair's input)."""
    if not hasattr(res, "ondisk_dense"):
        ondisk, _ = res.ondisk_used
        if isinstance(ondisk, native.RefView):
            ondisk = ondisk.dense(len(res.computed), img.tables.counter_dtype())[0]
        res.ondisk_dense = ondisk  # type: ignore[attr-defined]
    return res.ondisk_dense


def _ondisk_all(img: Any, res: CheckResult, prefetched: bool = False) -> tuple[Any, np.ndarray | None]:
    """On-disk refcounts for every cluster the refcount table covers: read in place from the mapped file
    (a RefView: no copy of them), else gathered into an array and a mask of unreadable ones (lookups
    may go past EOF)."""
    t = img.tables
    rt = t.reftable()
    mm = img.src.mapping() if hasattr(img.src, "mapping") else None
    if mm is not None:
        if not prefetched:
            img.src.prefetch((rt & _U(L.REFT_OFFSET_MASK)).tolist(), t.cs)
        view = native.refview(mm, rt, img.meta.refcount_order, t.cb)
        if view is not None:
            res.ondisk_all = (view, None)  # type: ignore[attr-defined]
            return view, None
    per_block = t.cs * 8 >> img.meta.refcount_order
    n = len(rt) * per_block
    n = min(n, max(-(-img.src.size // t.cs) + 2, 1) * 4 + per_block)
    # clusters past the last refcount block read as 0 from any lookup: hold only those before it
    nz = np.flatnonzero(rt & _U(L.REFT_OFFSET_MASK))
    n = min(n, max((int(nz[-1]) + 1 if len(nz) else 0) * per_block, -(-img.src.size // t.cs) + 2))
    vals, bad = _ondisk_refcounts(img, n, prefetched or mm is not None)
    res.ondisk_all = (vals, bad)  # type: ignore[attr-defined]
    return vals, bad

