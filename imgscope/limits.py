"""Resource limits applied while decoding untrusted images (see docs/security.md).

The defaults follow qemu's own limits where qemu has one.  Change them through
:data:`LIMITS` (e.g. ``imgscope.limits.LIMITS["max_l1_bytes"] = 64 << 20``).
"""
from __future__ import annotations

from .errors import LimitError

LIMITS: dict[str, int] = {
    # qcow2 (qemu: QCOW_MAX_L1_SIZE 32 MiB, QCOW_MAX_REFTABLE_SIZE 8 MiB,
    # QCOW_MAX_SNAPSHOTS 65536, QCOW_MAX_SNAPSHOTS_SIZE 64 MiB, extra data 1024)
    "max_l1_bytes": 32 << 20,
    "max_reftable_bytes": 8 << 20,
    "max_snapshots": 65536,
    "max_snapshot_table_bytes": 64 << 20,
    "max_snapshot_extra": 1024,
    "max_extensions": 1024,
    "max_bitmaps": 65535,
    "max_bitmap_directory_bytes": 64 << 20,
    # total bytes of lookup tables decoded for one layer walk
    "max_metadata_bytes": 16 << 30,
    "max_chain_depth": 64,
    "max_descriptor_bytes": 1 << 20,
}


def enforce(name: str, value: int, structure: str, offset: int | None = None) -> int:
    """Return ``value`` or raise :class:`LimitError` when it exceeds ``LIMITS[name]``."""
    maximum = LIMITS[name]
    if value > maximum:
        raise LimitError(structure, offset, name, value, maximum)
    return value
