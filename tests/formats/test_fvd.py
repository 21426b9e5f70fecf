"""FVD (2011 patch-series layout): images built with imgscope's own ``layout`` declarations.

There is no FVD producer and no qemu oracle, so every image here is written by
:func:`build` from ``imgscope.formats.fvd.layout`` with data at known chunks,
and the expectations (mapping, extents, guest bytes, dirty state, findings)
are derived from what the builder wrote.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import imgscope
from imgscope.errors import FormatError
from imgscope.formats.fvd import layout as L

KiB, MiB = 1 << 10, 1 << 20


def _page(n: int) -> int:
    return -(-n // L.PAGE) * L.PAGE


@dataclass
class Spec:
    """What :func:`build` writes; ``writes`` are (guest offset, bytes), each inside one chunk/block."""

    size: int = 8 * MiB
    compact: bool = True
    chunk: int = 1 * MiB
    block: int = 64 * KiB
    base: str | None = None           # backing file name (relative), read while not all_data_in_fvd_img
    base_size: int = 0
    base_fmt: str = "raw"
    all_data: bool = False
    journal: int = 64 * KiB
    clean: bool = True
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    #: table entries forced after allocation {virtual chunk: raw entry}
    table_override: dict[int, int] = field(default_factory=dict)
    journal_sectors: list[bytes] = field(default_factory=list)
    header: dict = field(default_factory=dict)  # header fields overridden last


def build(path: Path, spec: Spec) -> dict:
    """Write an FVD image; return its layout facts (offsets, chunk assignment)."""
    base_used = spec.base is not None and not spec.all_data
    nblocks = -(-spec.base_size // spec.block) if spec.base else 0
    bitmap_off = L.HEADER_REGION
    bitmap_size = _page(L.bitmap_bytes(spec.base_size, spec.block)) if spec.base else 0
    table_off = bitmap_off + bitmap_size
    tbytes = L.table_bytes(spec.size, spec.chunk) if spec.compact else 0
    journal_off = table_off + tbytes
    meta = _page(journal_off + spec.journal)
    bitmap = np.zeros(bitmap_size * 8, bool)
    table = np.full(L.table_entries(spec.size, spec.chunk), L.EMPTY_TABLE, np.uint32)
    data: dict[int, bytes] = {}
    for off, buf in spec.writes:
        if spec.base and off < spec.base_size:
            bitmap[off // spec.block:-(-(off + len(buf)) // spec.block)] = True
        if spec.compact:
            c = off // spec.chunk
            if table[c] == L.EMPTY_TABLE:
                table[c] = int((table != L.EMPTY_TABLE).sum())
            data[meta + int(table[c]) * spec.chunk + off % spec.chunk] = buf
        else:
            data[meta + off] = buf
    used = int((table != L.EMPTY_TABLE).sum())  # FVD grows the file by whole chunks (storage_grow_unit)
    for c, v in spec.table_override.items():
        table[c] = v
    fields = {sc.name: bytes(sc.sizeof()) if sc.name in L.TEXT_FIELDS else 0 for sc in L.Header.subcons}
    fields.update(magic=L.MAGIC, version=L.VERSION, all_data_in_fvd_img=int(not base_used),
                  virtual_disk_size=spec.size, metadata_size=meta,
                  base_img=(spec.base or "").encode().ljust(1024, b"\0"),
                  base_img_fmt=spec.base_fmt.encode().ljust(16, b"\0") if spec.base else bytes(16),
                  base_img_size=spec.base_size, bitmap_offset=bitmap_off if spec.base else 0,
                  bitmap_size=bitmap_size, block_size=spec.block, compact_image=int(spec.compact),
                  table_offset=table_off if spec.compact else 0, chunk_size=spec.chunk,
                  storage_grow_unit=100 * MiB, journal_offset=journal_off if spec.journal else 0,
                  journal_size=spec.journal, clean_shutdown=int(spec.clean), prefetch_start_delay=-1)
    fields.update(spec.header)
    end = max([meta] + [o + len(b) for o, b in data.items()])
    end = max(end, meta + (used * spec.chunk if spec.compact else spec.size))
    with open(path, "wb") as f:
        f.truncate(end)
        f.write(L.Header.build(fields))
        if spec.base:
            f.seek(bitmap_off)
            f.write(np.packbits(bitmap, bitorder="little").tobytes())
        if spec.compact:
            f.seek(table_off)
            f.write(b"".join(L.TableEntry.build(int(v)) for v in table))
        for i, sec in enumerate(spec.journal_sectors):
            f.seek(journal_off + i * L.SECTOR)
            f.write(sec.ljust(L.SECTOR, b"\0"))
        for off, buf in data.items():
            f.seek(off)
            f.write(buf)
    return {"meta": meta, "table": table, "table_off": table_off, "journal_off": journal_off,
            "bitmap_off": bitmap_off, "nblocks": nblocks}


def _pattern(n: int, seed: int) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(n)) if seed else bytes(n)


def _expected(tmp: Path, spec: Spec) -> bytes:
    """The guest bytes: base where the bitmap says so, the writes, zeros elsewhere."""
    out = bytearray(spec.size)
    if spec.base and not spec.all_data:
        base = (tmp / spec.base).read_bytes()[:spec.base_size]
        out[:len(base)] = base
        written = np.zeros(-(-spec.base_size // spec.block), bool)
        for off, buf in spec.writes:
            if off < spec.base_size:
                written[off // spec.block:-(-(off + len(buf)) // spec.block)] = True
        for b in np.flatnonzero(written).tolist():  # a copied block: its bytes come from the FVD image only
            lo, hi = b * spec.block, min((b + 1) * spec.block, spec.size)
            out[lo:hi] = bytes(hi - lo)
    for off, buf in spec.writes:
        out[off:off + len(buf)] = buf
    return bytes(out)


def _read_guest(img: imgscope.image.Image) -> bytes:
    """Guest content through imgscope's map: every extent with data and an offset is read from its layer."""
    chain = img.chain()
    out = bytearray(img.virtual_size)
    for e in img.map_entries():
        if e["data"] and "offset" in e:
            with open(chain[e["depth"]].path, "rb") as f:
                f.seek(e["offset"])
                chunk = f.read(e["length"])
            out[e["start"]:e["start"] + len(chunk)] = chunk
    return bytes(out)


def _base(tmp: Path, size: int) -> str:
    raw = bytearray(size)
    for i in range(0, size, 256 * KiB):
        raw[i:i + 4 * KiB] = _pattern(4 * KiB, (i >> 18) + 0x40)
    (tmp / "base.raw").write_bytes(bytes(raw))
    return "base.raw"


COMPACT_WRITES = [(0, _pattern(64 * KiB, 1)), (3 * MiB + 128 * KiB, _pattern(64 * KiB, 2)),
                  (6 * MiB, _pattern(1 * MiB, 3)), (1 * MiB + 64 * KiB, _pattern(4 * KiB, 4))]


@pytest.fixture
def compact(tmp_path: Path) -> tuple[Path, Spec, dict]:
    spec = Spec(base=_base(tmp_path, 5 * MiB + 512), base_size=5 * MiB + 512, writes=COMPACT_WRITES)
    return tmp_path / "c.fvd", spec, build(tmp_path / "c.fvd", spec)


def test_layout_offsets_match_formats_md() -> None:
    """The packed offsets FORMATS.md §9.1 lists."""
    assert L.HEADER_SIZE == 4336 and L.HEADER_REGION == 8192
    assert {n: L.field_offset(n) for n in ("base_img", "base_img_size", "bitmap_offset", "block_size", "data_file",
                                           "prefetch_start_delay", "compact_image", "chunk_size", "add_storage_cmd",
                                           "journal_offset", "clean_shutdown", "write_updates_base_img")} == {
        "base_img": 0x1C, "base_img_size": 0x42C, "bitmap_offset": 0x434, "block_size": 0x444, "data_file": 0x454,
        "prefetch_start_delay": 0x864, "compact_image": 0x8A0, "chunk_size": 0x8AC, "add_storage_cmd": 0x8BC,
        "journal_offset": 0x10BC, "clean_shutdown": 0x10CC, "write_updates_base_img": 0x10E0}


def test_header_and_detection(compact) -> None:
    path, spec, facts = compact
    with imgscope.open(path) as img:
        assert img.format == "fvd"
        h = img.header
        assert h["magic"] == "0x5143f5a9" and h["version"] == 1 and h["header_size"] == 4336
        assert h["virtual_disk_size"] == spec.size and h["metadata_size"] == facts["meta"]
        assert h["base_img"] == "base.raw" and h["base_img_fmt"] == "raw" and h["base_img_size"] == spec.base_size
        assert h["bitmap_offset"] == 8192 and h["table_offset"] == facts["table_off"]
        assert h["chunk_size"] == MiB and h["block_size"] == 64 * KiB and h["table_entries"] == 8
        assert h["journal_offset"] == facts["journal_off"] and h["journal_size"] == 64 * KiB
        assert h["clean_shutdown"] == 1 and h["base_in_use"] and h["data_offset"] == facts["meta"]
        assert img.backing() == ("base.raw", "raw") and not img.dirty
        assert img.unit == 64 * KiB and img.cluster_size == MiB


def test_info_dict(compact) -> None:
    path, spec, _ = compact
    with imgscope.open(path) as img:
        info = img.info_dict()
    assert {k: info[k] for k in ("virtual-size", "filename", "format", "cluster-size", "dirty-flag",
                                 "backing-filename", "backing-filename-format")} == {
        "virtual-size": spec.size, "filename": str(path), "format": "fvd", "cluster-size": MiB, "dirty-flag": False,
        "backing-filename": "base.raw", "backing-filename-format": "raw"}
    assert info["full-backing-filename"] == str(path.parent / "base.raw")
    assert info["format-specific"]["data"]["compact-image"] is True


def test_guest_map_follows_bitmap_and_table(compact) -> None:
    path, spec, facts = compact
    meta = facts["meta"]
    with imgscope.open(path) as img:
        gm = img.guest_map()
        df = img.mapping()
    unit = 64 * KiB
    assert gm.cluster_size == unit and len(gm.kind) == spec.size // unit
    kinds = {int(g) * unit: imgscope.model.KINDS[k] for g, k in enumerate(gm.kind.tolist())}
    # guest 0: written (bitmap bit set), physical chunk 0
    assert kinds[0] == "data" and int(gm.host[0]) == meta
    # guest 64K..1M: bitmap bit clear -> base image
    assert kinds[64 * KiB] == "unallocated" and int(gm.host[1]) == 0
    # chunk 3 was the second chunk allocated: physical chunk 1
    g = (3 * MiB + 128 * KiB) // unit
    assert kinds[3 * MiB + 128 * KiB] == "data" and int(gm.host[g]) == meta + MiB + 128 * KiB
    # rest of chunk 3 inside the base: base
    assert kinds[3 * MiB] == "unallocated"
    # chunk 6 lies past the base image: in FVD, physical chunk 2
    assert kinds[6 * MiB] == "data" and int(gm.host[6 * MiB // unit]) == meta + 2 * MiB
    # chunk 7, past the base and never written: zeros in the FVD image
    assert kinds[7 * MiB] == "zero"
    assert df["kind"].astype(str).tolist() == [kinds[g] for g in sorted(kinds)]


def test_map_extents(compact) -> None:
    path, spec, facts = compact
    meta = facts["meta"]
    with imgscope.open(path) as img:
        m = img.map_entries()
    base_end = spec.base_size
    expect = [
        {"start": 0, "length": 64 * KiB, "depth": 0, "present": True, "zero": False, "data": True, "offset": meta},
        {"start": 64 * KiB, "length": MiB, "depth": 1, "present": True, "zero": False, "data": True,
         "offset": 64 * KiB},
        {"start": MiB + 64 * KiB, "length": 64 * KiB, "depth": 0, "present": True, "zero": False, "data": True,
         "offset": meta + 3 * MiB + 64 * KiB},
        {"start": MiB + 128 * KiB, "length": 2 * MiB, "depth": 1, "present": True, "zero": False, "data": True,
         "offset": MiB + 128 * KiB},
        {"start": 3 * MiB + 128 * KiB, "length": 64 * KiB, "depth": 0, "present": True, "zero": False, "data": True,
         "offset": meta + MiB + 128 * KiB},
        {"start": 3 * MiB + 192 * KiB, "length": base_end - 3 * MiB - 192 * KiB, "depth": 1, "present": True,
         "zero": False, "data": True, "offset": 3 * MiB + 192 * KiB},
        # the unit holding the base's end: past base_img_size the FVD image answers (chunk 5 is empty)
        {"start": base_end, "length": 6 * MiB - base_end, "depth": 0, "present": True, "zero": True, "data": False},
        {"start": 6 * MiB, "length": MiB, "depth": 0, "present": True, "zero": False, "data": True,
         "offset": meta + 2 * MiB},
        {"start": 7 * MiB, "length": MiB, "depth": 0, "present": True, "zero": True, "data": False},
    ]
    assert m == expect


def test_guest_content_through_mapping(compact) -> None:
    path, spec, _ = compact
    with imgscope.open(path) as img:
        assert _read_guest(img) == _expected(path.parent, spec)


def test_non_compact_with_holes(tmp_path: Path) -> None:
    spec = Spec(compact=False, size=4 * MiB, base=_base(tmp_path, 2 * MiB), base_size=2 * MiB,
                writes=[(128 * KiB, _pattern(64 * KiB, 9)), (3 * MiB, _pattern(8 * KiB, 5))])
    facts = build(tmp_path / "n.fvd", spec)
    with imgscope.open(tmp_path / "n.fvd") as img:
        assert img.cluster_size is None and img.unit == 64 * KiB
        m = img.map_entries()
        assert _read_guest(img) == _expected(tmp_path, spec)
    meta = facts["meta"]
    assert m[0] == {"start": 0, "length": 128 * KiB, "depth": 1, "present": True, "zero": False, "data": True,
                    "offset": 0}
    assert m[1] == {"start": 128 * KiB, "length": 64 * KiB, "depth": 0, "present": True, "zero": False, "data": True,
                    "offset": meta + 128 * KiB}
    # past the base image, the data area is a file hole except for the write at 3 MiB
    holes = [e for e in m if e["depth"] == 0 and e["zero"]]
    assert holes and all(e["data"] and e["start"] >= 2 * MiB for e in holes)
    data3 = next(e for e in m if e["start"] <= 3 * MiB < e["start"] + e["length"])
    assert data3["data"] and not data3["zero"] and data3["offset"] == meta + 3 * MiB - (3 * MiB - data3["start"])


def test_no_base_all_data(tmp_path: Path) -> None:
    spec = Spec(size=4 * MiB, base="gone.raw", base_size=4 * MiB, all_data=True,
                writes=[(2 * MiB, _pattern(MiB, 6))])
    build(tmp_path / "a.fvd", spec)
    with imgscope.open(tmp_path / "a.fvd") as img:
        assert img.backing() is None and img.header["base_img"] == "gone.raw"
        assert img.unit == MiB and len(img.chain()) == 1 and img.backing_error is None
        m = img.map_entries()
        assert _read_guest(img) == _expected(tmp_path, spec)
    assert [(e["start"], e["present"], e["data"]) for e in m] == [(0, False, False), (2 * MiB, True, True),
                                                                  (3 * MiB, False, False)]


def test_clusters_frame_and_references(compact) -> None:
    path, spec, facts = compact
    with imgscope.open(path) as img:
        df = img.clusters()
    roles = df.set_index("host_offset")["role"].astype(str)
    # the first 1 MiB cluster holds header, bitmap, table, journal and the start of the data area
    assert roles[0] == "mixed" and df["roles"][0] == "header|l1|bitmap_data|data"
    # physical chunks 0..3 start at meta (inside cluster 0) and end at meta + 4 MiB
    assert roles[MiB] == "data" and roles[2 * MiB] == "data" and roles[3 * MiB] == "data"
    assert len(df) == -(-(facts["meta"] + 4 * MiB) // MiB) and (df["references"][1:] == [2, 2, 2, 1]).all()
    assert df["refcount"].isna().all()  # FVD has no refcounts


def test_dirty_without_journal_records(tmp_path: Path) -> None:
    build(tmp_path / "d.fvd", Spec(clean=False, writes=[(0, _pattern(4 * KiB, 1))]))
    with imgscope.open(tmp_path / "d.fvd") as img:
        assert img.dirty and img.info_dict()["dirty-flag"] is True
        res = img.check()
    assert not res.supported and res.exit_code() == 63
    assert res.summary() == {"FVD-HDR-001": 1}
    assert "0 journal record" in res.findings["message"][0]


def test_dirty_with_pending_journal(tmp_path: Path) -> None:
    # the journal says chunk 4 got physical chunk 1 (dirty bit still set, as journalled) and that
    # sectors of block 2 were written; the on-disk table and bitmap do not have it yet
    table_rec = L.TableRecord.build({"first_chunk": 4, "count": 1, "entries": [1 | L.DIRTY_TABLE]})
    bitmap_rec = L.BitmapRecord.build({"num_dirty_sectors": 8, "dirty_sector_begin": 2 * 64 * KiB // 512})
    spec = Spec(base=_base(tmp_path, 2 * MiB), base_size=2 * MiB, clean=False,
                writes=[(0, _pattern(64 * KiB, 1))], journal_sectors=[table_rec + bitmap_rec])
    build(tmp_path / "j.fvd", spec)
    with imgscope.open(tmp_path / "j.fvd") as img:
        recs = img.journal_records()
        assert [(r.kind, r.first, r.count) for r in recs] == [("table", 4, 1), ("bitmap", 256, 8)]
        assert recs[0].entries.tolist() == [1 | L.DIRTY_TABLE]
        assert img.header["journal_records"] == 2
        # a read-only open does not replay: chunk 4 still reads as zeros, block 2 from the base
        kinds = img.guest_map().kind
        assert kinds[4 * MiB // (64 * KiB)] == imgscope.model.ZERO
        assert kinds[2] == imgscope.model.UNALLOCATED
        res = img.check()
    assert res.summary() == {"FVD-HDR-001": 1, "FVD-JNL-001": 1}
    msg = res.findings.set_index("problem")["message"]
    assert "2 journal record(s)" in msg["FVD-HDR-001"]
    assert "1 table entries and 1 bitmap blocks" in msg["FVD-JNL-001"]
    # the same journal in a cleanly closed image is stale: nothing to report
    spec.clean = True
    build(tmp_path / "j2.fvd", spec)
    with imgscope.open(tmp_path / "j2.fvd") as img:
        assert img.check().summary() == {}


def test_clean_image_has_no_findings(compact) -> None:
    path, _, _ = compact
    with imgscope.open(path) as img:
        res = img.check()
    assert res.summary() == {} and res.exit_code() == 63 and res.qemu_json()["format"] == "fvd"


def test_damaged_table(tmp_path: Path) -> None:
    spec = Spec(size=8 * MiB, writes=[(0, _pattern(4 * KiB, 1)), (MiB, _pattern(4 * KiB, 2)),
                                      (2 * MiB, _pattern(4 * KiB, 3))],
                table_override={1: 0, 2: 9 | L.DIRTY_TABLE, 5: 40, 6: 3})
    facts = build(tmp_path / "t.fvd", spec)
    with imgscope.open(tmp_path / "t.fvd") as img:
        gm = img.guest_map()
        assert int(gm.host[2]) == facts["meta"] + 9 * MiB  # the dirty bit is masked off, as READ_TABLE does
        assert gm.flags[2] & imgscope.native.F_RESERVED
        res = img.check()
    s = res.summary()
    # chunk 1 shares physical chunk 0 with chunk 0; the file ends after physical chunk 2, so chunks
    # 2 (index 9), 5 (index 40) and 6 (index 3) lie past its end
    assert s["FVD-TBL-002"] == 1 and s["FVD-TBL-003"] == 1 and s["FVD-TBL-001"] == 3
    f = res.findings
    assert f[f.problem == "FVD-TBL-002"]["structure"].tolist() == ["table[1]"]
    assert sorted(f[f.problem == "FVD-TBL-001"]["found"].tolist()) == ["3", "40", "9"]
    # of the 3 physical chunks inside the file only chunk 0 is used (slots past EOF are not counted)
    assert s["FVD-TBL-004"] == 2
    assert f[f.problem == "FVD-TBL-004"]["found"].tolist() == ["1", "2"]


def test_damaged_layout(tmp_path: Path) -> None:
    spec = Spec(base=_base(tmp_path, 4 * MiB), base_size=4 * MiB,
                header={"bitmap_size": 4, "journal_offset": L.HEADER_REGION + 100})
    build(tmp_path / "l.fvd", spec)
    with imgscope.open(tmp_path / "l.fvd") as img:
        res = img.check()
    f = res.findings
    assert res.summary()["FVD-LAY-002"] == 1
    lay = f[f.problem == "FVD-LAY-001"]["message"].tolist()
    assert any("not 4 KiB aligned" in m for m in lay) and any("overlaps" in m for m in lay)


def test_malformed_journal_record(tmp_path: Path) -> None:
    bad = L.TableRecord.build({"first_chunk": 0, "count": 1, "entries": [0]})[:8] + (200).to_bytes(4, "little")
    build(tmp_path / "m.fvd", Spec(clean=False, journal_sectors=[bad, (0xDEAD).to_bytes(4, "little"),
                                                                 L.TableRecord.build({"first_chunk": 7, "count": 2,
                                                                                      "entries": [0, 1]})]))
    with imgscope.open(tmp_path / "m.fvd") as img:
        res = img.check()
    msgs = res.findings[res.findings.problem == "FVD-JNL-002"]["message"].tolist()
    assert len(msgs) == 3
    assert any("runs past its sector" in m for m in msgs) and any("0x0000dead" in m for m in msgs)
    assert any("outside the table" in m for m in msgs)


@pytest.mark.parametrize("field_, value, words", [
    ("version", 2, "version"), ("virtual_disk_size", 1000, "multiple of 512"), ("chunk_size", 0, "chunk_size"),
    ("chunk_size", 100, "chunk_size"), ("metadata_size", -1, "negative"), ("metadata_size", 1 << 62, "data area"),
])
def test_rejected_headers(tmp_path: Path, field_: str, value: int, words: str) -> None:
    build(tmp_path / "r.fvd", Spec(header={field_: value}))
    with pytest.raises(FormatError, match=words):
        imgscope.open(tmp_path / "r.fvd", "fvd")


def test_truncated_file(tmp_path: Path) -> None:
    """Cut inside the table: entries past EOF read as unallocated, the regions past EOF are reported."""
    facts = build(tmp_path / "t.fvd", Spec(writes=[(0, _pattern(4 * KiB, 1)), (7 * MiB, _pattern(4 * KiB, 2))]))
    with open(tmp_path / "t.fvd", "r+b") as f:
        f.truncate(facts["table_off"] + 4 * 4)  # 4 of 8 entries left, no journal, no data
    with imgscope.open(tmp_path / "t.fvd") as img:
        assert img.table.tolist()[4:] == [L.EMPTY_TABLE] * 4 and img.table[0] == 0
        assert img.guest_map().kind[7] == imgscope.model.UNALLOCATED
        assert img.journal_records() == []
        res = img.check()
    s = res.summary()
    assert s["FVD-TBL-001"] == 1 and s["FVD-LAY-001"] == 2  # chunk 0 past EOF; table and journal past EOF


def test_hostile_sizes_are_bounded(tmp_path: Path) -> None:
    """A base image claimed to be 2^60 bytes with 512-byte blocks costs only the guest's blocks."""
    build(tmp_path / "b.fvd", Spec(size=MiB, base=_base(tmp_path, MiB), base_size=MiB,
                                   header={"base_img_size": 1 << 60, "block_size": 512, "bitmap_size": 1 << 20,
                                           "journal_size": 1 << 29}))
    with imgscope.open(tmp_path / "b.fvd") as img:
        assert len(img.bitmap) == MiB // 512
        assert img.unit == 512 and len(img.guest_map().kind) == MiB // 512
        assert img.journal_records() == []


def test_huge_table_is_refused(tmp_path: Path) -> None:
    build(tmp_path / "h.fvd", Spec(header={"virtual_disk_size": 1 << 50, "chunk_size": 4096}))
    with pytest.raises(imgscope.LimitError):
        imgscope.open(tmp_path / "h.fvd")


def test_missing_base_keeps_metadata(tmp_path: Path) -> None:
    spec = Spec(base="nowhere.raw", base_size=2 * MiB, writes=[(0, _pattern(64 * KiB, 1))])
    build(tmp_path / "x.fvd", spec)
    with imgscope.open(tmp_path / "x.fvd") as img:
        assert len(img.chain()) == 1 and "nowhere.raw" in img.backing_error
        assert img.guest_map().kind[0] == imgscope.model.DATA


def test_cli(compact) -> None:
    path, spec, _ = compact
    run = [sys.executable, "-m", "imgscope.cli"]
    info = subprocess.run([*run, "info", "--output", "json", str(path)], capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["format"] == "fvd"
    chk = subprocess.run([*run, "check", str(path)], capture_output=True, text=True)
    assert chk.returncode == 63
    mp = subprocess.run([*run, "map", "--output", "json", str(path)], capture_output=True, text=True, check=True)
    assert json.loads(mp.stdout)[0]["offset"] > 0
