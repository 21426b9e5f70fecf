"""The only module that touches the cffi extension ``imgscope._native``.

Every native function has a numpy twin with the same signature and results.
:func:`use` selects the backend for the whole process ("native" by default when
the extension loads, "python" otherwise); the test suite runs both on the same
images and compares.  ``IMGSCOPE_FORCE_NATIVE=1`` turns a missing extension into
an import error (CI), ``IMGSCOPE_NATIVE=0`` selects the numpy path.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from .errors import FormatError

try:
    from ._native import ffi as _ffi, lib as _lib
except ImportError as exc:  # pragma: no cover - exercised when the build is missing
    if os.environ.get("IMGSCOPE_FORCE_NATIVE") == "1":
        raise ImportError(f"imgscope native extension required (IMGSCOPE_FORCE_NATIVE=1) but missing: {exc}") from exc
    _ffi = _lib = None

UNALLOCATED, NORMAL, ZERO_PLAIN, ZERO_ALLOC, COMPRESSED = range(5)
KIND_NAMES = ("unallocated", "normal", "zero_plain", "zero_alloc", "compressed")
F_COPIED, F_RESERVED, F_UNALIGNED, F_ZERO, F_HIGHBITS = 1, 2, 4, 8, 16
OFFSET_VALID = 0x80  # run_starts: this code carries a contiguity-checked offset

_ERRORS = {-1: "buffer shorter than the entries it should hold", -2: "argument out of range",
           -3: "value does not fit the encoding", -4: "reading the file failed"}

available = _lib is not None
_backend = "native" if available and os.environ.get("IMGSCOPE_NATIVE", "1") != "0" else "python"


def backend() -> str:
    return _backend


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Temporarily select ``"native"`` or ``"python"`` for every decoder."""
    global _backend
    if name == "native" and not available:
        raise RuntimeError("native extension not built")
    old, _backend = _backend, name
    try:
        yield
    finally:
        _backend = old


_CTYPES = {np.dtype(np.uint8): "uint8_t[]", np.dtype(np.uint32): "uint32_t[]", np.dtype(np.uint64): "uint64_t[]"}


def _p(arr: np.ndarray) -> object:
    """A typed C pointer into a contiguous numpy array (no copy)."""
    return _ffi.from_buffer(_CTYPES[arr.dtype], arr, require_writable=arr.flags.writeable)


def _b(buf: bytes | bytearray | memoryview) -> object:
    return _ffi.from_buffer("uint8_t[]", buf)


def _check(rc: int, structure: str, offset: int | None) -> int:
    if rc < 0:
        raise FormatError(structure, offset, _ERRORS.get(rc, f"native error {rc}"))
    return rc


class L2Entries(NamedTuple):
    kind: np.ndarray    # uint8, one of UNALLOCATED..COMPRESSED
    host: np.ndarray    # uint64, cluster offset or compressed byte offset
    length: np.ndarray  # uint64, bytes referenced (cs, compressed span, or 0)
    flags: np.ndarray   # uint8, F_* bits
    alloc: np.ndarray   # uint32, extended-L2 allocation bitmap
    zero: np.ndarray    # uint32, extended-L2 zero bitmap


# ---------------------------------------------------------------------------- be64

def be64(buf: bytes | memoryview, n: int, structure: str = "table", offset: int | None = None) -> np.ndarray:
    """Decode ``n`` big-endian u64 entries."""
    if n < 0:
        raise FormatError(structure, offset, _ERRORS[-2])
    if n * 8 > len(buf):
        raise FormatError(structure, offset, _ERRORS[-1])
    if _backend == "native":
        out = np.empty(n, dtype=np.uint64)
        _check(_lib.isn_be64_decode(_b(buf), len(buf), n, _p(out)),
               structure, offset)
        return out
    return np.frombuffer(buf, dtype=">u8", count=n).astype(np.uint64)


# ---------------------------------------------------------------------------- L2

def l2_decode(buf: bytes | memoryview, n: int, cluster_bits: int, extended: bool, data_file: bool,
              structure: str = "l2", offset: int | None = None) -> L2Entries:
    """Classify ``n`` qcow2 L2 entries (see native/imgscope_native.h)."""
    esz = 16 if extended else 8
    if n < 0:
        raise FormatError(structure, offset, _ERRORS[-2])
    if n * esz > len(buf):
        raise FormatError(structure, offset, _ERRORS[-1])
    if not 9 <= cluster_bits <= 30:
        raise FormatError(structure, offset, _ERRORS[-2])
    if _backend == "native":
        out = L2Entries(np.empty(n, np.uint8), np.empty(n, np.uint64), np.empty(n, np.uint64),
                        np.empty(n, np.uint8), np.empty(n, np.uint32), np.empty(n, np.uint32))
        ptrs = [_p(a) for a in out]
        _check(_lib.isn_l2_decode(_b(buf), len(buf), n, cluster_bits, int(extended), int(data_file),
                                  *ptrs), structure, offset)
        return out
    return _l2_decode_python(buf, n, cluster_bits, extended, data_file)


def _l2_decode_python(buf: bytes | memoryview, n: int, cb: int, extended: bool, data_file: bool) -> L2Entries:
    raw = np.frombuffer(buf, dtype=">u8", count=n * (2 if extended else 1)).astype(np.uint64)
    e = raw[::2] if extended else raw
    bm = raw[1::2] if extended else np.zeros(n, np.uint64)
    u = np.uint64
    copied = (e >> u(63)) & u(1)
    compressed = ((e >> u(62)) & u(1)).astype(bool)
    shift = 62 - (cb - 8)
    coff = e & u((1 << shift) - 1)
    nsect = ((e >> u(shift)) & u((1 << (cb - 8)) - 1)) + u(1)
    clen = nsect * u(512) - (coff & u(511))
    std_off = e & u(0x00FFFFFFFFFFFE00)
    zflag = (e & u(1)).astype(bool)
    kind = np.full(n, UNALLOCATED, np.uint8)
    normal = (std_off != 0) | (bool(data_file) & copied.astype(bool))
    kind[normal] = NORMAL
    if not extended:
        kind[zflag & (std_off != 0)] = ZERO_ALLOC
        kind[zflag & (std_off == 0)] = ZERO_PLAIN
    kind[compressed] = COMPRESSED
    host = np.where(compressed, coff, std_off)
    std_alloc = (kind == NORMAL) | (kind == ZERO_ALLOC)
    length = np.where(compressed, clen, np.where(std_alloc, u(1 << cb), u(0)))
    flags = copied.astype(np.uint8) * F_COPIED
    std = ~compressed
    flags |= (std & ((e & u(0x3F000000000001FE)) != 0)).astype(np.uint8) * F_RESERVED
    flags |= (std & zflag).astype(np.uint8) * F_ZERO
    flags |= (std_alloc & ((std_off & u((1 << cb) - 1)) != 0)).astype(np.uint8) * F_UNALIGNED
    flags |= (compressed & ((coff >> u(56)) != 0)).astype(np.uint8) * F_HIGHBITS
    return L2Entries(kind, host, length, flags, (bm & u(0xFFFFFFFF)).astype(np.uint32),
                     (bm >> u(32)).astype(np.uint32))


# ---------------------------------------------------------------------------- refcount blocks

def refblock_decode(buf: bytes | memoryview, order: int, n: int, structure: str = "refcount block",
                    offset: int | None = None) -> np.ndarray:
    """Decode ``n`` counters of ``2**order`` bits each."""
    bits = 1 << order if 0 <= order <= 6 else 0
    if not bits or n < 0:
        raise FormatError(structure, offset, _ERRORS[-2])
    if n * bits > len(buf) * 8:
        raise FormatError(structure, offset, _ERRORS[-1])
    if _backend == "native":
        out = np.empty(n, np.uint64)
        _check(_lib.isn_refblock_decode(_b(buf), len(buf), order, n,
                                        _p(out)), structure, offset)
        return out
    if bits < 8:
        raw = np.frombuffer(buf, np.uint8, count=(n * bits + 7) // 8)
        per = 8 // bits
        shifts = (np.arange(per, dtype=np.uint8) * bits)
        vals = (raw[:, None] >> shifts[None, :]) & ((1 << bits) - 1)
        return vals.reshape(-1)[:n].astype(np.uint64)
    return np.frombuffer(buf, dtype=f">u{bits // 8}", count=n).astype(np.uint64)


def refblock_encode(values: np.ndarray, order: int, size: int) -> bytes:
    """Encode counters into a ``size``-byte refcount block (zero padded)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if not 0 <= order <= 6 or size < 0:
        raise FormatError("refcount block", None, _ERRORS[-2])
    bits = 1 << order
    n = len(values)
    if n * bits > size * 8:
        raise FormatError("refcount block", None, _ERRORS[-1])
    if bits < 64 and n and int(values.max()) >= (1 << bits):
        raise FormatError("refcount block", None, f"{_ERRORS[-3]} ({bits} bits)")
    if _backend == "native":
        out = bytearray(size)
        _check(_lib.isn_refblock_encode(_p(values), n, order, _b(out), size),
               "refcount block", None)
        return bytes(out)
    if bits < 8:
        per = 8 // bits
        padded = np.zeros(((n + per - 1) // per) * per, np.uint8)
        padded[:n] = values
        shifts = np.arange(per, dtype=np.uint8) * bits
        packed = np.bitwise_or.reduce(padded.reshape(-1, per) << shifts[None, :], axis=1).astype(np.uint8)
        body = packed.tobytes()
    else:
        body = values.astype(f">u{bits // 8}").tobytes()
    return body + bytes(size - len(body))


# ---------------------------------------------------------------------------- reference counting

def add_refs(counts: np.ndarray, off: np.ndarray, length: np.ndarray, cluster_bits: int, maxval: int,
             weight: np.ndarray | None = None) -> int:
    """Add ``weight`` (default 1) references per cluster touched by each range; return the overflows.

    ``counts`` (contiguous, writable uint32) must cover every touched cluster (callers drop
    ranges past EOF first): a range beyond it, or one wrapping past 2**64, is a FormatError
    and nothing is counted.  Counters saturate at ``maxval``; one already above it stays.
    """
    off = np.ascontiguousarray(off, dtype=np.uint64)
    length = np.ascontiguousarray(length, dtype=np.uint64)
    if weight is not None:
        weight = np.ascontiguousarray(weight, dtype=np.uint32)
    if (not 9 <= cluster_bits <= 30 or maxval < 0 or len(off) != len(length)
            or (weight is not None and len(weight) != len(off)) or not isinstance(counts, np.ndarray)
            or counts.dtype not in _COUNTER_DTYPES or not counts.flags.c_contiguous or not counts.flags.writeable):
        raise FormatError("reference count", None, _ERRORS[-2])
    maxval = min(maxval, int(np.iinfo(counts.dtype).max))
    if _backend == "native":
        w = _p(weight) if weight is not None else _ffi.NULL
        if counts.dtype == np.uint32:
            rc = _lib.isn_add_refs(_p(counts), len(counts), _p(off), _p(length), w, len(off), cluster_bits, maxval)
        else:
            rc = _lib.isn_add_refs_w(_pv(counts), counts.dtype.itemsize, len(counts), _p(off), _p(length), w,
                                     len(off), cluster_bits, maxval)
        return _check(rc, "reference count", None)
    return _add_refs_python(counts, off, length, cluster_bits, maxval, weight)


#: dtypes of computed-reference counters (add_refs, l2_scan): the refcount width decides (tables.counter_dtype)
_COUNTER_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def _pv(arr: np.ndarray) -> object:
    """An untyped C pointer (for ``void *``) into a contiguous numpy array (no copy)."""
    return _ffi.from_buffer("uint8_t[]", arr, require_writable=arr.flags.writeable)


def _add_refs_python(counts: np.ndarray, off: np.ndarray, length: np.ndarray, cluster_bits: int, maxval: int,
                     weight: np.ndarray | None) -> int:
    keep = length > 0
    off, length = off[keep], length[keep]
    w = weight[keep].astype(np.int64) if weight is not None else None
    if not len(off):
        return 0
    if np.any(off > np.uint64(0xFFFFFFFFFFFFFFFF) - (length - np.uint64(1))):
        raise FormatError("reference count", None, _ERRORS[-1])
    first = off >> np.uint64(cluster_bits)
    last = (off + length - np.uint64(1)) >> np.uint64(cluster_bits)
    if int(last.max()) >= len(counts):
        raise FormatError("reference count", None, _ERRORS[-1])
    span = (last - first + np.uint64(1)).astype(np.int64)
    idx = np.repeat(first.astype(np.int64), span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
    wi = np.repeat(w, span) if w is not None else None
    add = np.bincount(idx, weights=wi, minlength=len(counts)).astype(np.int64)
    room = np.int64(maxval) - counts.astype(np.int64)
    overflow = np.clip(add - np.clip(room, 0, None), 0, None)
    counts += (add - overflow).astype(counts.dtype)
    return int(overflow.sum())


# ---------------------------------------------------------------------------- runs

def run_starts(code: np.ndarray, off: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Indices where a new run starts (see native/imgscope_native.h)."""
    code = np.ascontiguousarray(code, dtype=np.uint8)
    off = np.ascontiguousarray(off, dtype=np.uint64)
    step = np.ascontiguousarray(step, dtype=np.uint64)
    n = len(code)
    if not (len(off) == len(step) == n):
        raise FormatError("runs", None, _ERRORS[-2])
    if _backend == "native":
        out = np.empty(n, np.uint64)
        r = _check(_lib.isn_run_starts(_p(code), _p(off), _p(step), n,
                                       _p(out), n), "runs", None)
        return out[:r].astype(np.int64)
    if n == 0:
        return np.empty(0, np.int64)
    brk = np.ones(n, bool)
    brk[1:] = (code[1:] != code[:-1]) | (((code[1:] & OFFSET_VALID) != 0) & (off[1:] != off[:-1] + step[:-1]))
    return np.flatnonzero(brk).astype(np.int64)


# ---------------------------------------------------------------------------- block status

ST_DATA, ST_ZERO, ST_OFFSET_VALID = 1, 2, 4  # imgscope.extents DATA, ZERO, OFFSET_VALID
_KIND_STATUS = np.array([0, ST_DATA | ST_OFFSET_VALID, ST_ZERO, ST_ZERO | ST_OFFSET_VALID, ST_DATA], np.uint8)


def unit_status(kind: np.ndarray, host: np.ndarray, alloc: np.ndarray | None, zero: np.ndarray | None,
                subclusters: int, cluster_size: int, crypto: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """(unit size, status per unit, host offset per unit) of decoded L2 entries (numpy; see isn_unit_runs)."""
    if subclusters > 1:
        unit = cluster_size // subclusters
        bit = np.arange(subclusters, dtype=np.uint32)
        a = ((alloc[:, None] >> bit) & 1).astype(bool)
        z = ((zero[:, None] >> bit) & 1).astype(bool)
        normal = (kind == NORMAL)[:, None]
        comp = (kind == COMPRESSED)[:, None]
        st = np.zeros(a.shape, np.uint8)
        st[normal & a & ~z] = ST_DATA | ST_OFFSET_VALID
        st[normal & z] = ST_ZERO | ST_OFFSET_VALID
        st[normal & ~a & ~z] = ST_OFFSET_VALID  # allocated cluster, subcluster reads from backing
        st[~normal & ~comp & z] = ST_ZERO
        st[np.broadcast_to(comp, st.shape)] = ST_DATA
        off = host[:, None] + (bit.astype(np.uint64) * np.uint64(unit))[None, :]
        status, offset = st.reshape(-1), off.reshape(-1)
    else:
        unit = cluster_size
        status = _KIND_STATUS[kind]
        offset = host
    if crypto:
        status = status & np.uint8(~ST_OFFSET_VALID & 0xFF)
    offset = np.where(status & ST_OFFSET_VALID, offset, np.uint64(0))
    return unit, status, offset


def unit_runs(kind: np.ndarray, host: np.ndarray, alloc: np.ndarray | None, zero: np.ndarray | None,
              subclusters: int, cluster_size: int, crypto: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal block status (first unit index int64, status uint8, host offset uint64)."""
    kind = np.ascontiguousarray(kind, dtype=np.uint8)
    host = np.ascontiguousarray(host, dtype=np.uint64)
    n = len(kind)
    ext = subclusters > 1
    if ext and (alloc is None or zero is None):
        raise FormatError("block status", None, _ERRORS[-2])
    if ext:
        alloc = np.ascontiguousarray(alloc, dtype=np.uint32)
        zero = np.ascontiguousarray(zero, dtype=np.uint32)
    if (subclusters not in (1, 32) or len(host) != n or (ext and (len(alloc) != n or len(zero) != n))
            or (n and int(kind.max()) > COMPRESSED) or not 512 <= cluster_size <= 1 << 30
            or cluster_size & (cluster_size - 1)):
        raise FormatError("block status", None, _ERRORS[-2])
    if _backend == "native":
        cap = n * subclusters
        start, status, offset = np.empty(cap, np.uint64), np.empty(cap, np.uint8), np.empty(cap, np.uint64)
        r = _check(_lib.isn_unit_runs(_p(kind), _p(host), _p(alloc) if ext else _ffi.NULL,
                                      _p(zero) if ext else _ffi.NULL, n, subclusters, cluster_size, int(crypto),
                                      _p(start), _p(status), _p(offset), cap), "block status", None)
        return start[:r].astype(np.int64), status[:r].copy(), offset[:r].copy()
    unit, status, offset = unit_status(kind, host, alloc, zero, subclusters, cluster_size, crypto)
    code = status | np.where(status & ST_OFFSET_VALID, np.uint8(OFFSET_VALID), np.uint8(0)).astype(np.uint8)
    starts = run_starts(code, offset, np.full(len(status), unit, np.uint64))
    return starts, status[starts], offset[starts]


# ---------------------------------------------------------------------------- fused qcow2 check kernels

CMP_UNREADABLE, CMP_ZERO, CMP_LOW, CMP_HIGH = 1, 2, 3, 4
_ONDISK_DTYPES = _COUNTER_DTYPES + (np.dtype(np.uint64),)


def _u8view(buf: object) -> np.ndarray:
    return np.frombuffer(buf, np.uint8) if len(memoryview(buf).cast("B")) else np.zeros(0, np.uint8)


def scan_threads() -> int:
    """Threads for the L2 scan: ``IMGSCOPE_THREADS``, else the CPUs this process may run on (at most 8)."""
    env = os.environ.get("IMGSCOPE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return min(int(env), 8)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class ScanScratch:
    """The zeroed scratch a threaded l2_scan borrows (and leaves zeroed), kept across a check's calls."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = scan_threads() if threads is None else threads
        self.buf = np.zeros(0, np.uint8)
        self.tables = np.zeros(0, np.uint8)

    def get(self, ncounts: int, width: int, ntables: int) -> tuple[int, np.ndarray | None]:
        need = int(_lib.isn_l2_scan_scratch(ncounts, width, self.threads, ntables)) if _backend == "native" else 0
        if not need:
            return 1, None
        if len(self.buf) < need:
            self.buf = np.zeros(need, np.uint8)  # pages are touched only where a thread needs a block
        return self.threads, self.buf

    def table_buffers(self, table_bytes: int) -> np.ndarray:
        """A table's bytes per thread, for a scan that reads the tables."""
        if len(self.tables) < self.threads * table_bytes:
            self.tables = np.empty(self.threads * table_bytes, np.uint8)
        return self.tables


def l2_scan(buf: object, toff: np.ndarray, weight: np.ndarray, active: np.ndarray, l2e: int, cluster_bits: int,
            extended: bool, data_file: bool, file_size: int, counts: np.ndarray, maxval: int,
            ondisk: np.ndarray | RefView, bad: np.ndarray | None,
            scratch: ScanScratch | None = None, fd: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """check_refcounts_l2 + BlockFragInfo over whole L2 tables, table ``t`` at byte ``toff[t]`` of ``buf``.

    Returns (stats int64[5] = compressed, allocated, fragmented, 1 + last cluster counted, overflows;
    dirty uint8 per table).  Dirty tables (1: an entry needing a check_refcounts_l2 finding) are not
    counted: the caller analyses them with the decoded-entry path; tables whose only finding is an
    OFLAG_COPIED mismatch of an active table (2) are counted like clean ones (0).  The on-disk
    refcounts are an array (``bad``: its unreadable ones) or a :class:`RefView`.  With ``scratch`` the
    tables are shared among its threads.  With ``fd``, an open descriptor of the file whose bytes ``buf``
    holds, the native scan reads the tables from it (into ``scratch``'s buffers) rather than touching
    ``buf``.  See isn_l2_scan in native/imgscope_native.h.
    """
    toff = np.ascontiguousarray(toff, dtype=np.uint64)
    weight = np.ascontiguousarray(weight, dtype=np.uint32)
    active = np.ascontiguousarray(active, dtype=np.uint32)
    nt = len(toff)
    if (not 9 <= cluster_bits <= 30 or not 0 < l2e <= 1 << 28 or len(weight) != nt or len(active) != nt
            or not isinstance(counts, np.ndarray) or counts.dtype not in _COUNTER_DTYPES
            or not counts.flags.c_contiguous or not counts.flags.writeable or maxval < 0 or file_size < 0
            or not _ondisk_ok(ondisk, bad)):
        raise FormatError("L2 scan", None, _ERRORS[-2])
    maxval = min(maxval, int(np.iinfo(counts.dtype).max))
    if _backend == "native":
        stats = np.zeros(5, np.int64)
        dirty = np.zeros(nt, np.uint8)
        blen = len(memoryview(buf).cast("B"))
        threads, sbuf = scratch.get(len(counts), counts.dtype.itemsize, nt) if scratch else (1, None)
        od, _keep = _ondisk_arg(ondisk, bad)
        reads = fd >= 0 and scratch is not None
        tbuf = scratch.table_buffers(l2e * (16 if extended else 8)) if reads else None
        rc = _lib.isn_l2_scan(_b(buf) if blen and not reads else _ffi.NULL, blen, _p(toff), _p(weight), _p(active),
                              nt, l2e, cluster_bits, int(extended), int(data_file), file_size, _pv(counts),
                              counts.dtype.itemsize, len(counts), maxval, od,
                              _ffi.cast("int64_t *", _ffi.from_buffer(stats)), _p(dirty), threads,
                              _p(sbuf) if sbuf is not None else _ffi.NULL, len(sbuf) if sbuf is not None else 0,
                              fd if reads else -1, _p(tbuf) if reads else _ffi.NULL, len(tbuf) if reads else 0)
        _check(rc, "L2 scan", None)
        return stats, dirty
    if isinstance(ondisk, RefView):
        ondisk, bad = ondisk.dense(len(counts))
    return _l2_scan_python(_u8view(buf), toff, weight, active, l2e, cluster_bits, extended, data_file, file_size,
                           counts, maxval, ondisk, bad)


def _l2_scan_python(buf: np.ndarray, toff: np.ndarray, weight: np.ndarray, active: np.ndarray, l2e: int, cb: int,
                    extended: bool, data_file: bool, file_size: int, counts: np.ndarray, maxval: int,
                    ondisk: np.ndarray, bad: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    u = np.uint64
    esz = 16 if extended else 8
    tb = l2e * esz
    nt = len(toff)
    raw = np.zeros(nt * tb, np.uint8)
    for k, o in enumerate(toff.tolist()):
        if o < len(buf):
            part = buf[o:o + tb]
            raw[k * tb:k * tb + len(part)] = part
    kind, host, length, flags, alloc, zero = _l2_decode_python(raw.tobytes(), nt * l2e, cb, extended, data_file)
    cs = u(1 << cb)
    fs = u(file_size)
    ncounts = u(len(counts))
    comp = kind == COMPRESSED
    std_alloc = (kind == NORMAL) | (kind == ZERO_ALLOC)

    def past(off: np.ndarray, ln: np.ndarray | np.uint64) -> np.ndarray:
        end = off + ln
        return (end < off) | ((end - np.minimum(end, fs)) >= cs)

    with np.errstate(over="ignore"):
        last = np.where(length > 0, (host + length - u(1)) >> u(cb), u(0))
        anom = comp & (((flags & F_COPIED) != 0) | bool(data_file) | past(host, length) | (last >= ncounts))
        if extended:
            anom |= comp & ((alloc | zero) != 0)
            anom |= std_alloc & ((alloc & zero) != 0)
            anom |= (kind == UNALLOCATED) & (alloc != 0)
        anom |= ~comp & ((flags & F_RESERVED) != 0)
        anom |= std_alloc & ((flags & F_UNALIGNED) != 0)
        if not data_file:
            anom |= std_alloc & (past(host, cs) | ((host >> u(cb)) >= ncounts))
    act_e = np.repeat(active > 0, l2e)
    chk = act_e & std_alloc
    if data_file:
        rc = np.ones(len(kind), np.int64)
        ok = np.ones(len(kind), bool)
    else:
        c = (host >> u(cb)).astype(np.int64)
        inside = chk & (c < len(ondisk))
        rc = np.zeros(len(kind), np.int64)
        rc[inside] = ondisk[c[inside]].astype(np.int64)
        ok = np.ones(len(kind), bool)
        if bad is not None:
            ok[inside] = ~bad[c[inside]]
    cmis = chk & ok & ((rc == 1) != ((flags & F_COPIED) != 0))
    dirty = anom.reshape(nt, l2e).any(axis=1) if nt else np.zeros(0, bool)
    copied = cmis.reshape(nt, l2e).any(axis=1) & ~dirty if nt else np.zeros(0, bool)
    clean = np.repeat(~dirty, l2e)
    wt = np.repeat(weight, l2e)
    sel_c = clean & comp
    sel_d = clean & std_alloc & (not data_file)
    offs = np.concatenate([host[sel_c], host[sel_d]])
    lens = np.concatenate([length[sel_c], np.full(int(sel_d.sum()), cs, u)])
    used = int(((offs + lens - u(1)) >> u(cb)).max()) + 1 if len(offs) else 0
    over = _add_refs_python(counts, offs, lens, cb, maxval, np.concatenate([wt[sel_c], wt[sel_d]])) if len(offs) \
        else 0
    # BlockFragInfo of clean tables with active L1 references (contiguity restarts per table)
    rows = np.flatnonzero(~dirty & (active > 0))
    k2 = kind.reshape(nt, l2e)[rows]
    ncomp = (k2 == COMPRESSED).sum(axis=1)
    std = (k2 == NORMAL) | (k2 == ZERO_ALLOC)
    r, cidx = np.nonzero(std)
    h = host.reshape(nt, l2e)[rows][r, cidx]
    brk = (r[1:] == r[:-1]) & (h[1:] != h[:-1] + cs)
    nfrag = np.bincount(r[1:][brk], minlength=len(rows))
    w = active[rows].astype(np.int64)
    stats = np.array([(w * ncomp).sum(), (w * (ncomp + std.sum(axis=1))).sum(), (w * (ncomp + nfrag)).sum(),
                      used, over], np.int64)
    return stats, np.where(dirty, 1, np.where(copied, 2, 0)).astype(np.uint8)


def refblocks_gather(buf: object, file_size: int, rt: np.ndarray, order: int, cluster_bits: int, n: int,
                     dtype: type, threads: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """On-disk refcounts of clusters [0, n) in ``dtype`` read from the file bytes ``buf``, and a mask of
    the clusters whose refcount block is not cluster aligned (None when there are none); ``threads``
    share the blocks."""
    rt = np.ascontiguousarray(rt, dtype=np.uint64)
    dt = np.dtype(dtype)
    if not 0 <= order <= 6 or not 9 <= cluster_bits <= 30 or n < 0 or dt not in _ONDISK_DTYPES \
            or (1 << order) > 8 * dt.itemsize:
        raise FormatError("refcount blocks", None, _ERRORS[-2])
    out = np.empty(n, dt)
    if _backend == "native":
        blen = len(memoryview(buf).cast("B"))

        def gather(bad: np.ndarray | None) -> int:
            return _check(_lib.isn_refblocks_gather(_b(buf) if blen else _ffi.NULL, blen, file_size, _p(rt),
                                                    len(rt), order, cluster_bits, _pv(out), dt.itemsize, n,
                                                    _pv(bad) if bad is not None else _ffi.NULL, threads),
                          "refcount blocks", None)
        # the mask (n bytes) only when some block is unaligned, which a first pass without it tells
        if not gather(None):
            return out, None
        bad = np.empty(n, np.bool_)
        gather(bad)
        return out, bad
    bad = np.empty(n, np.bool_)
    data = _u8view(buf)
    out[:] = 0
    bad[:] = False
    cs = 1 << cluster_bits
    per_block = cs * 8 >> order
    offs = rt & np.uint64(0xFFFFFFFFFFFFFE00)
    nbad = 0
    for b in np.flatnonzero(offs).tolist():
        lo = b * per_block
        if lo >= n:
            break
        hi = min(n, lo + per_block)
        off = int(offs[b])
        if off % cs:
            bad[lo:hi] = True
            nbad += 1
            continue
        if off >= file_size:
            continue
        block = np.zeros(cs, np.uint8)
        part = data[off:off + cs]
        block[:len(part)] = part
        out[lo:hi] = _refblock_python(block.tobytes(), order, hi - lo).astype(dt)
    return out, (bad if nbad else None)


def _refblock_python(buf: bytes, order: int, n: int) -> np.ndarray:
    with use("python"):
        return refblock_decode(buf, order, n)


RB_NONE, RB_BAD = (1 << 64) - 2, (1 << 64) - 1
_REFT_OFFSET_MASK = np.uint64(0xFFFFFFFFFFFFFE00)


class RefView:
    """On-disk refcounts read in place from the refcount blocks in a file's bytes (isn_ondisk of width 0):
    the block of refcount-table index b is at byte ``blk[b]`` of ``buf``, or reads as zeros (RB_NONE) or
    is unreadable (RB_BAD), as read from the raw refcount table ``rt``.  Made by :func:`refview`; the check
    hands it to l2_scan and refcmp instead of a gathered array (no copy of every refcount)."""

    def __init__(self, buf: object, blk: np.ndarray, rt: np.ndarray, order: int, cluster_bits: int) -> None:
        self.buf, self.blk, self.rt, self.order, self.cluster_bits = buf, blk, rt, order, cluster_bits

    def at(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(refcounts as int64, unreadable mask) of the clusters ``idx``."""
        idx = np.asarray(idx, np.int64)
        shift = self.cluster_bits + 3 - self.order
        b = idx >> shift
        blk = np.full(len(idx), RB_NONE, np.uint64)
        inside = b < len(self.blk)
        blk[inside] = self.blk[b[inside]]
        ok = blk < np.uint64(RB_NONE)
        vals = np.zeros(len(idx), np.int64)
        if ok.any():
            data = np.frombuffer(self.buf, np.uint8)
            k = (idx[ok] & ((1 << shift) - 1)).astype(np.uint64)
            bits = 1 << self.order
            if bits >= 8:
                pos = blk[ok] + k * np.uint64(bits // 8)
                v = np.zeros(len(pos), np.uint64)
                for q in range(bits // 8):
                    v = (v << np.uint64(8)) | data[pos + np.uint64(q)]
            else:
                per = np.uint64(8 // bits)
                v = (data[blk[ok] + k // per].astype(np.uint64) >> ((k % per) * np.uint64(bits))) \
                    & np.uint64((1 << bits) - 1)
            vals[ok] = v.astype(np.int64)
        return vals, blk == np.uint64(RB_BAD)

    def dense(self, n: int, dtype: type = np.uint64) -> tuple[np.ndarray, np.ndarray | None]:
        """The refcounts of clusters [0, n) gathered into an array, and their unreadable mask (or None)."""
        size = len(memoryview(self.buf).cast("B"))
        return refblocks_gather(self.buf, size, self.rt, self.order, self.cluster_bits, n, dtype)


def refview(buf: object, rt: np.ndarray, order: int, cluster_bits: int) -> RefView | None:
    """The refcount table ``rt`` (raw entries) over the file's bytes ``buf`` as a :class:`RefView`, read as
    refblocks_gather reads it (a block at or past the end reads as zeros, an unaligned one is
    unreadable); None when a block runs past the end of ``buf`` (only a gather zero-fills its tail)."""
    if not 0 <= order <= 6 or not 9 <= cluster_bits <= 30:
        raise FormatError("refcount blocks", None, _ERRORS[-2])
    cs = np.uint64(1 << cluster_bits)
    size = np.uint64(len(memoryview(buf).cast("B")))
    rt = np.ascontiguousarray(rt, np.uint64)
    off = rt & _REFT_OFFSET_MASK
    bad = (off != 0) & (off % cs != 0)
    none = (off == 0) | (~bad & (off >= size))
    if (~none & ~bad & (size - np.minimum(off, size) < cs)).any():
        return None
    blk = np.where(bad, np.uint64(RB_BAD), np.where(none, np.uint64(RB_NONE), off)).astype(np.uint64)
    return RefView(buf, blk, rt, order, cluster_bits)


def refcounts_at(ondisk: np.ndarray | RefView, bad: np.ndarray | None,
                 idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(on-disk refcounts as int64, unreadable mask) of the clusters ``idx`` (0 past an array's end)."""
    idx = np.asarray(idx, np.int64)
    if isinstance(ondisk, RefView):
        return ondisk.at(idx)
    vals = np.zeros(len(idx), np.int64)
    ok = idx < len(ondisk)
    vals[ok] = ondisk[idx[ok]].astype(np.int64)
    unreadable = np.zeros(len(idx), bool)
    if bad is not None:
        unreadable[ok] = bad[idx[ok]]
    return vals, unreadable


def _ondisk_ok(ondisk: np.ndarray | RefView, bad: np.ndarray | None) -> bool:
    if isinstance(ondisk, RefView):
        return bad is None and ondisk.blk.dtype == np.uint64 and ondisk.blk.flags.c_contiguous
    return (isinstance(ondisk, np.ndarray) and ondisk.dtype in _ONDISK_DTYPES and ondisk.flags.c_contiguous
            and (bad is None or (bad.dtype == np.bool_ and len(bad) == len(ondisk) and bad.flags.c_contiguous)))


def _ondisk_arg(ondisk: np.ndarray | RefView, bad: np.ndarray | None) -> tuple[object, list]:
    """The isn_ondisk for the kernels, and the buffers it points into (the caller keeps them alive)."""
    s = _ffi.new("isn_ondisk *")
    if isinstance(ondisk, RefView):
        size = len(memoryview(ondisk.buf).cast("B"))
        keep = [_b(ondisk.buf) if size else _ffi.NULL, _p(ondisk.blk)]
        s.base, s.baselen, s.blk, s.nblk = keep[0], size, keep[1], len(ondisk.blk)
        s.order, s.cluster_bits = ondisk.order, ondisk.cluster_bits
    else:
        keep = [_pv(ondisk), _pv(bad) if bad is not None else _ffi.NULL]
        s.width, s.dense, s.n, s.bad = ondisk.dtype.itemsize, keep[0], len(ondisk), keep[1]
    return s, keep


def refcmp(ondisk: np.ndarray | RefView, computed: np.ndarray, bad: np.ndarray | None,
           threads: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """compare_refcounts of clusters [0, len(computed)): (cluster indices ascending, CMP_* code each, last
    used cluster or -1).  ``ondisk`` is an array of that length (``bad``: its unreadable ones) or a RefView."""
    n = len(computed)
    if not isinstance(ondisk, RefView):
        ondisk = np.ascontiguousarray(ondisk)
    if ((not isinstance(ondisk, RefView) and len(ondisk) != n) or computed.dtype not in _COUNTER_DTYPES
            or not _ondisk_ok(ondisk, bad)):
        raise FormatError("refcount comparison", None, _ERRORS[-2])
    if _backend == "native":
        computed = np.ascontiguousarray(computed)
        od, _keep = _ondisk_arg(ondisk, bad)
        cap = 1024
        while True:
            idx, what = np.empty(cap, np.uint64), np.empty(cap, np.uint8)
            last = _ffi.new("int64_t *")
            r = _check(_lib.isn_refcmp(od, _pv(computed), computed.dtype.itemsize, n, _p(idx), _p(what), cap, last,
                                       threads),
                       "refcount comparison", None)
            if r <= cap:
                return idx[:r].astype(np.int64), what[:r].copy(), int(last[0])
            cap = r
    if isinstance(ondisk, RefView):
        ondisk, bad = ondisk.dense(n)
    what = np.zeros(n, np.uint8)
    diff = ondisk != computed
    if bad is not None:
        diff &= ~bad
        what[bad] = CMP_UNREADABLE
    zero = diff & (ondisk == 0)
    what[zero] = CMP_ZERO
    what[diff & ~zero & (ondisk < computed)] = CMP_LOW
    what[diff & (ondisk > computed)] = CMP_HIGH
    used = (ondisk > 0) | (computed > 0)
    if bad is not None:
        used &= ~bad
    last = (n - 1 - int(np.argmax(used[::-1]))) if used.any() else -1
    idx = np.flatnonzero(what)
    return idx.astype(np.int64), what[idx], last
