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

from imgscope import native
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
    print("hostile ok")


if __name__ == "__main__":
    {"canary": canary, "hostile": hostile}[sys.argv[1]]()
