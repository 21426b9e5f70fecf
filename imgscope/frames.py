"""pandas frames built from the neutral model — the public data contract.

Every column is documented in docs/frames.md.  Offsets are uint64 (exact for
any 64-bit value), kinds and roles are categoricals, nullable integers
(``UInt64``) mark values a format or entry may not have.  All frames
round-trip through Parquet.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import native
from .errors import FormatError
from .extents import ALLOCATED, DATA, OFFSET_VALID, ZERO, resolve
from .model import KINDS, ROLES

KIND_DTYPE = pd.CategoricalDtype(list(KINDS))
ROLE_DTYPE = pd.CategoricalDtype(list(ROLES) + ["free", "leaked", "mixed"])
FEATURE_KIND_DTYPE = pd.CategoricalDtype(["incompatible", "compatible", "autoclear"])


def header_series(img: Any) -> pd.Series:
    fields = img.header_fields()
    fields = {"format": img.format, "virtual_size": img.virtual_size, **fields}
    return pd.Series(fields, name=img.path, dtype=object)


def features_frame(img: Any) -> pd.DataFrame:
    rows = img.feature_rows()
    df = pd.DataFrame(rows, columns=["name", "kind", "bit", "set", "known", "table_name"])
    return df.astype({"name": "string", "kind": FEATURE_KIND_DTYPE, "bit": "uint8", "set": bool, "known": bool,
                      "table_name": "string"})


def extensions_frame(img: Any) -> pd.DataFrame:
    rows = img.extension_rows()
    for r in rows:  # e.g. a seSparse header's capacity of 2^56 sectors: 2^65 bytes
        if not (0 <= r["offset"] < 1 << 64 and 0 <= r["length"] < 1 << 64):
            raise FormatError(f"{img.format} {r['name']}", None,
                              f"offset {r['offset']} or length {r['length']} does not fit in 64 bits")
    df = pd.DataFrame(rows, columns=["type", "name", "offset", "length", "decoded", "raw"])
    # length is uint64: a VMDK extent's row holds its size in bytes (a 10 GiB extent wrapped in uint32)
    return df.astype({"type": "uint32", "name": "string", "offset": "uint64", "length": "uint64",
                      "decoded": "string"})


def snapshots_frame(img: Any) -> pd.DataFrame:
    snaps = img.snapshot_list()
    cols = {
        "index": ("int64", [s.index for s in snaps]),
        "id": ("string", [s.id for s in snaps]),
        "name": ("string", [s.name for s in snaps]),
        "date": ("datetime64[ns, UTC]", pd.to_datetime([s.date_sec * 1_000_000_000 + s.date_nsec for s in snaps],
                                                      utc=True)),
        "date_sec": ("uint32", [s.date_sec for s in snaps]),
        "date_nsec": ("uint32", [s.date_nsec for s in snaps]),
        "vm_clock_nsec": ("uint64", [s.vm_clock_nsec for s in snaps]),
        "vm_state_size": ("uint64", [s.vm_state_size for s in snaps]),
        "disk_size": ("UInt64", [s.disk_size for s in snaps]),
        "icount": ("UInt64", [s.icount for s in snaps]),
        "l1_table_offset": ("uint64", [s.l1_table_offset for s in snaps]),
        "l1_size": ("uint32", [s.l1_size for s in snaps]),
        "extra_data_size": ("uint32", [s.extra_data_size for s in snaps]),
        "entry_offset": ("uint64", [s.entry_offset for s in snaps]),
        "entry_length": ("uint32", [s.entry_length for s in snaps]),
    }
    return pd.DataFrame({k: pd.Series(v, dtype=dt) for k, (dt, v) in cols.items()})


def mapping_frame(img: Any, layer: str | int = "active", merge: bool = False) -> pd.DataFrame:
    """Guest→host mapping of one layer, per guest cluster or merged into extents."""
    gm = img.guest_map(layer)
    if merge:
        return _merged(img, gm)
    n = len(gm.kind)
    cs = gm.cluster_size
    kind = pd.Categorical.from_codes(gm.kind.astype(np.int8), dtype=KIND_DTYPE)
    data = {
        "guest_offset": np.arange(n, dtype=np.uint64) * np.uint64(cs),
        "kind": kind,
        "host_offset": gm.host,
        "host_length": gm.length.astype(np.uint64, copy=False),  # documented uint64 (maps may store uint32)
        "copied": (gm.flags & native.F_COPIED).astype(bool),
        "flags": gm.flags,
    }
    if gm.subclusters > 1:
        data["subcluster_alloc"] = gm.alloc
        data["subcluster_zero"] = gm.zero
    df = pd.DataFrame(data)
    df.attrs.update(layer=gm.layer, cluster_size=cs, virtual_size=gm.virtual_size)
    return df


def _merged(img: Any, gm: Any) -> pd.DataFrame:
    top = img.layer_extents(gm.layer)
    chain = img.chain()
    start, length, depth, st, off = resolve([top] + [i.extents() for i in chain[1:]])
    df = pd.DataFrame({
        "guest_offset": start.astype(np.uint64), "length": length.astype(np.uint64), "depth": depth.astype(np.uint8),
        "present": (st & ALLOCATED) != 0, "zero": (st & ZERO) != 0, "data": (st & DATA) != 0,
        "host_offset": pd.array(np.where(st & OFFSET_VALID, off, 0), dtype="UInt64"),
    })
    df.loc[(st & OFFSET_VALID) == 0, "host_offset"] = pd.NA
    df.attrs.update(layer=gm.layer)
    return df


#: reference rows expanded to clusters per pass of clusters_frame (bounds its temporary memory)
CLUSTER_PASS_ROWS = 1 << 20


def clusters_frame(img: Any) -> pd.DataFrame:
    """One row per host cluster: roles, owner, on-disk refcount, computed references.

    Drivers supply ``reference_rows()`` (every byte range the file references, with
    role, owning layer and weight), ``refcounts(n)`` (on-disk counters, or None for
    formats without them) and optionally ``shared_by(n)``.  Besides the frame itself,
    memory is a few bytes per cluster: the rows are folded in a pass at a time.
    """
    cs = img.cluster_size
    cb = cs.bit_length() - 1
    rows = img.reference_rows()
    nfile = -(-img.src.size // cs)
    ncl = nfile + 1
    refs = np.zeros(ncl, np.uint32)
    mask = np.zeros(ncl, np.uint32)            # role bits
    omin = np.full(ncl, np.iinfo(np.int32).max, np.int32)
    omax = np.full(ncl, np.iinfo(np.int32).min, np.int32)
    for a in range(0, len(rows.off), CLUSTER_PASS_ROWS):
        sl = slice(a, a + CLUSTER_PASS_ROWS)
        off, length = rows.off[sl], rows.length[sl]
        ends = off + np.maximum(length, np.uint64(1)) - np.uint64(1)
        keep = (length > 0) & (off <= ends) & ((ends >> np.uint64(cb)) < np.uint64(ncl))
        off, length, ends, role, owner = off[keep], length[keep], ends[keep], rows.role[sl][keep], rows.owner[sl][keep]
        native.add_refs(refs, off, length, cb, 0xFFFFFFFF, rows.weight[sl][keep])
        cl = (off >> np.uint64(cb)).astype(np.int64)
        span = (ends >> np.uint64(cb)).astype(np.int64) - cl + 1
        if not (span == 1).all():
            cl = np.repeat(cl, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
            role, owner = np.repeat(role, span), np.repeat(owner, span)
        np.bitwise_or.at(mask, cl, np.left_shift(np.uint32(1), role.astype(np.uint32)))
        np.minimum.at(omin, cl, owner)
        np.maximum.at(omax, cl, owner)
    # one owner, or "shared" (-2) when several; unreferenced clusters have none (-1)
    own = np.where(omin == omax, omin, np.int32(-2))
    own[omin > omax] = -1
    del omin, omax
    n = ncl if refs[-1] or _last_counter(img, ncl) else nfile  # the cluster past EOF only when referenced
    ondisk = img.refcounts(ncl)
    stored = ondisk[:n] if ondisk is not None else None
    mask, refs, own = mask[:n], refs[:n], own[:n]
    # role: the single role, or free / leaked / mixed; roles: every role, as one category per mask
    nbits = len(ROLES)
    seen = np.zeros(1 << nbits, bool)
    seen[mask] = True
    masks = np.flatnonzero(seen)
    nroles = np.array([bin(int(x)).count("1") for x in masks])
    low = np.array([(int(x) & -int(x)).bit_length() - 1 for x in masks])
    primary_of = np.zeros(1 << nbits, np.int16)
    primary_of[masks] = np.where(nroles > 1, nbits + 2, low)
    primary = primary_of[mask]
    if stored is not None:
        primary[(mask == 0) & (stored > 0)] = nbits + 1
    primary[(mask == 0) & ((stored == 0) if stored is not None else True)] = nbits
    names = sorted((_role_names(int(x)), int(x)) for x in masks)
    code_of = np.zeros(1 << nbits, np.int16)
    code_of[[x for _, x in names]] = np.arange(len(names))
    labels = _unique(img.layer_names())
    owner_cat = pd.Categorical.from_codes(np.where(own >= 0, own, np.where(own == -2, len(labels), -1)),
                                          categories=labels + ["shared"])
    return pd.DataFrame({
        "host_offset": np.arange(n, dtype=np.uint64) * np.uint64(cs),
        "role": pd.Categorical.from_codes(primary, dtype=ROLE_DTYPE),
        "roles": pd.Categorical.from_codes(code_of[mask], categories=[nm for nm, _ in names]),
        "owner": owner_cat,
        "refcount": pd.array(stored, dtype="UInt64") if stored is not None else pd.array([pd.NA] * n, dtype="UInt64"),
        "references": refs,
        "shared_by": img.shared_by(ncl)[:n] if hasattr(img, "shared_by") else (refs > 0).astype(np.uint32),
    })


def _last_counter(img: Any, ncl: int) -> bool:
    """Whether the on-disk refcount of the cluster just past EOF is set."""
    ondisk = img.refcounts(ncl)
    return ondisk is not None and bool(ondisk[-1])


def _unique(names: list[str]) -> list[str]:
    """Category labels must differ: a repeated name (duplicate snapshot ids) gets its position appended."""
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        out.append(n if n not in seen else f"{n}#{i}")
        seen.add(n)
    return out


def _role_names(mask: int) -> str:
    return "|".join(r for i, r in enumerate(ROLES) if mask >> i & 1)




RELATION_DTYPE = pd.CategoricalDtype(["top", "backing", "missing"])


def chain_frame(img: Any) -> pd.DataFrame:
    """One row per image of the backing chain, top first; a backing file that could not be
    opened (``backing_error``) adds a last row with relation ``missing``."""
    from .errors import ImgscopeError
    chain = img.chain()
    rows: list[tuple] = []
    for depth, layer in enumerate(chain):
        try:
            b = layer.backing()
        except ImgscopeError:
            b = None
        rows.append((depth, layer.path, layer.format, layer.virtual_size, b[0] if b else None,
                     "top" if depth == 0 else "backing", None))
    last = chain[-1]
    if last.backing_error:
        try:
            b, full = last.backing(), last.full_backing_filename()
        except ImgscopeError:
            b, full = None, None
        rows.append((len(chain), full, b[1] if b else None, 0, None, "missing", last.backing_error))
    cols = list(zip(*rows))
    return pd.DataFrame({
        "depth": np.array(cols[0], np.uint8),
        "file": pd.array(cols[1], dtype="string"),
        "format": pd.Categorical(cols[2]),
        "virtual_size": np.array(cols[3], np.uint64),
        "backing_file": pd.array(cols[4], dtype="string"),
        "relation": pd.Categorical(cols[5], dtype=RELATION_DTYPE),
        "error": pd.array(cols[6], dtype="string"),
    })
