"""Which host clusters each layer uses, and what the layers have in common.

A *layer* is a guest view: the active (live) layer of a file, one of its
internal snapshots, or the active layer of a backing file.  A layer's view
resolves through the backing chain below its file: where the layer has no
entry of its own, the backing file's active view answers (qemu's read rule).
A view *uses* a host unit (``unit`` bytes of one file: the clusters of the
image in the common case) when some guest unit reads from it: data clusters,
preallocated zero clusters (still referenced) and the span of compressed
clusters.  Plain zero and unallocated clusters use nothing.

Everything is vectorised: one unique/bit-mask pass over the (layer, host unit)
pairs; Python loops only run over layers and over distinct *sharing patterns*
(sets of layers), never over clusters.  See docs/notebook.md.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .arrays import unique
from .errors import ImgscopeError
from .model import COMPRESSED, DATA, UNALLOCATED, ZERO, ZERO_ALLOC

DEFAULT_UNIT = 65536
#: most layers one analysis takes (the layer × layer matrices grow with the square)
MAX_LAYERS = 4096


@dataclass
class LayerInfo:
    """One layer taking part in a sharing analysis."""

    label: str
    file: int            # index into Sharing.files
    layer: str           # the image's own layer name ('active', 'snapshot:ID')
    kind: str            # 'active' | 'snapshot' | 'backing'
    name: str
    snapshot_index: int | None = None
    date: Any = None
    vm_clock_nsec: int = 0
    disk_size: int = 0
    l1_bytes: int = 0    # the snapshot's own L1 table (freed with it)


@dataclass
class View:
    """One layer's guest view: per guest unit, the file and host unit it reads (-1: none)."""

    src: np.ndarray      # int32 file index
    first: np.ndarray    # int64 first host unit (local to the file)
    last: np.ndarray     # int64 last host unit (> first only for compressed spans)
    tables: np.ndarray   # uint64 host offsets of the layer's own lookup (L2) tables


@dataclass
class Sharing:
    """The sharing analysis of a set of layers (see :func:`sharing`).

    ``layers`` one row per layer, ``matrix`` host units in common (layer × layer,
    the diagonal is what each layer uses), ``hosts`` one row per used host unit
    with the set of layers using it, ``tables`` L2 tables in common.
    """

    files: list[str]
    unit: int
    info: list[LayerInfo]
    layers: pd.DataFrame
    matrix: pd.DataFrame
    tables: pd.DataFrame
    hosts: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    _images: list[Any] = field(default_factory=list, repr=False)
    _below: list[int] = field(default_factory=list, repr=False)
    _own: list[np.ndarray] = field(default_factory=list, repr=False)  # packed bits: guest unit has own entry

    def contradictions(self, ancestor: str, child: str) -> int:
        """Guest units the candidate ancestor has its own entry for but the child (same file) has not.

        Allocation is never undone by writes, so a true ancestor has none (unless data was discarded).
        """
        a, c = self._own[self.labels.index(ancestor)], self._own[self.labels.index(child)]
        n = min(len(a), len(c))
        return int(np.unpackbits(a[:n] & ~c[:n]).sum())

    @property
    def labels(self) -> list[str]:
        return [i.label for i in self.info]

    def guest_strip(self, label: str) -> pd.DataFrame:
        """Per guest unit of one layer: the file it reads from, the host unit and how many layers use it.

        Needs the images still open (it re-reads the layer's map).
        """
        i = self.labels.index(label)
        li = self.info[i]
        img = self._images[li.file]
        if getattr(img.src, "fd", 0) < 0:
            raise ImgscopeError(f"{img.path}: image closed; guest strips need the images open")
        v = _resolve(self._images, self._below, li.file, li.layer, self.unit, {})
        counts = self.hosts.set_index(["file_index", "unit_index"])["n_layers"]
        keys = pd.MultiIndex.from_arrays([v.src.astype(np.int64), v.first])
        n = counts.reindex(keys).fillna(0).to_numpy(np.int64)
        return pd.DataFrame({
            "guest_offset": np.arange(len(v.src), dtype=np.uint64) * np.uint64(self.unit),
            "file_index": v.src, "host_offset": np.where(v.first >= 0, v.first * self.unit, -1),
            "n_layers": n, "exclusive": n == 1,
        })

    def _repr_html_(self) -> str:
        from .report.summary import sharing_html
        return sharing_html(self)


# ---------------------------------------------------------------------------- public entry point
def sharing(obj: Any, chain: bool = True, progress: bool = False) -> Sharing:
    """Sharing analysis of an image (its snapshots and, with ``chain``, its backing files) or of
    several images (a list: files are deduplicated, so overlays of one base share it)."""
    images = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    files, below = _collect(images, chain)
    unit = _unit(files)
    info = _layer_info(files, below)
    if len(info) > MAX_LAYERS:
        raise ImgscopeError(f"{len(info)} layers: sharing analyses at most MAX_LAYERS={MAX_LAYERS} "
                            "(pass fewer images, or raise imgscope.sharing.MAX_LAYERS)")
    cache: dict[tuple[int, str], View] = {}
    views: list[View | None] = []
    notes: list[str] = []
    for li in _progress(info, progress, "reading layer maps"):
        try:
            views.append(_resolve(files, below, li.file, li.layer, unit, cache))
        except ImgscopeError as exc:
            notes.append(f"{li.label}: {exc} (layer left out)")
            views.append(None)
    used = [_units(v) if v is not None else np.zeros(0, np.int64) for v in views]
    tables = [_tables(v, li.file, unit) for v, li in zip(views, info)]
    sh = _assemble(files, below, info, unit, used, tables, notes)
    sh._own = [np.packbits(v.src == li.file) if v is not None else np.zeros(0, np.uint8) for v, li in zip(views, info)]
    return sh


def _progress(items: list, enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, leave=False)


# ---------------------------------------------------------------------------- layers and files
def _collect(images: list[Any], chain: bool) -> tuple[list[Any], list[int]]:
    """Distinct files (by real path), top images first, and the index of each file's backing file (-1)."""
    files: list[Any] = []
    index: dict[str, int] = {}
    below: list[int] = []
    for top in images:
        seq = top.chain() if chain else [top]
        prev = -1
        for img in seq:
            key = os.path.realpath(img.path)
            if key not in index:
                index[key] = len(files)
                files.append(img)
                below.append(-1)
            cur = index[key]
            if prev >= 0 and below[prev] == -1:
                below[prev] = cur
            prev = cur
    return files, below


def _unit(files: list[Any]) -> int:
    sizes = [img.cluster_size for img in files if img.cluster_size]
    return math.gcd(*sizes) if sizes else DEFAULT_UNIT


def _layer_info(files: list[Any], below: list[int]) -> list[LayerInfo]:
    backing = {b for b in below if b >= 0}
    names = _file_labels([f.path for f in files])
    out: list[LayerInfo] = []
    for fi, img in enumerate(files):
        prefix = "" if len(files) == 1 else names[fi] + ":"
        kind = "backing" if fi in backing else "active"
        out.append(LayerInfo(prefix + "active", fi, "active", kind, "active", disk_size=img.virtual_size))
        for k, s in enumerate(img.snapshot_list()):
            cs = img.cluster_size or DEFAULT_UNIT
            date = pd.Timestamp(s.date_sec * 1_000_000_000 + s.date_nsec, tz="UTC")
            out.append(LayerInfo(f"{prefix}snapshot:{s.id}", fi, f"snapshot:{s.id}", "snapshot", s.name, k, date,
                                 s.vm_clock_nsec, s.disk_size if s.disk_size is not None else img.virtual_size,
                                 -(-s.l1_size * 8 // cs) * cs))
    return out


def _file_labels(paths: list[str]) -> list[str]:
    base = [os.path.basename(p) for p in paths]
    if len(set(base)) == len(base):
        return base
    common = os.path.commonpath([os.path.abspath(p) for p in paths])
    return [os.path.relpath(os.path.abspath(p), common) for p in paths]


# ---------------------------------------------------------------------------- guest views
def layer_map(img: Any, layer: str, unit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kind, host byte offset, host length) per guest unit of ``unit`` bytes for one layer, and the
    host offsets of the layer's own lookup tables.

    Uses the driver's guest map when it has one, else its extents (raw files).
    """
    try:
        gm = img.guest_map(layer)
    except NotImplementedError:
        gm = None
    if gm is None or gm.cluster_size % unit:   # no map, or clusters the unit does not divide
        return (*_extents_map(img.extents(), unit), np.zeros(0, np.uint64))
    r = gm.cluster_size // unit
    n = min(len(gm.kind) * r, -(-gm.virtual_size // unit))
    kind = np.repeat(gm.kind, r)[:n]
    sub = np.tile(np.arange(r, dtype=np.uint64) * np.uint64(unit), len(gm.kind))[:n]
    normal = (kind == DATA) | (kind == ZERO_ALLOC)
    host = np.repeat(gm.host, r)[:n] + np.where(normal, sub, np.uint64(0))
    length = np.where(normal, np.uint64(unit), np.repeat(gm.length, r)[:n])
    t = getattr(gm, "table", None)
    t = unique(np.asarray(t if t is not None else [], np.uint64))
    return kind, host, length, t[t != 0]


def _extents_map(ext: Any, unit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guest units from block-status extents: any DATA byte makes the unit data."""
    from .extents import DATA as S_DATA, OFFSET_VALID, ZERO as S_ZERO
    n = -(-ext.size // unit)
    kind = np.zeros(n, np.uint8)
    host = np.zeros(n, np.uint64)
    for bit, code in ((S_ZERO, ZERO), (S_DATA, DATA)):   # DATA wins over ZERO inside a unit
        sel = (ext.status & bit) != 0
        first = ext.start[sel] // unit
        last = (ext.start[sel] + ext.length[sel] - 1) // unit
        diff = np.zeros(n + 1, np.int64)
        np.add.at(diff, first, 1)
        np.add.at(diff, last + 1, -1)
        kind[np.cumsum(diff)[:n] > 0] = code
    data = np.flatnonzero(kind == DATA)
    if len(data):
        pos = data.astype(np.int64) * unit
        e = np.searchsorted(ext.start, pos, side="right") - 1
        valid = (ext.status[e] & OFFSET_VALID) != 0
        host[data] = np.where(valid, ext.offset[e] + (pos - ext.start[e]).astype(np.uint64), np.uint64(0))
        kind[data[~valid]] = DATA
    return kind, host, np.where(kind == DATA, np.uint64(unit), np.uint64(0))


def _resolve(files: list[Any], below: list[int], fi: int, layer: str, unit: int,
             cache: dict[tuple[int, str], View]) -> View:
    """The view of ``layer`` of file ``fi``, unallocated units resolved through the backing files."""
    key = (fi, layer)
    if key in cache:
        return cache[key]
    kind, host, length, tables = layer_map(files[fi], layer, unit)
    uses = (kind == DATA) | (kind == ZERO_ALLOC) | (kind == COMPRESSED)
    first = np.where(uses, (host // np.uint64(unit)).astype(np.int64), -1)
    end = host + np.maximum(length, np.uint64(1)) - np.uint64(1)
    last = np.where(kind == COMPRESSED, (end // np.uint64(unit)).astype(np.int64), first)
    src = np.where(uses, fi, -1).astype(np.int32)
    if below[fi] >= 0:
        b = _resolve(files, below, below[fi], "active", unit, cache)
        hole = np.flatnonzero(kind[:len(b.src)] == UNALLOCATED)
        src[hole], first[hole], last[hole] = b.src[hole], b.first[hole], b.last[hole]
    view = View(src, first, last, tables)
    cache[key] = view
    return view


def _units(v: View) -> np.ndarray:
    """Distinct (file, host unit) pairs a view uses, packed as file << 48 | unit."""
    sel = v.src >= 0
    src, first, last = v.src[sel].astype(np.int64), v.first[sel], v.last[sel]
    span = np.minimum(np.maximum(last - first, 0), 64) + 1   # compressed spans are 1-2 units; cap hostile ones
    units = np.repeat(first, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
    units = np.minimum(units, (1 << 48) - 1)
    return unique((np.repeat(src, span) << 48) | units)


def _tables(v: View | None, fi: int, unit: int) -> np.ndarray:
    """A layer's own lookup tables, packed like host units."""
    if v is None or not len(v.tables):
        return np.zeros(0, np.int64)
    return (np.int64(fi) << 48) | np.minimum(v.tables // np.uint64(unit), (1 << 48) - 1).astype(np.int64)


# ---------------------------------------------------------------------------- bit-mask patterns
def _patterns(used: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(distinct used ids, pattern index per id, pattern bit rows (npat × L bool), ids per pattern)."""
    nl = len(used)
    words = max(1, -(-nl // 64))
    allids = np.concatenate(used) if used else np.zeros(0, np.int64)
    uniq, inv = np.unique(allids, return_inverse=True)
    mask = np.zeros((len(uniq), words), "<u8")
    pos = 0
    for layer, u in enumerate(used):
        mask[inv[pos:pos + len(u)], layer // 64] |= np.uint64(1 << (layer % 64))
        pos += len(u)
    pats, pinv, counts = np.unique(mask, axis=0, return_inverse=True, return_counts=True)
    bytes_ = pats.view(np.uint8).reshape(len(pats), words * 8)
    bits = np.unpackbits(bytes_, axis=1, bitorder="little")[:, :nl].astype(bool)
    return uniq, pinv.reshape(-1), bits, counts


def _common(used: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(layer × layer ids in common, ids exclusive to each layer)."""
    nl = len(used)
    _, _, bits, counts = _patterns(used)
    b = bits.astype(np.int64)
    matrix = (b * counts[:, None]).T @ b if len(b) else np.zeros((nl, nl), np.int64)
    single = bits.sum(axis=1) == 1
    excl = (b[single] * counts[single, None]).sum(axis=0) if single.any() else np.zeros(nl, np.int64)
    return matrix, excl


def _assemble(files: list[Any], below: list[int], info: list[LayerInfo], unit: int, used: list[np.ndarray],
              tables: list[np.ndarray], notes: list[str]) -> Sharing:
    labels = [li.label for li in info]
    matrix, excl = _common(used)
    tmatrix, texcl = _common(tables)
    uniq, pinv, bits, _ = _patterns(used)
    pat_labels = ["|".join(lb for lb, b in zip(labels, row) if b) for row in bits]
    nlay = bits.sum(axis=1).astype(np.uint16)
    fidx = (uniq >> 48).astype(np.int64)
    hosts = pd.DataFrame({
        "file": pd.Categorical.from_codes(fidx, categories=[f.path for f in files]) if len(files) else [],
        "file_index": fidx,
        "unit_index": uniq & ((1 << 48) - 1),
        "host_offset": ((uniq & ((1 << 48) - 1)).astype(np.uint64) * np.uint64(unit)),
        "n_layers": nlay[pinv] if len(uniq) else np.zeros(0, np.uint16),
        "layers": pd.Categorical.from_codes(pinv, categories=pat_labels),
    })
    mdf = pd.DataFrame(matrix, index=labels, columns=labels)
    tdf = pd.DataFrame(tmatrix, index=labels, columns=labels)
    layers = _layers_frame(files, info, unit, matrix, excl, tmatrix, texcl)
    layers.attrs.update(unit=unit)
    mdf.attrs.update(unit=unit)
    return Sharing([f.path for f in files], unit, info, layers, mdf, tdf, hosts, notes, files, below)


def _layers_frame(files: list[Any], info: list[LayerInfo], unit: int, matrix: np.ndarray, excl: np.ndarray,
                  tmatrix: np.ndarray, texcl: np.ndarray) -> pd.DataFrame:
    labels = [li.label for li in info]
    total = np.diag(matrix).astype(np.int64)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    with_ = [", ".join(lb for lb, n in zip(labels, row) if n > 0) for row in off]
    tsize = np.array([files[li.file].cluster_size or unit for li in info], np.int64)
    l1 = np.array([li.l1_bytes for li in info], np.int64)
    meta = texcl * tsize + l1
    freed = np.where([li.kind == "active" for li in info], -1, excl * unit + np.where(
        [li.kind == "snapshot" for li in info], meta, 0))
    df = pd.DataFrame({
        "layer": pd.array(labels, dtype="string"),
        "file": pd.array([files[li.file].path for li in info], dtype="string"),
        "kind": pd.Categorical([li.kind for li in info], categories=["active", "snapshot", "backing"]),
        "name": pd.array([li.name for li in info], dtype="string"),
        "snapshot_index": pd.array([li.snapshot_index for li in info], dtype="Int64"),
        "date": pd.to_datetime(pd.Series([li.date for li in info], dtype=object), utc=True),
        "vm_clock_nsec": np.array([li.vm_clock_nsec for li in info], np.uint64),
        "disk_size": np.array([li.disk_size for li in info], np.uint64),
        "clusters": total,
        "bytes": total * unit,
        "exclusive_clusters": excl.astype(np.int64),
        "exclusive_bytes": excl.astype(np.int64) * unit,
        "shared_clusters": total - excl,
        "shared_bytes": (total - excl) * unit,
        "shared_with": pd.array(with_, dtype="string"),
        "tables": np.diag(tmatrix).astype(np.int64),
        "exclusive_tables": texcl.astype(np.int64),
        "metadata_freed_bytes": np.where([li.kind == "snapshot" for li in info], meta, 0).astype(np.int64),
        "freed_bytes": pd.array([None if f < 0 else int(f) for f in freed], dtype="Int64"),
    })
    return df
