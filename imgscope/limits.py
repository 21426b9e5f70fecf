"""Resource limits applied while decoding untrusted images (see docs/security.md).

Every size or count read from an image is checked against one of these limits
*before* anything is allocated for it, so a header that claims a 2^32-entry
table costs nothing.  The defaults follow qemu's own limits where qemu has one
(the value is in the comment); the others bound imgscope's memory.

Raise a limit for one process with ``IMGSCOPE_LIMITS="max_l1_bytes=64M,..."``,
the global CLI option ``imgscope --limit max_l1_bytes=64M ...``, or in Python::

    with imgscope.limits.override(max_l1_bytes=64 << 20):
        ...
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from .errors import ImgscopeError, LimitError

#: the documented defaults (docs/security.md lists each with qemu's value)
DEFAULTS: dict[str, int] = {
    # qcow2 (qemu block/qcow2.h)
    "max_l1_bytes": 32 << 20,              # QCOW_MAX_L1_SIZE
    "max_reftable_bytes": 8 << 20,         # QCOW_MAX_REFTABLE_SIZE
    "max_snapshots": 65536,                # QCOW_MAX_SNAPSHOTS
    "max_snapshot_table_bytes": 64 << 20,  # QCOW_MAX_SNAPSHOTS_SIZE
    "max_snapshot_extra": 1024,            # QCOW_MAX_SNAPSHOT_EXTRA_DATA
    "max_extensions": 1024,                # qemu: bounded only by cluster 0
    "max_bitmaps": 65535,                  # QCOW2_MAX_BITMAPS
    "max_bitmap_directory_bytes": 64 << 20,  # QCOW2_MAX_BITMAP_DIRECTORY_SIZE
    # any format: bytes of lookup tables (L2, grain tables, BAT...) decoded for one image
    "max_metadata_bytes": 1 << 30,
    # any format: guest clusters in one per-cluster map (mapping(), map, check)
    "max_guest_clusters": 1 << 27,
    # any format: entries of one top-level table (BAT, grain directory, QED L1...)
    "max_table_bytes": 256 << 20,
    # any format: rows of one findings frame (check().findings builds a Python message per row; the
    # counts, JSON and grouped output never need the rows)
    "max_finding_rows": 1 << 20,
    # backing chains, VMDK extents, VHD parent locators
    "max_chain_depth": 64,
    "max_extents": 1024,
    # VMDK text descriptor (qemu reads at most 1 MiB - 1)
    "max_descriptor_bytes": 1 << 20,
}

#: the limits in force (mutable; see :func:`override` and :func:`configure`)
LIMITS: dict[str, int] = dict(DEFAULTS)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_VALUE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.I)


def enforce(name: str, value: int, structure: str, offset: int | None = None) -> int:
    """Return ``value`` or raise :class:`LimitError` when it exceeds ``LIMITS[name]``."""
    maximum = LIMITS[name]
    if value > maximum:
        raise LimitError(structure, offset, name, value, maximum)
    return value


def parse(spec: str) -> dict[str, int]:
    """``"name=value,name=value"`` (values may end in K, M, G, T) -> {name: int}.

    Unknown names and malformed values are an :class:`ImgscopeError` naming them.
    """
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if name not in DEFAULTS:
            raise ImgscopeError(f"unknown limit {name!r} (known: {', '.join(sorted(DEFAULTS))})")
        m = _VALUE.match(raw) if sep else None
        if m is None:
            raise ImgscopeError(f"limit {name}: {raw!r} is not a size (e.g. {name}=64M)")
        out[name] = int(m.group(1)) * _UNITS[m.group(2).lower()]
    return out


def configure(spec: str | dict[str, int]) -> None:
    """Change limits for the rest of the process (``--limit`` and ``IMGSCOPE_LIMITS``)."""
    LIMITS.update(parse(spec) if isinstance(spec, str) else _known(spec))


@contextlib.contextmanager
def override(**values: int) -> Iterator[dict[str, int]]:
    """Temporarily change limits (tests, fuzzing, one big image in a notebook)."""
    old = dict(LIMITS)
    LIMITS.update(_known(values))
    try:
        yield LIMITS
    finally:
        LIMITS.clear()
        LIMITS.update(old)


def _known(values: dict[str, int]) -> dict[str, int]:
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise ImgscopeError(f"unknown limit(s) {', '.join(sorted(unknown))}")
    return {k: int(v) for k, v in values.items()}


if os.environ.get("IMGSCOPE_LIMITS"):
    configure(os.environ["IMGSCOPE_LIMITS"])
