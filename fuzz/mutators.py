"""Structure-aware damage to real images.

:func:`describe` locates every structure of a (trusted, unmutated) seed image —
header fields, header extensions, table entries, snapshot entries — from the
same ``construct`` declarations the drivers parse with, and returns a
:class:`Layout`: integer :class:`Field` s, truncation points and the offsets
of the image's structures.  :func:`apply` then rewrites fields with hostile
values (0, all-ones, sign bits, past-EOF sizes, offsets of *other* structures
for overlaps and self-references, sums that wrap 2^64), flips bits, truncates
at structure boundaries or appends bytes.  Both the atheris harness and the
hypothesis tests draw their operations from here.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import construct as cs


@dataclass(frozen=True)
class Field:
    """An integer field of ``size`` bytes at ``offset`` (big-endian unless ``little``)."""

    name: str
    offset: int
    size: int
    little: bool = False


@dataclass
class Layout:
    fmt: str
    size: int
    cluster_size: int
    fields: list[Field] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)  # where structures start and end
    anchors: list[int] = field(default_factory=list)     # offsets of structures (overlap targets)

    def add_struct(self, struct: cs.Construct, data: bytes, offset: int, prefix: str, little: bool = False) -> None:
        """Add every integer field of ``struct`` parsed at ``offset`` of ``data``."""
        for f in struct_fields(struct, data, offset, prefix, little):
            self.fields.append(f)
        self.boundaries.append(offset)

    def add_entries(self, name: str, offset: int, count: int, esize: int, data: bytes, little: bool = False,
                    keep: int = 6) -> None:
        """Table entries: the first, the last, and up to ``keep`` non-zero ones."""
        self.boundaries += [offset, offset + count * esize]
        self.anchors.append(offset)
        picked: list[int] = [0, count - 1] if count else []
        for i in range(count):
            if len(picked) >= keep + 2:
                break
            at = offset + i * esize
            if data[at:at + esize].strip(b"\0"):
                picked.append(i)
        for i in sorted(set(picked)):
            if offset + (i + 1) * esize <= len(data):
                self.fields.append(Field(f"{name}[{i}]", offset + i * esize, esize, little))


def struct_fields(struct: cs.Construct, data: bytes, offset: int, prefix: str, little: bool = False) -> list[Field]:
    """Integer fields of a ``cs.Struct`` with their absolute offsets (via interleaved ``cs.Tell``)."""
    subs = [sc for sc in struct.subcons if sc.name]
    probe = cs.Struct(*[part for sc in subs for part in (("_at_" + sc.name) / cs.Tell, sc)], "_end" / cs.Tell)
    try:
        parsed = probe.parse(data[offset:])
    except (cs.ConstructError, ValueError):
        return []
    out = []
    for i, sc in enumerate(subs):
        start = parsed["_at_" + sc.name]
        end = parsed["_at_" + subs[i + 1].name] if i + 1 < len(subs) else parsed["_end"]
        if isinstance(parsed[sc.name], int) and not isinstance(parsed[sc.name], bool) and end - start in (1, 2, 4, 8):
            out.append(Field(f"{prefix}.{sc.name}", offset + start, end - start, little))
    return out


# ---------------------------------------------------------------------------- describing seeds

def describe(path: str | Path, fmt: str | None = None, *, opened: str | Path | None = None) -> Layout:
    """The layout of a well-formed image of ``fmt`` (default: probed), opened with imgscope, which must
    accept it.  A fixed VHD needs ``fmt``: probing finds it as raw, as qemu does.  ``opened``: the
    file to open when ``path`` is one extent of a multi-file image (its descriptor)."""
    import imgscope
    data = Path(path).read_bytes()
    with imgscope.open(opened or path, fmt) as img:
        lay = Layout(img.format, len(data), img.cluster_size or 512)
        describer = DESCRIBERS.get(img.format, _describe_generic)
        describer(img, data, lay)
    lay.boundaries = sorted({b for b in lay.boundaries + [0, 1, 8, 511, 512, len(data) - 1] if 0 <= b < len(data)})
    lay.anchors = sorted(set(lay.anchors + [0, len(data)]))
    return lay


def _describe_qcow2(img: Any, data: bytes, lay: Layout) -> None:
    from imgscope.formats.qcow2 import layout as L
    m = img.meta
    h = m.header
    cs_ = m.cluster_size
    lay.add_struct(L.Header, data, 0, "header")
    lay.boundaries += [72, m.header_length]
    for i, e in enumerate(m.extensions):
        lay.fields += struct_fields(L.ExtensionHeader, data, e.offset, f"extension[{i}]")
        lay.boundaries += [e.offset, e.offset + 8 + e.length]
        sub = {L.EXT_BITMAPS: L.BitmapsExtension, L.EXT_FDE: L.FdeExtension}.get(e.type)
        if sub is not None:
            lay.fields += struct_fields(sub, data, e.offset + 8, f"extension[{i}].{e.name}")
    if h.backing_file_offset:
        lay.boundaries += [h.backing_file_offset, h.backing_file_offset + h.backing_file_size]
    lay.add_entries("l1", h.l1_table_offset, h.l1_size, 8, data)
    lay.add_entries("reftable", h.refcount_table_offset, h.refcount_table_clusters * cs_ // 8, 8, data)
    for i, s in enumerate(m.snapshots):
        lay.add_struct(L.SnapshotFixed, data, s.entry_offset, f"snapshot[{i}]")
        if s.extra_data_size >= 24:
            lay.fields += struct_fields(L.SnapshotExtra, data, s.entry_offset + 40, f"snapshot[{i}].extra")
        lay.add_entries(f"snapshot[{i}].l1", s.l1_table_offset, s.l1_size, 8, data)
        lay.boundaries.append(s.entry_offset + s.entry_length)
    for i, b in enumerate(m.bitmaps):
        lay.add_struct(L.BitmapDirFixed, data, b.entry_offset, f"bitmap[{i}]")
        lay.add_entries(f"bitmap[{i}].table", b.table_offset, b.table_size, 8, data)
    esize = 16 if m.extended_l2 else 8
    l2s = sorted({int(x) & L.L1E_OFFSET_MASK for x in _u64s(data, h.l1_table_offset, h.l1_size)} - {0})
    for off in l2s[:4]:
        lay.add_entries(f"l2@{off:#x}", off, m.l2_entries, esize, data)
    rbs = sorted({int(x) & L.REFT_OFFSET_MASK for x in _u64s(data, h.refcount_table_offset, cs_ // 8)} - {0})
    width = max(1, (1 << m.refcount_order) // 8)
    for off in rbs[:2]:
        lay.add_entries(f"refblock@{off:#x}", off, min(64, cs_ // width), width, data)
    lay.anchors += [h.l1_table_offset, h.refcount_table_offset, h.snapshots_offset, *l2s, *rbs]


def _u64s(data: bytes, offset: int, n: int) -> Iterable[int]:
    for i in range(n):
        at = offset + 8 * i
        if at + 8 > len(data):
            break
        yield int.from_bytes(data[at:at + 8], "big")


def _describe_generic(img: Any, data: bytes, lay: Layout) -> None:
    """Formats without a dedicated describer: every ``*Header*`` declaration of their layout module at 0,
    plus 4- and 8-byte words of the first sector."""
    import importlib
    try:
        layout = importlib.import_module(f"imgscope.formats.{img.format}.layout")
    except ImportError:
        layout = None
    for name in dir(layout) if layout else []:
        obj = getattr(layout, name)
        if "header" in name.lower() and isinstance(obj, cs.Struct):
            lay.add_struct(obj, data, 0, name, little=img.format in ("vdi", "vhdx", "qed", "vmdk"))
    if not lay.fields:
        little = img.format in ("vdi", "vhdx", "qed", "vmdk")
        lay.fields += [Field(f"word@{o}", o, 4, little) for o in range(0, min(len(data), 512) - 3, 4)]
    lay.boundaries += list(range(0, min(len(data), 4 * 4096), 512))


DESCRIBERS = {"qcow2": _describe_qcow2, "raw": lambda img, data, lay: None}


# ---------------------------------------------------------------------------- mutations

@dataclass(frozen=True)
class Op:
    """One mutation: ``kind`` in set/add/copy/flip/truncate/extend, with its arguments."""

    kind: str
    a: int = 0
    b: int = 0


KINDS = ("set", "set", "set", "add", "copy", "flip", "truncate", "extend")


def interesting(f: Field, lay: Layout) -> list[int]:
    """Hostile values for field ``f``: edges of its width, sizes around EOF, other structures' offsets."""
    top = (1 << (8 * f.size)) - 1
    vals = [0, 1, 2, 7, 8, 9, 0x1FF, 0x200, top, top - 1, top >> 1, (top >> 1) + 1, lay.cluster_size,
            lay.cluster_size - 1, lay.cluster_size + 1, lay.size, lay.size - 1, lay.size + lay.cluster_size,
            lay.size // lay.cluster_size, 1 << 16, 1 << 20, 1 << 31, (1 << 32) - 1, 1 << 56, 1 << 62,
            (1 << 64) - lay.cluster_size, *lay.anchors]
    return sorted({v & top for v in vals})


def apply(data: bytes, lay: Layout, ops: Iterable[Op]) -> bytes:
    """``data`` with every op applied in order (ops refer to ``lay``; all arguments are taken modulo)."""
    buf = bytearray(data)
    for op in ops:
        if op.kind in ("set", "add", "copy") and lay.fields:
            f = lay.fields[op.a % len(lay.fields)]
            if f.offset + f.size > len(buf):
                continue
            top = (1 << (8 * f.size)) - 1
            if op.kind == "set":
                vals = interesting(f, lay)
                v = vals[op.b % len(vals)]
            elif op.kind == "add":
                v = _get(buf, f) + (op.b % 17 - 8) * (lay.cluster_size if op.b & 0x100 else 1)
            else:
                v = _get(buf, lay.fields[op.b % len(lay.fields)])
            _put(buf, f, v & top)
        elif op.kind == "flip" and buf:
            at = _near(lay, op.a) % len(buf)
            buf[at] ^= 1 << (op.b % 8)
        elif op.kind == "truncate" and lay.boundaries:
            cut = lay.boundaries[op.a % len(lay.boundaries)] + (op.b % 3) - 1
            del buf[max(0, cut):]
        elif op.kind == "extend":
            buf += bytes([op.b & 0xFF]) * (1 + op.a % (2 * lay.cluster_size))
    return bytes(buf)


def _near(lay: Layout, n: int) -> int:
    """A byte inside a known field most of the time, anywhere otherwise."""
    if lay.fields and n % 4:
        f = lay.fields[(n >> 2) % len(lay.fields)]
        return f.offset + (n >> 8) % f.size
    return n >> 2


def _get(buf: bytearray, f: Field) -> int:
    return int.from_bytes(buf[f.offset:f.offset + f.size], "little" if f.little else "big")


def _put(buf: bytearray, f: Field, v: int) -> None:
    buf[f.offset:f.offset + f.size] = v.to_bytes(f.size, "little" if f.little else "big")


def random_ops(rng: random.Random, lay: Layout, n: int) -> list[Op]:
    return [Op(rng.choice(KINDS), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(n)]


def write_sparse(path: str | Path, data: bytes, chunk: int = 4096) -> None:
    """Write ``data`` leaving all-zero chunks as holes (as the qemu-made seeds are)."""
    with open(path, "wb") as f:
        zero = bytes(chunk)
        for pos in range(0, len(data), chunk):
            piece = data[pos:pos + chunk]
            if piece == zero[:len(piece)]:
                f.seek(len(piece), 1)
            else:
                f.write(piece)
        f.truncate(len(data))
