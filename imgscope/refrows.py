"""Reference rows: every byte range an image file references in itself.

Each driver's ``reference_rows()`` returns one :class:`RefRows` (the input of
``clusters()`` and of the checks): per range its host offset, length, role
(bit of :data:`imgscope.model.ROLES`), owning layer (0 = active, k = snapshot
k - 1; :data:`GLOBAL` for file-wide metadata, :data:`SHARED` for several
layers) and weight (how many references the row stands for).  Drivers build
the parts with :func:`ranges` and join them with :meth:`RefRows.join`.
Imported by table walks only (numpy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .model import ROLE_BIT

GLOBAL, SHARED = -1, -2
U64_MAX = (1 << 64) - 1
_DTYPES = (np.uint64, np.uint64, np.uint8, np.int32, np.uint32)


@dataclass
class RefRows:
    off: np.ndarray     # uint64 host offset
    length: np.ndarray  # uint64 bytes
    role: np.ndarray    # uint8 ROLE_BIT
    owner: np.ndarray   # int32 layer, GLOBAL or SHARED
    weight: np.ndarray  # uint32 references

    @classmethod
    def join(cls, parts: list[tuple]) -> RefRows:
        """Concatenate parts (five columns each, as :func:`ranges` returns them) into one set of rows.

        Consumes ``parts`` (the list is emptied): each column's pieces are released as soon as
        that column is joined, so joining needs little more memory than the rows themselves."""
        cols = [list(c) for c in zip(*parts)] if parts else [[], [], [], [], []]
        parts.clear()
        out = []
        for i, dt in enumerate(_DTYPES):
            col, cols[i] = cols[i], []
            out.append(np.concatenate([np.asarray(c, dt).reshape(-1) for c in col]) if col else np.zeros(0, dt))
            del col
        return cls(*out)


def ranges(off: Any, length: Any, role: str, owner: Any = GLOBAL, weight: Any = 1) -> tuple:
    """One part of the rows: the ranges at ``off`` (one offset or an array of them), all of ``role``.

    ``length``, ``owner`` and ``weight`` are one value for every range or an array
    matching ``off``.  A single offset or length past 2^64 (sector fields times 512)
    is clamped to 2^64 - 1: such a range lies past the end of the file and is dropped there.
    """
    if isinstance(off, int):
        off = min(off, U64_MAX)
    if isinstance(length, int):
        length = min(length, U64_MAX)
    off = np.asarray(off, np.uint64).reshape(-1)
    n = len(off)
    return (off, _column(length, n, np.uint64), np.full(n, ROLE_BIT[role], np.uint8), _column(owner, n, np.int32),
            _column(weight, n, np.uint32))


def _column(value: Any, n: int, dtype: type) -> np.ndarray:
    a = np.asarray(value, dtype)
    return np.full(n, a, dtype) if a.ndim == 0 else a.reshape(-1)
