"""Write the libFuzzer seed corpus (native/fuzz/corpus/<harness>/) from real qemu-img tables.

Usage: .venv/bin/python native/fuzz/make_corpus.py [OUTDIR]

The seed images are fuzz/seeds.py's qcow2 recipes; imgscope's own (trusted,
well-formed) parse of each locates the L1 table, the refcount table, L2 tables
and refcount blocks, whose bytes become inputs in each harness's format
(parameter bytes first, see native/fuzz/fuzz_*.c).  Seeds are cut to 4 KiB so
the committed corpus stays small.
"""
from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MAX_SEED = 4096


def _u16(n: int) -> bytes:
    return struct.pack(">H", min(n, 0xFFFF))


def seeds_for(path: Path) -> dict[str, list[bytes]]:
    """Harness name -> seed inputs extracted from one qcow2 image."""
    import numpy as np

    import imgscope
    from imgscope.formats.qcow2 import layout as L
    out: dict[str, list[bytes]] = {h: [] for h in ("be64", "l2", "refblock", "add_refs", "run_starts", "unit_runs")}
    data = path.read_bytes()
    with imgscope.open(path) as img:
        m, h = img.meta, img.meta.header
        cb, cs = m.cluster_bits, m.cluster_size
        l1 = data[h.l1_table_offset:h.l1_table_offset + min(h.l1_size * 8, MAX_SEED)]
        rt = data[h.refcount_table_offset:h.refcount_table_offset + min(cs, MAX_SEED)]
        out["be64"] += [_u16(len(l1) // 8) + l1, _u16(len(rt) // 8) + rt]
        esz = 16 if m.extended_l2 else 8
        mode = bytes([cb, int(m.extended_l2) | int(m.has_data_file) << 1])
        for e in np.unique(img.tables.l2_offsets(img.tables.read_l1(h.l1_table_offset, h.l1_size, "l1"))):
            if e:
                t = data[int(e):int(e) + min(cs, MAX_SEED)]
                out["l2"].append(mode + _u16(len(t) // esz) + t)
        order = m.refcount_order
        for e in img.tables.reftable()[:4]:
            off = int(e) & L.REFT_OFFSET_MASK
            if off:
                b = data[off:off + min(cs, MAX_SEED)]
                out["refblock"].append(bytes([order]) + _u16(len(b) * 8 >> order) + b)
        rows = img.reference_rows()
        recs = b"".join(struct.pack(">QQI", int(o), int(n), int(w))
                        for o, n, w in zip(rows.off[:150], rows.length[:150], rows.weight[:150]))
        ncl = -(-img.src.size // cs)
        out["add_refs"].append(bytes([cb]) + _u16(ncl) + struct.pack(">I", (1 << min(32, 1 << order)) - 1)
                               + b"\1" + recs)
        ext = img.extents()
        code = (ext.status | 0x80).astype(np.uint8)
        recs = b"".join(struct.pack(">BQQ", int(c), int(o), int(n))
                        for c, o, n in zip(code[:200], ext.offset[:200], ext.length[:200]))
        out["run_starts"].append(_u16(len(code)) + recs)
        gm = img.guest_map("active")
        sub = 32 if gm.subclusters > 1 else 1
        alloc = gm.alloc if gm.alloc is not None else np.zeros(len(gm.kind), np.uint32)
        zero = gm.zero if gm.zero is not None else np.zeros(len(gm.kind), np.uint32)
        recs = b"".join(struct.pack(">BQII", int(k), int(hh), int(a), int(z))
                        for k, hh, a, z in zip(gm.kind[:200], gm.host[:200], alloc[:200], zero[:200]))
        out["unit_runs"].append(bytes([int(sub == 32), cb, 0, 1]) + _u16(min(len(gm.kind), 200) * sub) + recs)
    return out


def main(outdir: str | None = None) -> None:
    from fuzz.seeds import make_seeds
    dest = Path(outdir) if outdir else Path(__file__).resolve().parent / "corpus"
    with tempfile.TemporaryDirectory() as tmp:
        for img in make_seeds(tmp, ["qcow2"])["qcow2"]:
            for harness, inputs in seeds_for(img).items():
                (dest / harness).mkdir(parents=True, exist_ok=True)
                for i, blob in enumerate(inputs):
                    (dest / harness / f"{img.stem}-{i}").write_bytes(blob[:MAX_SEED + 8])
    print(f"seed corpus written to {dest}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
