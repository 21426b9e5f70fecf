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
    df = pd.DataFrame(img.extension_rows(), columns=["type", "name", "offset", "length", "decoded", "raw"])
    return df.astype({"type": "uint32", "name": "string", "offset": "uint64", "length": "uint32",
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


def clusters_frame(img: Any) -> pd.DataFrame:
    """One row per host cluster: roles, owner, on-disk refcount, computed references.

    Drivers supply ``reference_rows()`` (every byte range the file references, with
    role, owning layer and weight), ``refcounts(n)`` (on-disk counters, or None for
    formats without them) and optionally ``shared_by(n)``.
    """
    cs = img.cluster_size
    cb = cs.bit_length() - 1
    rows = img.reference_rows()
    nfile = -(-img.src.size // cs)
    ncl = nfile + 1
    ends = rows.off + np.maximum(rows.length, np.uint64(1)) - np.uint64(1)
    keep = (rows.length > 0) & (rows.off <= ends) & ((ends >> np.uint64(cb)) < np.uint64(ncl))
    refs = np.zeros(ncl, np.uint32)
    native.add_refs(refs, rows.off[keep], rows.length[keep], cb, 0xFFFFFFFF, rows.weight[keep])
    first = (rows.off[keep] >> np.uint64(cb)).astype(np.int64)
    last = (ends[keep] >> np.uint64(cb)).astype(np.int64)
    span = last - first + 1
    cl = np.repeat(first, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
    role = np.repeat(rows.role[keep], span)
    owner = np.repeat(rows.owner[keep], span)
    mask = np.zeros(ncl, np.uint32)
    for r in np.unique(role).tolist():
        hit = np.bincount(cl[role == r], minlength=ncl) > 0
        mask |= hit.astype(np.uint32) << np.uint32(r)
    own = np.full(ncl, -1, np.int64)
    if len(cl):
        big = np.iinfo(np.int64).max
        omin = np.full(ncl, big)
        omax = np.full(ncl, -big)
        np.minimum.at(omin, cl, owner)
        np.maximum.at(omax, cl, owner)
        used = omin != big
        own[used] = np.where(omin[used] == omax[used], omin[used], -2)
    ondisk = img.refcounts(ncl)
    refcount = pd.array(ondisk, dtype="UInt64") if ondisk is not None else pd.array([pd.NA] * ncl, dtype="UInt64")
    stored = ondisk if ondisk is not None else np.zeros(ncl, np.uint64)
    nroles = np.array([bin(x).count("1") for x in range(1 << len(ROLES))], np.uint8)[mask]
    primary = np.where(mask == 0, np.where(stored > 0, len(ROLES) + 1, len(ROLES)),
                       np.where(nroles > 1, len(ROLES) + 2, _lowest_bit(mask)))
    labels = _unique(img.layer_names())
    owner_cat = pd.Categorical.from_codes(np.where(own >= 0, own, np.where(own == -2, len(labels), -1)),
                                          categories=labels + ["shared"])
    names = {m: _role_names(m) for m in np.unique(mask).tolist()}
    df = pd.DataFrame({
        "host_offset": np.arange(ncl, dtype=np.uint64) * np.uint64(cs),
        "role": pd.Categorical.from_codes(primary.astype(np.int16), dtype=ROLE_DTYPE),
        "roles": pd.Categorical([names[m] for m in mask.tolist()]),
        "owner": owner_cat,
        "refcount": refcount,
        "references": refs,
        "shared_by": img.shared_by(ncl) if hasattr(img, "shared_by") else (refs > 0).astype(np.uint32),
    })
    if refs[-1] == 0 and stored[-1] == 0:
        df = df.iloc[:nfile]
    return df


def _unique(names: list[str]) -> list[str]:
    """Category labels must differ: a repeated name (duplicate snapshot ids) gets its position appended."""
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        out.append(n if n not in seen else f"{n}#{i}")
        seen.add(n)
    return out


def _lowest_bit(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.int64)
    low = m & -m
    return np.where(low > 0, np.log2(np.maximum(low, 1)).astype(np.int64), 0)


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
