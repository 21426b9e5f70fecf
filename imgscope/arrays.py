"""Small numpy helpers shared by the table walks.

``unique`` exists because ``np.unique`` without ``return_*`` arguments hashes in
numpy 2.x, which is one to two orders of magnitude slower than sorting for the
large, wide-ranged offset arrays imgscope handles (1 Mi random offsets: 0.44 s
against 8 ms), and because its first call imports numpy.ma (7-20 ms of a
whole-process check).
"""
from __future__ import annotations

import numpy as np


def unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of the 1-D array ``a`` (``np.unique(a)``, by sorting)."""
    s = np.sort(np.asarray(a).reshape(-1))
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]
