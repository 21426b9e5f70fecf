"""Run under the sanitizer build by test_asan.py: every native function on hostile buffers.

``canary`` deliberately lies about a buffer length so the test can prove
AddressSanitizer is really watching; ``hostile`` calls each C function with
claims the buffers do not back (it must refuse them), random tables through
both backends (results must agree) and extreme values.
"""
from __future__ import annotations

import random
import sys

import numpy as np

from imgscope import FormatError, native
from imgscope._native import ffi, lib

assert native.available, "sanitizer build not loaded"


def u8(a):
    return ffi.from_buffer("uint8_t[]", a)


def u32(a):
    return ffi.from_buffer("uint32_t[]", a)


def u64(a):
    return ffi.from_buffer("uint64_t[]", a)


def canary() -> None:
    buf = np.zeros(17, np.uint8)
    out = np.zeros(64, np.uint64)
    lib.isn_be64_decode(u8(buf), 512, 64, u64(out))  # lies: 512 bytes claimed, 17 given


def hostile() -> None:
    rng = random.Random(7)
    for trial in range(300):
        size = rng.choice([0, 1, 7, 8, 15, 16, 511, 512, 4096])
        buf = np.frombuffer(rng.randbytes(size), np.uint8).copy()
        n = rng.choice([0, 1, size // 8, size // 8 + 1, size // 16 + 1, 1 << 20])
        m = min(n, 4096)
        out = np.zeros(m, np.uint64)
        rc = lib.isn_be64_decode(u8(buf), size, n, u64(out)) if n == m else lib.isn_be64_decode(u8(buf), size, n,
                                                                                                ffi.NULL)
        assert (rc == 0) == (n <= size // 8), (rc, n, size)
        cb = rng.choice([0, 8, 9, 12, 16, 21, 30, 31, 64])
        ext = rng.random() < 0.5
        k = np.zeros(m, np.uint8), np.zeros(m, np.uint64), np.zeros(m, np.uint64), np.zeros(m, np.uint8)
        b = np.zeros(m, np.uint32), np.zeros(m, np.uint32)
        if n == m:
            rc = lib.isn_l2_decode(u8(buf), size, n, cb, int(ext), 0, u8(k[0]), u64(k[1]), u64(k[2]), u8(k[3]),
                                   u32(b[0]), u32(b[1]))
            assert rc == (-2 if not 9 <= cb <= 30 else (0 if n * (16 if ext else 8) <= size else -1)), rc
            if rc == 0 and n:
                with native.use("python"):
                    twin = native.l2_decode(bytes(buf), n, cb, ext, False)
                assert all((x == y).all() for x, y in zip(k + b, twin)), "native and numpy disagree"
        order = rng.choice([-1, 0, 3, 4, 6, 7])
        if n == m:
            rc = lib.isn_refblock_decode(u8(buf), size, order, n, u64(out))
            assert rc == (-2 if not 0 <= order <= 6 else (0 if n * (1 << order) <= size * 8 else -1)), rc
        counts = np.zeros(rng.choice([0, 1, 64]), np.uint32)
        offs = np.array([rng.choice([0, 511, 1 << 63, 2**64 - 1, 4096 * 63]) for _ in range(4)], np.uint64)
        lens = np.array([rng.choice([0, 1, 4096, 2**64 - 1, 1 << 40]) for _ in range(4)], np.uint64)
        rc = lib.isn_add_refs(u32(counts), len(counts), u64(offs), u64(lens), ffi.NULL, 4, 12, 3)
        assert rc >= 0 or rc == -1, rc
        assert (counts <= 3).all()
        code = np.frombuffer(rng.randbytes(m), np.uint8).copy()
        starts = np.zeros(max(m // 2, 1), np.uint64)
        steps = np.full(m, 512, np.uint64)
        rc = lib.isn_run_starts(u8(code), u64(out), u64(steps), m, u64(starts), len(starts))
        assert rc >= 0 or rc == -1, rc
        kinds = np.frombuffer(rng.randbytes(m), np.uint8) % 6
        st8, off64 = np.zeros(max(m, 1), np.uint8), np.zeros(max(m, 1), np.uint64)
        start = np.zeros(max(m, 1), np.uint64)
        rc = lib.isn_unit_runs(u8(kinds.copy()), u64(out), ffi.NULL, ffi.NULL, m, 1, 1 << 12, trial & 1,
                               u64(start), u8(st8), u64(off64), max(m, 1))
        assert rc >= 0 or rc in (-1, -2), rc
        kernels(rng, buf)
    strided = np.zeros(128, np.bool_)[::2]  # a mask the C code could not walk: refused on both paths
    for name in ("native", "python"):
        with native.use(name):
            for call in (lambda: native.refcmp(np.zeros(64, np.uint16), np.zeros(64, np.uint16), strided),
                         lambda: native.l2_scan(bytes(64), np.zeros(1, np.uint64), np.ones(1, np.uint32),
                                                np.ones(1, np.uint32), 8, 9, False, False, 64,
                                                np.zeros(64, np.uint16), 1, np.zeros(64, np.uint16), strided)):
                try:
                    call()
                except FormatError:
                    continue
                raise AssertionError(f"{name}: a strided mask was accepted")
    print("hostile ok")


def _twins(call):
    """``call()`` on the native path and on the numpy twin."""
    out = []
    for name in ("native", "python"):
        with native.use(name):
            out.append(call())
    return out


def _l2_entries(rng: random.Random, size: int, cb: int) -> np.ndarray:
    """Bytes of plausible L2 entries (allocated, COPIED, compressed, zero, now and then garbage) to reach the
    counting paths."""
    vals = [rng.choice([0, 0, (rng.randrange(1, 16) << cb) | (rng.getrandbits(1) << 63), 1,
                        (1 << 62) | rng.randrange(16 << cb)] + [rng.getrandbits(64)] * (rng.random() < 0.02))
            for _ in range(size // 8)]
    return np.frombuffer(np.array(vals, ">u8").tobytes() + bytes(size % 8), np.uint8).copy()


def _scan(rng: random.Random, buf: np.ndarray, cb: int, past: list[int]) -> None:
    """isn_l2_scan and its twin on tables in, across and past the end of ``buf``."""
    size = len(buf)
    toff = np.array([rng.choice([0, 8, size // 16 * 8] if rng.random() < 0.7 else past) % 2**64
                     for _ in range(rng.choice([0, 1, 3, 3]))], np.uint64)
    nt = len(toff)
    weight = np.array([rng.choice([1, 2, 2**32 - 1]) for _ in range(nt)], np.uint32)
    active = np.array([rng.choice([0, 1, 5]) for _ in range(nt)], np.uint32)
    l2e, ext = rng.choice([1, 8, 64]), rng.random() < 0.2
    file_size = rng.choice([0, size, 1 << 24, 2**64 - 1])
    cdt = rng.choice([np.uint8, np.uint16, np.uint32])
    ncounts = rng.choice([0, 64, 4096, 4096])
    maxval = rng.choice([0, 1, 2**16 - 1, 2**64 - 1])
    ondisk = np.frombuffer(rng.randbytes(2 * ncounts), np.uint16) % 3
    bad = (np.frombuffer(rng.randbytes(ncounts), np.uint8) < 16) if rng.random() < 0.3 else None

    def scan():
        counts = np.zeros(ncounts, cdt)
        stats, dirty = native.l2_scan(buf, toff, weight, active, l2e, cb, ext, False, file_size, counts, maxval,
                                      ondisk, bad)
        return stats, dirty, counts
    (s1, d1, c1), (s2, d2, c2) = _twins(scan)
    assert (d1 == d2).all() and (s1[:4] == s2[:4]).all() and (s1[4] or not s2[4]), (toff, s1, s2, d1, d2)
    if not s1[4]:  # after any overflow the caller discards the counters and redoes the check in numpy
        assert (s1 == s2).all() and (c1 == c2).all(), (toff, s1, s2)


def kernels(rng: random.Random, buf: np.ndarray) -> None:
    """The fused check kernels (native/check.c) through their wrappers, with offsets near 2^64, tables
    past the buffer, every counter width and saturation: the C path and the numpy twin must agree."""
    size = len(buf)
    cb = rng.choice([9, 12, 16])
    if rng.random() < 0.7:
        buf = _l2_entries(rng, size, cb)
    past = [size - 1, size, size + 8, 1 << 56, 2**64 - 8, 2**64 - 512, 2**64 - (1 << 20)]
    for _ in range(3):
        _scan(rng, buf, cb, past)
    cdt = rng.choice([np.uint8, np.uint16, np.uint32])
    ncounts = rng.choice([0, 64, 4096, 4096])
    maxval = rng.choice([0, 1, 2**16 - 1, 2**64 - 1])

    # refcount blocks: a file with aligned, unaligned, past-EOF and near-2^64 block offsets
    gbuf = np.frombuffer(rng.randbytes(rng.choice([0, 512, 8192, 70000])), np.uint8)
    order = rng.choice([0, 3, 4, 6])
    odt = rng.choice([np.uint8, np.uint16, np.uint32, np.uint64][{0: 0, 3: 0, 4: 1, 6: 3}[order]:])
    blocks = [rng.randrange(1, 1 + max(len(gbuf) >> cb, 1)) << cb, 512, 4096, 0] + past
    rt = np.array([rng.choice(blocks) % 2**64 for _ in range(rng.choice([0, 1, 4]))], np.uint64)
    n = rng.choice([0, 1, 100, 5000])
    gsize = rng.choice([len(gbuf), 2**64 - 1])
    (o1, b1), (o2, b2) = _twins(lambda: native.refblocks_gather(gbuf, gsize, rt, order, cb, n, odt))
    assert (o1 == o2).all() and (b1 is None) == (b2 is None) and (b1 is None or (b1 == b2).all()), (rt, order)

    computed = np.frombuffer(rng.randbytes(len(o1) * np.dtype(cdt).itemsize), cdt) % 3
    gbad = (np.frombuffer(rng.randbytes(len(o1)), np.uint8) < 16) if rng.random() < 0.3 else None
    (i1, w1, l1), (i2, w2, l2) = _twins(lambda: native.refcmp(o1, computed, gbad))
    assert (i1 == i2).all() and (w1 == w2).all() and l1 == l2

    nr = rng.choice([1, 2, 4])
    offs = np.array([rng.choice([0, 511, 4096, 1 << 16, 1 << 63, 2**64 - 1]) for _ in range(nr)], np.uint64)
    lens = np.array([rng.choice([0, 1, 4096, 1 << 16, 1 << 40, 2**64 - 1]) for _ in range(nr)], np.uint64)
    wdt = rng.choice([np.uint8, np.uint16])  # the width-generic counter (uint32 is exercised above)

    def add():
        counts = np.full(ncounts, 250, wdt)
        try:
            return native.add_refs(counts, offs, lens, cb, maxval, weight=np.full(nr, 7, np.uint32)), counts
        except FormatError as exc:
            return str(exc), counts
    (r1, a1), (r2, a2) = _twins(add)
    assert r1 == r2 and (a1 == a2).all(), (offs, lens, r1, r2)


if __name__ == "__main__":
    {"canary": canary, "hostile": hostile}[sys.argv[1]]()
