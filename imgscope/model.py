"""The format-neutral model every driver translates into (see docs/architecture.md).

Kept free of numpy at import time: ``imgscope info`` must not pay for numpy or
pandas.  Arrays appear only in the objects built by table walks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: guest cluster kinds (codes shared with imgscope.native)
KINDS = ("unallocated", "data", "zero", "zero_alloc", "compressed")
UNALLOCATED, DATA, ZERO, ZERO_ALLOC, COMPRESSED = range(5)

#: host cluster roles, in bit order of the role mask
ROLES = (
    "header", "l1", "l2", "refcount_table", "refcount_block", "snapshot_table",
    "bitmap_directory", "bitmap_table", "bitmap_data", "crypto", "data", "compressed",
)
ROLE_BIT = {name: i for i, name in enumerate(ROLES)}
METADATA_ROLES = frozenset(ROLES) - {"data", "compressed", "l2"}


@dataclass
class Snapshot:
    """One snapshot-table entry, in table order (internal snapshots)."""

    index: int
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    disk_size: int | None
    icount: int | None
    extra_data_size: int
    entry_offset: int
    entry_length: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GuestMap:
    """One layer's guest→host mapping, one slot per guest cluster.

    Arrays (numpy): ``kind`` uint8 (KINDS), ``host`` uint64, ``length`` uint64
    (host bytes referenced), ``flags`` uint8 (imgscope.native F_*), ``alloc``/``zero``
    uint32 extended-L2 bitmaps, ``table`` uint64 (host offset of the lookup table
    holding the entry, 0 if none).
    """

    layer: str
    cluster_size: int
    virtual_size: int
    kind: Any
    host: Any
    length: Any
    flags: Any
    alloc: Any
    zero: Any
    table: Any
    subclusters: int = 1
