"""The fused qcow2 check kernels (native/check.c: l2_scan, refblocks_gather, refcmp, add_refs on narrow
counters) give the same results as their numpy twins in imgscope.native, on random inputs and on real
images; and a whole check is the same on both backends and with the fused kernel or without it."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imgscope
from conftest import require_qemu
from imgscope import native
from imgscope.formats.qcow2 import check as qcheck

from .test_native import both

pytestmark = pytest.mark.skipif(not native.available, reason="native extension not built")
SETTINGS = settings(max_examples=120, deadline=None)
U64 = (1 << 64) - 1


def _entry(draw, cb: int, nclusters: int) -> int:
    """An L2 entry biased towards valid allocated clusters, with every kind of damage now and then."""
    kind = draw(st.integers(0, 11))
    host = draw(st.integers(0, nclusters + 3)) << cb
    copied = draw(st.sampled_from([0, 1 << 63]))
    if kind <= 5:
        return host | copied
    if kind == 6:
        return 0
    if kind == 7:
        return 1 | copied | (host if draw(st.booleans()) else 0)  # zero cluster
    if kind == 8:  # compressed
        return (1 << 62) | copied | draw(st.integers(0, (nclusters + 2) << cb)) | (draw(st.integers(0, 3)) << (62 - (cb - 8)))
    if kind == 9:
        return host | copied | draw(st.sampled_from([2, 1 << 9, 1 << 56]))  # reserved or unaligned
    return draw(st.integers(0, U64))


@SETTINGS
@given(st.data(), st.sampled_from([9, 12, 16]), st.booleans(), st.booleans(), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4, 8]))
def test_l2_scan(data: st.DataObject, cb: int, extended: bool, data_file: bool, cw: int, ow: int) -> None:
    draw = data.draw
    l2e = draw(st.sampled_from([1, 4, 16]))
    esz = 16 if extended else 8
    nclusters = draw(st.integers(1, 40))
    ntables = draw(st.integers(0, 6))
    words = [_entry(draw, cb, nclusters) for _ in range(ntables * l2e)]
    body = b""
    for w in words:
        body += w.to_bytes(8, "big")
        if extended:
            body += draw(st.sampled_from([0, 0, 1, 1 << 32, (1 << 32) | 1, U64])).to_bytes(8, "big")
    # tables back to back, one maybe cut short by the end of the buffer, one maybe wholly past it
    cut = draw(st.integers(0, esz * 3)) if ntables else 0
    buf = bytes(body[:max(0, len(body) - cut)])
    toff = np.arange(ntables, dtype=np.uint64) * np.uint64(l2e * esz)
    if ntables and draw(st.booleans()):
        toff[-1] = np.uint64(len(body) + draw(st.integers(0, 100)))
    weight = np.array([draw(st.integers(0, 5)) for _ in range(ntables)], np.uint32)
    active = np.array([draw(st.integers(0, 2)) for _ in range(ntables)], np.uint32)
    ncounts = nclusters + 2
    cdt = {1: np.uint8, 2: np.uint16, 4: np.uint32}[cw]
    odt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[ow]
    counts = np.array([draw(st.integers(0, 3)) for _ in range(ncounts)], cdt)
    ondisk = np.array([draw(st.sampled_from([0, 1, 1, 2])) for _ in range(draw(st.integers(0, ncounts + 2)))], odt)
    bad = np.array([draw(st.booleans()) for _ in range(len(ondisk))], bool) if draw(st.booleans()) else None
    maxval = draw(st.sampled_from([1, 3, 255, 65535]))
    file_size = draw(st.integers(0, (nclusters + 1) << cb))
    out = {}
    for be in ("native", "python"):
        c = counts.copy()
        with native.use(be):
            stats, dirty = native.l2_scan(buf, toff, weight, active, l2e, cb, extended, data_file, file_size, c,
                                          maxval, ondisk, bad)
        out[be] = (stats, dirty, c)
    for a, b in zip(out["native"], out["python"]):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["ascending", "random", "damaged", "shared"]),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 8]), st.sampled_from([1, 3, 255, 65535]),
       st.sampled_from([2, 3]))
def test_l2_scan_threads_equal_serial(seed: int, hosts: str, cw: int, ow: int, maxval: int, threads: int) -> None:
    """The threaded scan (counter regions owned by the thread that counts there first, private blocks
    for the rest, a serial pass for what a thread left) gives the serial scan's counters, statistics and
    table classes, or an overflow in both; tables laid out like a preallocated image (each thread in its
    own regions), at random (private blocks run out) and with damaged or shared clusters."""
    rng = np.random.default_rng(seed)
    cb, l2e = 9, int(rng.choice([64, 512]))
    ncounts = int(rng.choice([1 << 18, (1 << 20) + 5]))
    ntables = int(rng.integers(16 * threads, 160))
    n = ntables * l2e
    if hosts == "ascending":
        c = np.arange(2, 2 + n, dtype=np.uint64) % np.uint64(ncounts - 2) + np.uint64(1)
    else:
        c = rng.integers(1, ncounts, n).astype(np.uint64)
    e = (c << np.uint64(cb)) | (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))
    e[rng.random(n) < 0.2] = 0
    if hosts == "damaged":  # compressed, zero and reserved-bit entries in some tables
        hit = rng.random(n) < 0.002
        e[hit] = rng.choice(np.array([1 << 62 | 4096, 1, 2 | 1 << 20, U64], np.uint64), int(hit.sum()))
    if hosts == "shared":  # tables referenced again (snapshots): the same clusters counted by both threads
        e[n // 2:] = e[:n - n // 2]
    buf = e.astype(">u8").tobytes()
    toff = np.arange(ntables, dtype=np.uint64) * np.uint64(l2e * 8)
    weight = rng.integers(0, 3, ntables).astype(np.uint32)
    active = rng.integers(0, 2, ntables).astype(np.uint32)
    cdt = {1: np.uint8, 2: np.uint16, 4: np.uint32}[cw]
    odt = {1: np.uint8, 2: np.uint16, 8: np.uint64}[ow]
    counts = rng.integers(0, 2, ncounts).astype(cdt)
    ondisk = rng.choice(np.array([0, 1, 1, 2], odt), ncounts)
    file_size = ncounts << cb
    scratch = native.ScanScratch(threads)
    assert scratch.get(ncounts, cw, ntables)[1] is not None  # the threaded path is the one tested
    out = []
    for sc in (None, scratch):
        cnt = counts.copy()
        stats, dirty = native.l2_scan(buf, toff, weight, active, l2e, cb, False, False, file_size, cnt, maxval,
                                      ondisk, None, sc)
        out.append((stats, dirty, cnt))
    (s1, d1, c1), (s2, d2, c2) = out
    assert (s1[4] > 0) == (s2[4] > 0)
    if not s1[4]:
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(c1, c2)
    assert not scratch.buf.any()  # left zeroed for the next call


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("density", [0.0, 1e-5, 0.02])
@pytest.mark.parametrize("with_bad", [False, True])
def test_refcmp_threads_equal_serial(threads: int, density: float, with_bad: bool) -> None:
    rng = np.random.default_rng(int(density * 1e6) + threads)
    n = (3 << 16) + 12345
    ondisk = rng.integers(0, 3, n).astype(np.uint16)
    computed = ondisk.copy()
    flip = rng.random(n) < density
    computed[flip] = rng.integers(0, 3, int(flip.sum())).astype(np.uint16)
    computed[-5:] = 0  # the last used cluster is in the last thread's range, or in none
    bad = (rng.random(n) < density / 2) if with_bad else None
    serial = native.refcmp(ondisk, computed, bad)
    threaded = native.refcmp(ondisk, computed, bad, threads)
    np.testing.assert_array_equal(serial[0], threaded[0])
    np.testing.assert_array_equal(serial[1], threaded[1])
    assert serial[2] == threaded[2]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("order", [0, 4, 6])
def test_refblocks_gather_threads_equal_serial(threads: int, order: int) -> None:
    rng = np.random.default_rng(order)
    cb = 12
    cs = 1 << cb
    nblocks = 70
    buf = rng.integers(0, 256, (nblocks + 4) * cs).astype(np.uint8).tobytes()
    rt = rng.permutation(np.resize(np.array([0, cs, 5 * cs, 7 * cs + 512, 40 * cs, 1 << 40], np.uint64), nblocks))
    n = (cs * 8 >> order) * nblocks - 17
    dt = np.uint8 if order <= 3 else np.uint16 if order == 4 else np.uint64
    serial = native.refblocks_gather(buf, len(buf), rt, order, cb, n, dt)
    threaded = native.refblocks_gather(buf, len(buf), rt, order, cb, n, dt, threads)
    np.testing.assert_array_equal(serial[0], threaded[0])
    np.testing.assert_array_equal(serial[1], threaded[1])
    assert serial[1] is not None and serial[0].any()


def _refcount_file(draw, cs: int) -> tuple[bytes, np.ndarray]:
    """File bytes and a refcount table naming blocks in it, past it, unaligned, straddling its end."""
    nblocks = draw(st.integers(0, 4))
    size = draw(st.integers(0, (nblocks + 2) * cs))
    buf = draw(st.binary(min_size=size, max_size=size))
    rt = np.array([draw(st.sampled_from([0, 0, cs, 2 * cs, 3 * cs + 512, 4 * cs, (1 << 40), U64]))
                   for _ in range(nblocks)], np.uint64)
    return buf, rt


@SETTINGS
@given(st.data(), st.integers(0, 6), st.sampled_from([9, 12]))
def test_refblocks_gather(data: st.DataObject, order: int, cb: int) -> None:
    draw = data.draw
    cs = 1 << cb
    buf, rt = _refcount_file(draw, cs)
    nblocks, size = len(rt), len(buf)
    per_block = cs * 8 >> order
    n = draw(st.integers(0, per_block * (nblocks + 1)))
    bits = 1 << order
    dt = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64
    dt = draw(st.sampled_from([dt, np.uint64]))
    file_size = draw(st.integers(0, size + 3 * cs))
    (va, ba), (vb, bb) = both(native.refblocks_gather, buf, file_size, rt, order, cb, n, dt)
    assert va.dtype == vb.dtype == np.dtype(dt)
    np.testing.assert_array_equal(va, vb)
    assert (ba is None) == (bb is None)
    if ba is not None:
        np.testing.assert_array_equal(ba, bb)


@SETTINGS
@given(st.data(), st.sampled_from([np.uint8, np.uint16, np.uint64]), st.sampled_from([np.uint8, np.uint16,
                                                                                       np.uint32]))
def test_refcmp(data: st.DataObject, odt: type, cdt: type) -> None:
    n = data.draw(st.integers(0, 3000))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    ondisk = rng.integers(0, 3, n).astype(odt)
    computed = ondisk.copy().astype(cdt)
    flip = rng.random(n) < data.draw(st.sampled_from([0.0, 0.01, 0.5]))
    computed[flip] = rng.integers(0, 3, int(flip.sum())).astype(cdt)
    bad = (rng.random(n) < 0.05) if data.draw(st.booleans()) else None
    a, b = both(native.refcmp, ondisk, computed, bad)
    for x, y in zip(a[:2], b[:2]):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a[2] == b[2]


@SETTINGS
@given(st.data(), st.integers(0, 6), st.sampled_from([9, 12]))
def test_refview_reads_what_the_gather_reads(data: st.DataObject, order: int, cb: int) -> None:
    """The on-disk refcounts read in place (RefView) equal the gathered ones: values and unreadable
    clusters, lookups, refcmp and l2_scan's COPIED classes, on both backends; a block running past the
    end of the buffer refuses the view (only the gather zero-fills it)."""
    draw = data.draw
    cs = 1 << cb
    buf, rt = _refcount_file(draw, cs)
    nblocks, size = len(rt), len(buf)
    view = native.refview(buf, rt, order, cb)
    offs = [int(o) & ~0x1FF for o in rt.tolist()]
    straddles = any(o and not o % cs and o < size < o + cs for o in offs)
    assert (view is None) == straddles
    if view is None:
        return
    per_block = cs * 8 >> order
    n = draw(st.integers(0, per_block * (nblocks + 1)))
    dt = np.uint64
    vals, bad = native.refblocks_gather(buf, size, rt, order, cb, n, dt)
    for be in ("native", "python"):
        with native.use(be):
            dv, db = view.dense(n, dt)
        np.testing.assert_array_equal(dv, vals)
        assert (db is None) == (bad is None) and (bad is None or np.array_equal(db, bad))
    idx = np.array(draw(st.lists(st.integers(0, n - 1), max_size=40)) if n else [], np.int64)
    got, unreadable = view.at(idx)
    np.testing.assert_array_equal(got, vals[idx].astype(np.int64))
    np.testing.assert_array_equal(unreadable, bad[idx] if bad is not None else np.zeros(len(idx), bool))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    computed = np.minimum(vals, 255).astype(np.uint8)
    flip = rng.random(n) < 0.05
    computed[flip] = rng.integers(0, 3, int(flip.sum())).astype(np.uint8)
    want = native.refcmp(vals, computed, bad)
    for be in ("native", "python"):
        with native.use(be):
            got_cmp = native.refcmp(view, computed, None)
        for x, y in zip(got_cmp[:2], want[:2]):
            np.testing.assert_array_equal(x, y)
        assert got_cmp[2] == want[2]
    # the active tables' COPIED comparison reads the same refcounts (gathered: all the view covers)
    nall = per_block * nblocks
    ncl = max(1, nall - 1)
    all_vals, all_bad = native.refblocks_gather(buf, size, rt, order, cb, nall, dt)
    words = [(int(c) << cb) | (int(rng.integers(0, 2)) << 63) for c in rng.integers(1, ncl + 1, 32)]
    tables = b"".join(w.to_bytes(8, "big") for w in words)
    toff = np.array([0, 128], np.uint64)
    scans = []
    for od, odbad in ((all_vals, all_bad), (view, None)):
        for be in ("native", "python"):
            with native.use(be):
                counts = np.zeros(ncl + 2, np.uint16)
                stats, dirty = native.l2_scan(tables, toff, np.ones(2, np.uint32), np.ones(2, np.uint32), 16, cb,
                                              False, False, (ncl + 2) << cb, counts, 65535, od, odbad)
            scans.append((stats.tolist(), dirty.tolist(), counts.tolist()))
    assert all(x == scans[0] for x in scans)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3]), st.booleans())
def test_l2_scan_reading_the_file_equals_the_mapped_scan(tmp_path_factory, seed: int, threads: int,
                                                         short: bool) -> None:
    """With a file descriptor the native scan preads each table into its thread's buffer (the last table
    maybe cut short by the end of the file): counters, statistics and classes equal the scan of the
    file's bytes."""
    rng = np.random.default_rng(seed)
    cb, l2e, ncounts = 9, 64, 1 << 18
    ntables = int(rng.integers(1, 80))
    n = ntables * l2e
    c = rng.integers(1, ncounts, n).astype(np.uint64)
    e = (c << np.uint64(cb)) | (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))
    e[rng.random(n) < 0.2] = 0
    hit = rng.random(n) < 0.01
    e[hit] = rng.choice(np.array([1 << 62 | 4096, 1, 2 | 1 << 20], np.uint64), int(hit.sum()))
    body = e.astype(">u8").tobytes()
    body = body[:len(body) - int(rng.integers(1, 200))] if short else body
    path = tmp_path_factory.mktemp("fd") / "tables.bin"
    path.write_bytes(body)
    toff = rng.permutation(np.arange(ntables, dtype=np.uint64) * np.uint64(l2e * 8))
    weight = rng.integers(0, 3, ntables).astype(np.uint32)
    active = rng.integers(0, 2, ntables).astype(np.uint32)
    ondisk = rng.choice(np.array([0, 1, 1, 2], np.uint16), ncounts)
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for use_fd in (False, True):
            counts = np.zeros(ncounts, np.uint16)
            stats, dirty = native.l2_scan(body, toff, weight, active, l2e, cb, False, False, ncounts << cb, counts,
                                          65535, ondisk, None, native.ScanScratch(threads), fd=fd if use_fd else -1)
            out.append((stats.tolist(), dirty.tolist(), counts))
    finally:
        os.close(fd)
    assert out[0][:2] == out[1][:2]
    np.testing.assert_array_equal(out[0][2], out[1][2])


def test_l2_scan_read_error_is_an_imgscope_error(tmp_path) -> None:
    """A table the kernel cannot read (here: the descriptor is a directory's) fails the scan with a
    FormatError, not zeros."""
    from imgscope.errors import FormatError
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(FormatError, match="reading the file failed"):
            native.l2_scan(bytes(4096), np.zeros(1, np.uint64), np.ones(1, np.uint32), np.ones(1, np.uint32), 64, 9,
                           False, False, 1 << 20, np.zeros(2048, np.uint16), 65535, np.zeros(2048, np.uint16), None,
                           native.ScanScratch(1), fd=fd)
    finally:
        os.close(fd)


@SETTINGS
@given(st.data(), st.sampled_from([np.uint8, np.uint16]))
def test_add_refs_narrow(data: st.DataObject, dt: type) -> None:
    n = data.draw(st.integers(1, 50))
    counts = np.array(data.draw(st.lists(st.integers(0, int(np.iinfo(dt).max)), min_size=n, max_size=n)), dt)
    k = data.draw(st.integers(0, 20))
    off = np.array(data.draw(st.lists(st.integers(0, (n << 9) - 1), min_size=k, max_size=k)), np.uint64)
    ln = np.array(data.draw(st.lists(st.integers(0, 2048), min_size=k, max_size=k)), np.uint64)
    ln = np.minimum(ln, (np.uint64(n << 9) - off))
    w = np.array(data.draw(st.lists(st.integers(0, 300), min_size=k, max_size=k)), np.uint32)
    maxval = data.draw(st.integers(0, 70000))
    res = {}
    for be in ("native", "python"):
        c = counts.copy()
        with native.use(be):
            res[be] = (native.add_refs(c, off, ln, 9, maxval, w), c)
    assert res["native"][0] == res["python"][0]
    np.testing.assert_array_equal(res["native"][1], res["python"][1])


@pytest.mark.parametrize("late", [
    "overflow",     # a counter with no room left: the one-pass path stops and hands the table back
    "compressed",   # an entry it does not take (counted by the two-pass path)
    "reserved",     # an entry needing a finding (the table is dirty, not counted)
    "past_eof",     # a host cluster past the end of the file
    None,           # a clean table: counted in one pass
])
@pytest.mark.parametrize("act", [0, 1])
def test_l2_scan_one_pass_takes_back(late: str | None, act: int) -> None:
    """l2_scan counts a standard table of plain clusters in one pass and, meeting any other entry half way,
    takes back what it added: counters and results equal the numpy twin's."""
    cb, l2e, n = 9, 16, 40
    words = [((3 + j) << cb) | (1 << 63) for j in range(l2e)]
    words[2] = 0
    counts = np.zeros(n, np.uint16)
    late_entry = {"compressed": (1 << 62) | (30 << cb), "reserved": (20 << cb) | 2, "past_eof": (n - 3) << cb}
    if late == "overflow":
        counts[3 + 9] = 65534  # the entry at index 9 overflows with weight 2
    elif late is not None:
        words[9] = late_entry[late]
    buf = b"".join(w.to_bytes(8, "big") for w in words) * 2
    toff = np.array([0, l2e * 8], np.uint64)
    ondisk = np.ones(n, np.uint16)
    out = {}
    for be in ("native", "python"):
        c = counts.copy()
        with native.use(be):
            stats, dirty = native.l2_scan(buf, toff, np.array([2, 1], np.uint32), np.array([act, 0], np.uint32),
                                          l2e, cb, False, False, (n - 4) << cb, c, 65535, ondisk, None)
        out[be] = (stats, dirty, c)
    for a, b in zip(out["native"], out["python"]):
        np.testing.assert_array_equal(a, b)
    if late is None:
        assert out["native"][2][3] == 3 and list(out["native"][1]) == [0, 0]


# ---------------------------------------------------------------- whole checks on real images

@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Snapshots, compressed and zero clusters, a leak and refcount errors, on 4 KiB clusters."""
    require_qemu()
    d = tmp_path_factory.mktemp("kern")
    p = d / "k.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(p), "32M"], check=True)
    cmds = [f"write -P {i % 200 + 1} {(i * 7919 % 8000) * 4096} 4k" for i in range(200)]
    cmds += ["write -z 4M 64k", "write -c -P 9 5M 4k"]
    subprocess.run(["qemu-io", "-t", "unsafe", "-f", "qcow2", str(p)], input="\n".join(cmds) + "\n",
                   capture_output=True, text=True, check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "a", str(p)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", str(p)], capture_output=True, check=True)
    q = d / "broken.qcow2"
    q.write_bytes(p.read_bytes())
    with imgscope.open(q) as img:  # damage: a refcount of 0, a too-high one, a reserved bit in one L2 entry
        t = img.tables
        rt = t.reftable()
        blk = int(rt[0])
        l2 = int(img.tables.layer_l1(None)[0][0]) & 0x00FFFFFFFFFFFE00
    with open(q, "r+b") as f:
        f.seek(blk + 2 * 20)
        f.write(b"\x00\x00")
        f.seek(blk + 2 * 7000)
        f.write(b"\x00\x05")
        f.seek(l2 + 8 * 3)
        e = int.from_bytes(f.read(8), "big")
        f.seek(l2 + 8 * 3)
        f.write((e | 2).to_bytes(8, "big"))
    # lazy refcounts left dirty by a crash: tables whose only findings are COPIED mismatches (l2_scan's
    # dirty 2: counted by the kernel, decoded for check_oflag_copied only)
    z = d / "lazy.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on", str(z),
                    "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", str(z)], input="\n".join(cmds[:60] + ["abort"]) + "\n",
                   capture_output=True, text=True)
    return [p, q, z]


def _summary(img, res):
    return (res.qemu_json(), res.exit_code(), res.batches and [
        (b["problem"], b["n"], np.asarray(b.get("host_offset", [])).tolist()) for b in res.batches],
        qcheck.ondisk_array(img, res).tolist(), res.computed.tolist(), res.needs_rebuild)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_fused_check_equals_decoded_path(damaged, which, monkeypatch) -> None:
    path = damaged[which]
    got = {}
    for be in ("native", "python"):
        with native.use(be), imgscope.open(path) as img:
            got[be] = _summary(img, img.check())
    with imgscope.open(path) as img:  # the decoded-entry path alone (one chunk): the reference
        got["decoded"] = _summary(img, qcheck._check(img, None))
    monkeypatch.setattr(qcheck, "CHUNK_ENTRIES", 512)  # fused chunks of 16 tables, the mapping released often
    with imgscope.open(path) as img:
        got["small"] = _summary(img, img.check())
    monkeypatch.setattr(img.src.__class__, "mapping", lambda self: None)  # tables read with pread instead
    with imgscope.open(path) as img:
        got["pread"] = _summary(img, img.check())
    assert got["native"][0] if which == 0 else got["native"][1] == 2
    monkeypatch.setattr(qcheck, "_refblocks_at_once", lambda *a: False)  # check_refblocks entry by entry
    with imgscope.open(path) as img:
        got["loop"] = _summary(img, img.check())
    for k in ("python", "decoded", "small", "pread", "loop"):
        assert got[k][:3] == got["native"][:3], k
        assert got[k][3] == got["native"][3] and got[k][4] == got["native"][4] and got[k][5] == got["native"][5], k


def test_refblocks_at_once_leaves_findings_to_the_loop(damaged, tmp_path, monkeypatch) -> None:
    """A second reftable entry naming the first refcount block (Q2-RT-004, a rebuild): the one-step
    check_refblocks declines and the entry-by-entry loop reports it, as without the shortcut."""
    q = tmp_path / "rt.qcow2"
    q.write_bytes(damaged[0].read_bytes())
    with imgscope.open(q) as img:
        rt_off = img.meta.header.refcount_table_offset
        first = int(img.tables.reftable()[0])
    with open(q, "r+b") as f:
        f.seek(rt_off + 8)
        f.write(first.to_bytes(8, "big"))
    with imgscope.open(q) as img:
        fast = _summary(img, img.check())
    monkeypatch.setattr(qcheck, "_refblocks_at_once", lambda *a: False)
    with imgscope.open(q) as img:
        slow = _summary(img, img.check())
    assert "Q2-RT-004" in [b[0] for b in fast[2]] and fast[5]
    assert fast == slow
