"""Shrink a crashing image while a predicate still holds (for tests/hostile/regressions/).

    minimize(data, predicate) -> smaller bytes

Greedy, format-agnostic: cut the tail, then zero blocks of 64 KiB down to 8
bytes wherever the predicate survives.  Zeroed blocks compress to nothing, so
a minimised regression image gzips to a few hundred bytes.
"""
from __future__ import annotations

from collections.abc import Callable


def minimize(data: bytes, predicate: Callable[[bytes], bool], smallest: int = 8) -> bytes:
    if not predicate(data):
        raise ValueError("the predicate does not hold for the input")
    buf = bytearray(data)
    while len(buf) > 1 and predicate(bytes(buf[:len(buf) // 2])):
        del buf[len(buf) // 2:]
    block = 1 << 16
    while block >= smallest:
        for start in range(0, len(buf), block):
            piece = buf[start:start + block]
            if not any(piece):
                continue
            trial = bytearray(buf)
            trial[start:start + block] = bytes(len(piece))
            if predicate(bytes(trial)):
                buf = trial
        block //= 8
    return bytes(buf)
