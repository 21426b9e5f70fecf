"""Every function of imgscope.native gives the same result on the C path and its numpy twin:
on hypothesis-generated inputs, on real table bytes of qemu-made images, and on bad input
(FormatError from both)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imgscope
from imgscope import native
from imgscope.formats.qcow2 import layout as L
from oracle.qemu import check_json, qemu_img, qemu_io

from .damage import KiB, MiB, Qcow2Copy

pytestmark = pytest.mark.skipif(not native.available, reason="native extension not built")
U64 = (1 << 64) - 1
SETTINGS = settings(max_examples=150, deadline=None)


def both(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, Any]:
    """(native result, numpy result) of ``fn(*args)``; array arguments are copied for each call."""
    out = []
    for name in ("native", "python"):
        with native.use(name):
            out.append(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kw))
    return out[0], out[1]


def raises_both(fn: Callable[..., Any], *args: Any) -> list[imgscope.FormatError]:
    errs = []
    for name in ("native", "python"):
        with native.use(name), pytest.raises(imgscope.FormatError) as info:
            fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
        errs.append(info.value)
    assert errs[0].reason == errs[1].reason
    return errs


def same_entries(a: native.L2Entries, b: native.L2Entries) -> None:
    for field, x, y in zip(native.L2Entries._fields, a, b):
        assert x.dtype == y.dtype, field
        np.testing.assert_array_equal(x, y, err_msg=field)


# ---------------------------------------------------------------- hypothesis: random inputs

@SETTINGS
@given(st.binary(max_size=512), st.data())
def test_be64(buf: bytes, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, len(buf) // 8))
    a, b = both(native.be64, buf, n)
    assert a.dtype == b.dtype == np.uint64
    np.testing.assert_array_equal(a, b)
    assert a.tolist() == [int.from_bytes(buf[8 * i:8 * i + 8], "big") for i in range(n)]


@SETTINGS
@given(st.data(), st.integers(9, 30), st.booleans(), st.booleans())
def test_l2_decode(data: st.DataObject, cb: int, extended: bool, data_file: bool) -> None:
    esz = 16 if extended else 8
    n = data.draw(st.integers(0, 24))
    # entries biased towards interesting flag combinations
    word = st.one_of(st.integers(0, U64), st.sampled_from([0, 1, 1 << 63, 1 << 62, 3 << 62, (1 << 63) | 1]),
                     st.integers(0, U64).map(lambda v: v & ~(L.L2E_STD_RESERVED_MASK | L.OFLAG_COMPRESSED)))
    words = data.draw(st.lists(word, min_size=n * esz // 8, max_size=n * esz // 8))
    buf = b"".join(w.to_bytes(8, "big") for w in words)
    a, b = both(native.l2_decode, buf, n, cb, extended, data_file)
    same_entries(a, b)


@SETTINGS
@given(st.integers(0, 6), st.binary(max_size=256), st.data())
def test_refblock_decode(order: int, buf: bytes, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, len(buf) * 8 >> order))
    a, b = both(native.refblock_decode, buf, order, n)
    np.testing.assert_array_equal(a, b)


@SETTINGS
@given(st.integers(0, 6), st.data())
def test_refblock_encode_roundtrip(order: int, data: st.DataObject) -> None:
    bits = 1 << order
    values = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=64)), np.uint64)
    size = data.draw(st.integers(-(-len(values) * bits // 8), 600))
    a, b = both(native.refblock_encode, values, order, size)
    assert a == b and len(a) == size
    dec_n, dec_p = both(native.refblock_decode, a, order, len(values))
    np.testing.assert_array_equal(dec_n, values)
    np.testing.assert_array_equal(dec_p, values)


@SETTINGS
@given(st.data(), st.integers(9, 30), st.booleans())
def test_add_refs(data: st.DataObject, cb: int, weighted: bool) -> None:
    ncounts = data.draw(st.integers(1, 40))
    maxval = data.draw(st.sampled_from([1, 3, 15, 255, 0xFFFF, 0xFFFFFFFF]))
    counts = np.array(data.draw(st.lists(st.integers(0, 0xFFFFFFFF), min_size=ncounts, max_size=ncounts)),
                      np.uint32)
    end = ncounts << cb
    k = data.draw(st.integers(0, 12))
    off = np.array(data.draw(st.lists(st.integers(0, end - 1), min_size=k, max_size=k)), np.uint64)
    length = np.array([data.draw(st.integers(0, end - int(o))) for o in off.tolist()], np.uint64)
    weight = np.array(data.draw(st.lists(st.integers(0, 5), min_size=k, max_size=k)), np.uint32) if weighted \
        else None
    res = []
    for name in ("native", "python"):
        c = counts.copy()
        with native.use(name):
            res.append((native.add_refs(c, off, length, cb, maxval, weight), c))
    assert res[0][0] == res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])


@SETTINGS
@given(st.data())
def test_add_refs_out_of_range_changes_nothing(data: st.DataObject) -> None:
    """A range past the counts (or wrapping 2**64) is an error on both paths, and nothing is counted."""
    n = data.draw(st.integers(1, 10))
    off = np.array([0, data.draw(st.sampled_from([n << 9, U64 - 10, (n << 9) - 1]))], np.uint64)
    length = np.array([512, data.draw(st.integers(513 if off[1] == (n << 9) - 1 else 1, 1 << 20))], np.uint64)
    counts = np.zeros(n, np.uint32)
    for name in ("native", "python"):
        c = counts.copy()
        with native.use(name), pytest.raises(imgscope.FormatError):
            native.add_refs(c, off, length, 9, 100)
        np.testing.assert_array_equal(c, counts)


@SETTINGS
@given(st.data())
def test_run_starts(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 40))
    code = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2, 0x81, 0x83, 0x84]), min_size=n, max_size=n)),
                    np.uint8)
    step = np.full(n, data.draw(st.sampled_from([512, 4096, 1 << 16])), np.uint64)
    start = data.draw(st.integers(0, U64))
    jumps = data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n))
    off = np.array([(start + int(s) * sum(jumps[:i])) % (1 << 64) for i, s in enumerate(step.tolist())],
                   np.uint64)
    a, b = both(native.run_starts, code, off, step)
    assert a.dtype == b.dtype == np.int64
    np.testing.assert_array_equal(a, b)


@SETTINGS
@given(st.data(), st.sampled_from([1, 32]), st.sampled_from([512, 4096, 1 << 16, 1 << 21]), st.booleans())
def test_unit_runs(data: st.DataObject, sub: int, cs: int, crypto: bool) -> None:
    n = data.draw(st.integers(0, 24))
    kind = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.uint8)
    # hosts mostly contiguous so that runs merge, sometimes anywhere
    host = np.array(data.draw(st.lists(st.one_of(st.integers(0, 8).map(lambda c: c * cs), st.integers(0, U64)),
                                       min_size=n, max_size=n)), np.uint64)
    if n and data.draw(st.booleans()):
        host = np.arange(n, dtype=np.uint64) * np.uint64(cs) + host[0]
    bitmap = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 0xFFFFFFFF, 0xFFFF, 0xFFFF0000]))
    alloc = np.array(data.draw(st.lists(bitmap, min_size=n, max_size=n)), np.uint32) if sub > 1 else None
    zero = np.array(data.draw(st.lists(bitmap, min_size=n, max_size=n)), np.uint32) if sub > 1 else None
    a, b = both(native.unit_runs, kind, host, alloc, zero, sub, cs, crypto)
    for x, y, dt in zip(a, b, (np.int64, np.uint8, np.uint64)):
        assert x.dtype == y.dtype == dt
        np.testing.assert_array_equal(x, y)
    # the runs expand back to the per-unit status of unit_status (the documented meaning)
    unit, status, _ = native.unit_status(kind, host, alloc, zero, sub, cs, crypto)
    assert unit == cs // sub
    lengths = np.diff(np.append(a[0], n * sub))
    np.testing.assert_array_equal(np.repeat(a[1], lengths), status)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn, args", [
    (native.be64, (b"\0" * 15, 2)),
    (native.be64, (b"", -1)),
    (native.l2_decode, (b"\0" * 8, 2, 16, False, False)),
    (native.l2_decode, (b"\0" * 24, 2, 16, True, False)),
    (native.l2_decode, (b"\0" * 8, -1, 16, False, False)),
    (native.l2_decode, (b"\0" * 8, 1, 8, False, False)),
    (native.l2_decode, (b"\0" * 8, 1, 31, False, False)),
    (native.refblock_decode, (b"\0" * 3, 4, 2)),
    (native.refblock_decode, (b"\0" * 3, 0, 25)),
    (native.refblock_decode, (b"\0" * 8, 7, 1)),
    (native.refblock_decode, (b"\0" * 8, -1, 1)),
    (native.refblock_decode, (b"\0" * 8, 4, -1)),
    (native.refblock_encode, (np.array([1, 2, 3], np.uint64), 4, 5)),
    (native.refblock_encode, (np.array([4], np.uint64), 1, 8)),
    (native.refblock_encode, (np.array([1], np.uint64), 7, 64)),
    (native.refblock_encode, (np.array([1], np.uint64), -1, 64)),
    (native.refblock_encode, (np.array([], np.uint64), 4, -1)),
    (native.add_refs, (np.zeros(4, np.uint32), np.array([0], np.uint64), np.array([1], np.uint64), 8, 9)),
    (native.add_refs, (np.zeros(4, np.uint32), np.array([0], np.uint64), np.array([1], np.uint64), 31, 9)),
    (native.add_refs, (np.zeros(4, np.uint32), np.array([0], np.uint64), np.array([1, 2], np.uint64), 9, 9)),
    (native.add_refs, (np.zeros(4, np.int64), np.array([0], np.uint64), np.array([1], np.uint64), 9, 9)),
    (native.add_refs, (np.zeros(4, np.uint32), np.array([2048], np.uint64), np.array([1], np.uint64), 9, 9)),
    (native.run_starts, (np.zeros(2, np.uint8), np.zeros(1, np.uint64), np.zeros(2, np.uint64))),
    (native.unit_runs, (np.zeros(2, np.uint8), np.zeros(2, np.uint64), None, None, 2, 4096, False)),
    (native.unit_runs, (np.array([5], np.uint8), np.zeros(1, np.uint64), None, None, 1, 4096, False)),
    (native.unit_runs, (np.zeros(1, np.uint8), np.zeros(1, np.uint64), None, None, 1, 256, False)),
    (native.unit_runs, (np.zeros(1, np.uint8), np.zeros(1, np.uint64), None, None, 1, 3 << 12, False)),
    (native.unit_runs, (np.zeros(2, np.uint8), np.zeros(1, np.uint64), None, None, 1, 4096, False)),
    (native.unit_runs, (np.zeros(2, np.uint8), np.zeros(2, np.uint64), np.zeros(1, np.uint32),
                        np.zeros(2, np.uint32), 32, 1 << 16, False)),
], ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_is_format_error(fn: Callable[..., Any], args: tuple) -> None:
    raises_both(fn, *args)


def test_format_error_names_structure_and_offset() -> None:
    for err in raises_both(native.l2_decode, b"\0" * 8, 2, 16, False, False, "qcow2 L2 tables", 0x1234):
        assert (err.structure, err.offset) == ("qcow2 L2 tables", 0x1234)


# ---------------------------------------------------------------- real tables from qemu-made images

L2_IMAGES = {  # name -> (create options, qemu-io commands, expected compressed entries)
    "cb9": ("cluster_size=512", ["write -P 1 0 4k", "write -c -P 2 64k 512", "write -c 96k 512", "write -z 8k 1k"],
            2),
    "cb12": ("cluster_size=4096", ["write -P 1 0 16k", "write -c -P 2 1M 4k", "write -c -P 3 1028k 4k",
                                   "write -z 2M 8k"], 2),
    "cb16": ("cluster_size=65536", ["write -P 1 0 128k", "write -c -P 2 1M 64k", "write -z 2M 64k"], 1),
    "cb21": ("cluster_size=2097152", ["write -P 1 0 64k", "write -c -P 2 2M 2M", "write -c 6M 2M"], 2),
    "extl2": ("cluster_size=65536,extended_l2=on", ["write -P 1 4k 4k", "write -P 2 64k 8k", "write -z 128k 2k",
                                                    "write -c -P 3 256k 64k"], 1),
}


@pytest.fixture(scope="module")
def table_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import require_qemu
    require_qemu()
    d = tmp_path_factory.mktemp("native")
    out = {}
    for name, (opts, cmds, _) in L2_IMAGES.items():
        out[name] = d / f"{name}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, out[name], "8M")
        qemu_io("qcow2", out[name], *cmds)
    for order in range(7):
        out[f"rc{order}"] = d / f"rc{order}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size=4096,refcount_bits={1 << order}",
                 out[f"rc{order}"], "8M")
        qemu_io("qcow2", out[f"rc{order}"], "write -P 1 0 64k", "write -P 2 1M 8k")
    return out


@pytest.mark.parametrize("name", sorted(L2_IMAGES))
def test_real_l2_tables(table_images: dict[str, Path], name: str) -> None:
    img = Qcow2Copy(table_images[name])
    h = img.header()
    cb, extended = h.cluster_bits, bool(h.incompatible_features & L.INCOMPAT_EXTL2)
    esz = 16 if extended else 8
    n = (1 << cb) // esz
    decoded = []
    for l1e in img.l1():
        if l1e & L.L1E_OFFSET_MASK:
            buf = img.read(l1e & L.L1E_OFFSET_MASK, 1 << cb)
            a, b = both(native.l2_decode, buf, n, cb, extended, False)
            same_entries(a, b)
            decoded.append(a)
    assert decoded
    for d in decoded:  # block-status runs of the real entries agree as well
        sub = 32 if extended else 1
        runs = both(native.unit_runs, d.kind, d.host, d.alloc if extended else None, d.zero if extended else None,
                    sub, 1 << cb, False)
        for x, y in zip(*runs):
            np.testing.assert_array_equal(x, y)
    kinds = np.concatenate([d.kind for d in decoded])
    assert int((kinds == native.COMPRESSED).sum()) == L2_IMAGES[name][2]
    assert (kinds == native.NORMAL).any()
    # the decoded compressed entries stay inside the file, as qemu-img check confirms
    rc, report, _ = check_json(img.path)
    assert rc == 0 and report["compressed-clusters"] == L2_IMAGES[name][2]
    for d in decoded:
        comp = d.kind == native.COMPRESSED
        assert ((d.host[comp] + d.length[comp]) <= img.size + (1 << cb)).all()
        assert (d.flags[comp] & native.F_HIGHBITS == 0).all()


@pytest.mark.parametrize("order", range(7))
def test_real_refcount_blocks(table_images: dict[str, Path], order: int) -> None:
    path = table_images[f"rc{order}"]
    img = Qcow2Copy(path)
    assert img.header().refcount_order == order
    cs = img.cluster_size
    per_block = cs * 8 >> order
    blocks = [e & L.REFT_OFFSET_MASK for e in img.reftable() if e & L.REFT_OFFSET_MASK]
    assert blocks
    for off in blocks:
        buf = img.read(off, cs)
        a, b = both(native.refblock_decode, buf, order, per_block)
        np.testing.assert_array_equal(a, b)
        enc = both(native.refblock_encode, a, order, cs)
        assert enc[0] == enc[1] == buf
    # the first block covers every cluster of this small file: one reference each
    first = a if len(blocks) == 1 else both(native.refblock_decode, img.read(blocks[0], cs), order, per_block)[0]
    ncl = -(-img.size // cs)
    assert first[:ncl].tolist() == [1] * ncl and not first[ncl:].any()


def test_real_reftable_and_l1_be64(table_images: dict[str, Path]) -> None:
    img = Qcow2Copy(table_images["cb12"])
    h = img.header()
    for off, n in ((h.l1_table_offset, h.l1_size), (h.refcount_table_offset, 512)):
        a, b = both(native.be64, img.read(off, 8 * n), n)
        np.testing.assert_array_equal(a, b)
        assert a.any()
