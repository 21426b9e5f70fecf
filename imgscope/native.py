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
           -3: "value does not fit the encoding"}

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
            or counts.dtype != np.uint32 or not counts.flags.c_contiguous or not counts.flags.writeable):
        raise FormatError("reference count", None, _ERRORS[-2])
    maxval = min(maxval, 0xFFFFFFFF)
    if _backend == "native":
        rc = _lib.isn_add_refs(_p(counts), len(counts), _p(off), _p(length),
                               _p(weight) if weight is not None else _ffi.NULL, len(off), cluster_bits, maxval)
        return _check(rc, "reference count", None)
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
    counts += (add - overflow).astype(np.uint32)
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
