"""VMDK as VMware Workstation and ESXi write it: descriptors, hosted sparse (KDMV) extents, VMware's
streamOptimized layout, COWD and seSparse extents, built with ``imgscope.formats.vmdk.layout``."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

from imgscope.formats.vmdk import layout as ML

from .common import MiB, GiB, SECTOR, pattern, pwrite


def vmdk_descriptor(create_type: str, extents: list[str], *, crlf: bool = False, parent_cid: str = "ffffffff",
                    extra: str = "") -> bytes:
    """A descriptor as VMware Workstation writes it (comments, quoted values, ddb keys)."""
    lines = ["# Disk DescriptorFile", "version=1", 'encoding="UTF-8"', "CID=fffffffe", f"parentCID={parent_cid}",
             "isNativeSnapshot=\"no\"", f'createType="{create_type}"', *extra.splitlines(), "",
             "# Extent description", *extents, "", "# The Disk Data Base", "#DDB", "",
             'ddb.adapterType = "lsilogic"', 'ddb.geometry.cylinders = "1044"', 'ddb.geometry.heads = "255"',
             'ddb.geometry.sectors = "63"', 'ddb.longContentID = "4c8a5b0d0f6a2e6f9d3cbe53fffffffe"',
             'ddb.uuid = "60 00 C2 9a 6e 4e 3d 5b-0e a2 62 1a 3e 9c 15 7d"', 'ddb.virtualHWVersion = "19"', ""]
    return ("\r\n" if crlf else "\n").join(lines).encode()


def vmdk_sparse(path: Path, capacity: int, grains: dict[int, bytes], *, grain: int = 128, gtes: int = 512,
                rgd: bool = True, descriptor: bytes = b"", desc_sectors: int = 0, version: int = 1,
                flags: int = 0, newline: bytes = ML.NEWLINE_BYTES, zero_grains: tuple[int, ...] = ()) -> None:
    """A hosted sparse extent (KDMV) as VMware writes it: header, optional embedded descriptor, the
    redundant GD and its GTs, the GD and its GTs, grains after the (grain-aligned) overhead."""
    gt_cover = gtes * grain
    ngd = -(-capacity // gt_cover)
    gd_sectors = -(-ngd * 4 // SECTOR)
    gt_sectors = -(-gtes * 4 // SECTOR)
    pos = 1
    desc_at = pos if desc_sectors else 0
    pos += desc_sectors
    tables = {}
    for which in (("rgd", "gd") if rgd else ("gd",)):
        tables[which] = pos
        pos += gd_sectors + ngd * gt_sectors
    overhead = -(-pos // grain) * grain
    gte = [0] * (ngd * gtes)
    at = overhead
    for g in sorted(grains):
        gte[g] = at
        pwrite(path, at * SECTOR, grains[g].ljust(grain * SECTOR, b"\0"))
        at += grain
    for g in zero_grains:
        gte[g] = ML.GTE_ZEROED
    for which, start in tables.items():
        gd = [start + gd_sectors + i * gt_sectors for i in range(ngd)]
        pwrite(path, start * SECTOR, struct.pack(f"<{ngd}I", *gd))
        for i in range(ngd):
            pwrite(path, gd[i] * SECTOR, struct.pack(f"<{gtes}I", *gte[i * gtes:(i + 1) * gtes]))
    h = dict(magic=ML.MAGIC, version=version, flags=flags | ML.FLAG_NL_DETECT | (ML.FLAG_RGD if rgd else 0),
             capacity=capacity, grain_size=grain, descriptor_offset=desc_at, descriptor_size=desc_sectors,
             num_gtes_per_gt=gtes, rgd_offset=tables.get("rgd", 0), gd_offset=tables["gd"], overhead=overhead,
             unclean_shutdown=0, newline_bytes=newline, compress_algorithm=0, pad=bytes(433))
    pwrite(path, 0, ML.SparseHeader.build(h))
    if descriptor:
        pwrite(path, desc_at * SECTOR, descriptor.ljust(desc_sectors * SECTOR, b"\0"))
    pwrite(path, max(at, overhead) * SECTOR - 1, b"\0")


def vmdk_stream_vmware(d: Path) -> str:
    """streamOptimized as VMware (OVF export) writes it: header with the GD at the end, embedded descriptor,
    grain markers + deflate data, a GT marker + GT after its grains, GD marker + GD, footer marker + header
    copy with the real GD offset, end-of-stream marker."""
    grain, gtes = 128, 512
    cap = 72 * MiB // SECTOR
    ngd = -(-cap // (grain * gtes))
    desc = vmdk_descriptor("streamOptimized", [f'RW {cap} SPARSE "s.vmdk"'])
    desc_sectors = 2
    data = {0: pattern("so0", grain * SECTOR), 5: bytes(grain * SECTOR // 2) + pattern("so5", grain * SECTOR // 2),
            600: pattern("so600", grain * SECTOR)[:1000] * 65 + b"tail"}
    out = bytearray(SECTOR * (1 + desc_sectors))
    out[SECTOR:SECTOR + len(desc)] = desc
    overhead = 128
    out += bytes(overhead * SECTOR - len(out))
    gd = [0] * ngd
    for t in range(ngd):
        gt = [0] * gtes
        for g in sorted(x for x in data if x // gtes == t):
            z = zlib.compress(data[g].ljust(grain * SECTOR, b"\0"))
            gt[g % gtes] = len(out) // SECTOR
            rec = ML.Marker.build(dict(val=g * grain, size=len(z), type=0))[:12] + z
            out += rec + bytes(-len(rec) % SECTOR)
        if any(gt):
            out += ML.Marker.build(dict(val=gtes * 4 // SECTOR, size=0, type=ML.MARKER_GT)).ljust(SECTOR, b"\0")
            gd[t] = len(out) // SECTOR
            out += struct.pack(f"<{gtes}I", *gt)
    gd_sectors = -(-ngd * 4 // SECTOR)
    out += ML.Marker.build(dict(val=gd_sectors, size=0, type=ML.MARKER_GD)).ljust(SECTOR, b"\0")
    gd_at = len(out) // SECTOR
    out += struct.pack(f"<{ngd}I", *gd).ljust(gd_sectors * SECTOR, b"\0")
    h = dict(magic=ML.MAGIC, version=3, flags=ML.FLAG_NL_DETECT | ML.FLAG_COMPRESSED | ML.FLAG_MARKERS,
             capacity=cap, grain_size=grain, descriptor_offset=1, descriptor_size=desc_sectors, num_gtes_per_gt=gtes,
             rgd_offset=0, gd_offset=ML.GD_AT_END, overhead=overhead, unclean_shutdown=0,
             newline_bytes=ML.NEWLINE_BYTES, compress_algorithm=ML.COMPRESSION_DEFLATE, pad=bytes(433))
    out[:SECTOR] = ML.SparseHeader.build(h)
    out += ML.StreamFooter.build(dict(footer_marker=dict(val=1, size=0, type=ML.MARKER_FOOTER), pad1=bytes(SECTOR - 16),
                                      header={**h, "gd_offset": gd_at}, eos_marker=dict(val=0, size=0, type=0),
                                      pad2=bytes(SECTOR - 16)))
    (d / "s.vmdk").write_bytes(bytes(out))
    return "s.vmdk"


def _grains(tag: str, grain: int, idx: list[int]) -> dict[int, bytes]:
    return {i: pattern(f"{tag}{i}", grain * SECTOR) for i in idx}


def vmdk_monolithic(grain: int, *, pad: int = 0, rgd: bool = True, newline: bytes = ML.NEWLINE_BYTES,
                    crlf: bool = False, version: int = 1, zero: bool = False) -> Callable[[Path], str]:
    """monolithicSparse with an embedded descriptor (``pad`` extra sectors reserved for it)."""
    def build(d: Path) -> str:
        cap = 40 * MiB // SECTOR + 3 * grain
        desc = vmdk_descriptor("monolithicSparse", [f'RW {cap} SPARSE "m.vmdk"'], crlf=crlf)
        n = cap // grain
        vmdk_sparse(d / "m.vmdk", cap, _grains("m", grain, [0, 1, n // 2, n - 1]), grain=grain, rgd=rgd,
                    descriptor=desc, desc_sectors=-(-len(desc) // SECTOR) + pad, newline=newline, version=version,
                    flags=ML.FLAG_ZERO_GRAIN if zero else 0, zero_grains=(3, n // 3) if zero else ())
        return "m.vmdk"
    return build


def vmdk_kdmv_descriptor_only(d: Path) -> str:
    """A KDMV header with capacity 0 whose embedded descriptor names a flat extent: qemu reads the
    embedded text as a descriptor file."""
    (d / "h-flat.vmdk").write_bytes(pattern("hf", 2 * MiB))
    desc = vmdk_descriptor("monolithicFlat", ['RW 4096 FLAT "h-flat.vmdk" 0'])
    vmdk_sparse(d / "h.vmdk", 0, {}, rgd=False, descriptor=desc, desc_sectors=-(-len(desc) // SECTOR))
    return "h.vmdk"


def vmdk_two_gb_sparse(d: Path) -> str:
    """twoGbMaxExtentSparse as Workstation splits it: 2 GiB extents, the last one shorter; CRLF lines."""
    full = 2 * GiB // SECTOR
    sizes = [full, full, 300 * MiB // SECTOR]
    ext = []
    for i, cap in enumerate(sizes, 1):
        name = f"t-s{i:03d}.vmdk"
        n = cap // 128
        vmdk_sparse(d / name, cap, _grains(f"t{i}", 128, [0, n - 1]), rgd=True)
        ext.append(f'RW {cap} SPARSE "{name}"')
    (d / "t.vmdk").write_bytes(vmdk_descriptor("twoGbMaxExtentSparse", ext, crlf=True))
    return "t.vmdk"


def vmdk_sparse_size_mismatch(d: Path) -> str:
    """A descriptor whose SPARSE extent line gives another size than the extent header's capacity
    (qemu takes the header's)."""
    cap = 6 * MiB // SECTOR
    vmdk_sparse(d / "z-s001.vmdk", cap, _grains("z", 128, [1, cap // 128 - 1]))
    (d / "z.vmdk").write_bytes(vmdk_descriptor("twoGbMaxExtentSparse", [f'RW {cap + 2048} SPARSE "z-s001.vmdk"']))
    return "z.vmdk"


def vmdk_flat_offsets(d: Path) -> str:
    """monolithicFlat-like descriptor: FLAT extents at offsets inside one file, a ZERO extent, a VMFS
    extent, an RDONLY line qemu skips, unquoted keys and comments between the lines."""
    (d / "data file.bin").write_bytes(pattern("flat", 3 * MiB))
    (d / "vmfs-flat.bin").write_bytes(pattern("vmfs", MiB))
    ext = ['RW 2048 FLAT "data file.bin" 2048', "# a comment between extents", 'RW 1024 ZERO "ignored.bin"',
           'RW 2048 VMFS "vmfs-flat.bin"', 'RDONLY 512 FLAT "data.bin" 0', 'NOACCESS 512 FLAT "data.bin" 0',
           'RW 1024 FLAT "data file.bin" 0']
    (d / "f.vmdk").write_bytes(vmdk_descriptor("monolithicFlat", ext, extra="ddb.toolsVersion=12345"))
    return "f.vmdk"


def vmdk_vmfs(d: Path) -> str:
    """ESXi ``vmfs`` descriptor with a ``-flat`` extent, CRLF line ends."""
    (d / "e-flat.vmdk").write_bytes(pattern("esx", 4 * MiB))
    (d / "e.vmdk").write_bytes(vmdk_descriptor("vmfs", ['RW 8192 VMFS "e-flat.vmdk"'], crlf=True))
    return "e.vmdk"


# COWD ("vmfsSparse", ESX 2/3 redo logs): magic, then u32le version, flags, disk sectors, granularity,
# GD offset (sectors), GD entries, free sector; grain tables of 4096 u32 sector numbers
def cowd(path: Path, sectors: int, grains: dict[int, bytes], grain: int = 1, short_gd: int = 0) -> None:
    """A COWD extent: 2048-byte header, GD at sector 4, all grain tables, grains in index order;
    ``short_gd``: the header lists that many GD entries fewer than the capacity needs."""
    L = ML
    per = L.COWD_GTES
    cover = per * grain
    ngd = -(-sectors // cover)
    gd_at = 4
    gt_at = gd_at + -(-ngd * 4 // SECTOR)
    pos = gt_at + ngd * (per * 4 // SECTOR)
    gte = [0] * (ngd * per)
    for g in sorted(grains):
        gte[g] = pos
        pwrite(path, pos * SECTOR, grains[g].ljust(grain * SECTOR, b"\0"))
        pos += grain
    gd = [gt_at + i * (per * 4 // SECTOR) for i in range(ngd)]
    h = dict(magic=L.COWD_MAGIC, version=1, flags=3, disk_sectors=sectors, granularity=grain, gd_offset=gd_at,
             gd_entries=ngd - short_gd, free_sector=pos, cylinders=0, heads=0, sectors_per_track=0, pad=bytes(L.COWD_HEADER_SIZE - 44))
    pwrite(path, 0, L.CowdHeader.build(h))
    pwrite(path, gd_at * SECTOR, struct.pack(f"<{ngd}I", *gd))
    for i in range(ngd):
        pwrite(path, gd[i] * SECTOR, struct.pack(f"<{per}I", *gte[i * per:(i + 1) * per]))
    pwrite(path, pos * SECTOR - 1, b"\0")


def vmdk_cowd(grain: int, short_gd: int = 0) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        sectors = 20 * MiB // SECTOR
        n = sectors // grain
        cowd(d / "r-delta.vmdk", sectors, _grains("cowd", grain, [0, 1, 4096 // grain + 3, n - 1]), grain, short_gd)
        (d / "r.vmdk").write_bytes(vmdk_descriptor("vmfsSparse", [f'RW {sectors} VMFSSPARSE "r-delta.vmdk"']))
        return "r.vmdk"
    return build


def sesparse(path: Path, sectors: int, grains: dict[int, bytes], zero: tuple[int, ...] = (),
             unmapped: tuple[int, ...] = (), replay_journal: int = 0, bad: dict[int, int] | None = None) -> None:
    """An ESXi seSparse extent: const header, volatile header, journal areas, GD, GTs, then grains numbered
    in the order written (allocated in reverse guest order, as a snapshot's writes may come)."""
    L = ML
    g = L.SESPARSE_GRAIN_SECTORS
    per = L.SESPARSE_GT_SECTORS * SECTOR // 8
    ngt = -(-sectors // (per * g))
    gd_sectors = -(-ngt * 8 // SECTOR)
    gd_at, gts_at = 16, 16 + gd_sectors
    grains_at = -(-(gts_at + ngt * L.SESPARSE_GT_SECTORS) // 256) * 256
    gte = [0] * (ngt * per)
    for n, i in enumerate(sorted(grains, reverse=True)):
        gte[i] = (L.SE_ALLOCATED << 60) | ((n & 0xFFF) << 48) | (n >> 12)
        assert L.sesparse_grain(gte[i]) == n
        pwrite(path, (grains_at + n * g) * SECTOR, grains[i].ljust(g * SECTOR, b"\0"))
    for i in zero:
        gte[i] = L.SE_ZERO << 60
    for i in unmapped:
        gte[i] = L.SE_UNMAPPED << 60
    for i, v in (bad or {}).items():  # states qemu does not know
        gte[i] = v
    used = sorted({i // per for i, e in enumerate(gte) if e})
    gd = [0] * ngt
    for k, t in enumerate(used):  # grain tables are numbered in allocation order too
        gd[t] = (L.SESPARSE_GD_ALLOCATED << 32) | k
        pwrite(path, (gts_at + k * L.SESPARSE_GT_SECTORS) * SECTOR, struct.pack(f"<{per}Q", *gte[t * per:(t + 1) * per]))
    c = dict(magic=L.SESPARSE_MAGIC, version=L.SESPARSE_VERSION, capacity=sectors, grain_size=g,
             grain_table_size=L.SESPARSE_GT_SECTORS, flags=0, reserved=[0] * 4, volatile_header_offset=1,
             volatile_header_size=1, journal_header_offset=2, journal_header_size=2, journal_offset=4,
             journal_size=8, grain_dir_offset=gd_at, grain_dir_size=gd_sectors, grain_tables_offset=gts_at,
             grain_tables_size=ngt * L.SESPARSE_GT_SECTORS, free_bitmap_offset=0, free_bitmap_size=0,
             backmap_offset=0, backmap_size=0, grains_offset=grains_at, grains_size=len(grains) * g, pad=bytes(304))
    pwrite(path, 0, L.SeSparseConstHeader.build(c))
    pwrite(path, SECTOR, L.SeSparseVolatileHeader.build(dict(magic=L.SESPARSE_VOLATILE_MAGIC, free_gt_number=len(used),
                                                              next_txn_seq_number=1, replay_journal=replay_journal,
                                                              pad=bytes(480))))
    pwrite(path, gd_at * SECTOR, struct.pack(f"<{ngt}Q", *gd))
    pwrite(path, (grains_at + len(grains) * g) * SECTOR - 1, b"\0")


def vmdk_sesparse(replay_journal: int = 0, bad: dict[int, int] | None = None) -> Callable[[Path], str]:
    """An ESXi 6.5+ snapshot delta: seSparse extent on a vmfs (flat) parent with the CID chain intact."""
    def build(d: Path) -> str:
        sectors = 40 * MiB // SECTOR
        (d / "base-flat.vmdk").write_bytes(pattern("base", sectors * SECTOR))
        (d / "base.vmdk").write_bytes(vmdk_descriptor("vmfs", [f'RW {sectors} VMFS "base-flat.vmdk"']))
        last = sectors // 8 - 1
        sesparse(d / "snap-sesparse.vmdk", sectors, _grains("se", 8, [0, 3, 4096 + 5, last]), zero=(1, 9000),
                 unmapped=(2,), replay_journal=replay_journal, bad=bad)
        (d / "snap.vmdk").write_bytes(vmdk_descriptor("seSparse", [f'RW {sectors} SESPARSE "snap-sesparse.vmdk"'],
                                                      parent_cid="fffffffe", extra='parentFileNameHint="base.vmdk"'))
        return "snap.vmdk"
    return build


def vmdk_cowd_delta(d: Path) -> str:
    """An ESX 3 redo log: a vmfsSparse (COWD) delta on a vmfs parent."""
    sectors = 8 * MiB // SECTOR
    (d / "p-flat.vmdk").write_bytes(pattern("p", sectors * SECTOR))
    (d / "p.vmdk").write_bytes(vmdk_descriptor("vmfs", [f'RW {sectors} VMFS "p-flat.vmdk"'], crlf=True))
    cowd(d / "c-delta.vmdk", sectors, _grains("cd", 1, [0, 7, 9999]), 1)
    (d / "c.vmdk").write_bytes(vmdk_descriptor("vmfsSparse", [f'RW {sectors} VMFSSPARSE "c-delta.vmdk"'],
                                               parent_cid="fffffffe", extra='parentFileNameHint="p.vmdk"'))
    return "c.vmdk"


def vmdk_unquoted_create_type(d: Path) -> str:
    """``createType=vmfs`` without quotes: qemu reads the value up to the next quote character."""
    (d / "u-flat.vmdk").write_bytes(pattern("u", MiB))
    text = vmdk_descriptor("vmfs", ['RW 2048 VMFS "u-flat.vmdk"']).replace(b'createType="vmfs"', b"createType=vmfs")
    (d / "u.vmdk").write_bytes(text)
    return "u.vmdk"


CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "vmdk-mono-grain16": ("vmdk", vmdk_monolithic(16)),
    "vmdk-mono-grain256-pad": ("vmdk", vmdk_monolithic(256, pad=7)),
    "vmdk-mono-no-rgd-crlf": ("vmdk", vmdk_monolithic(128, rgd=False, crlf=True)),
    "vmdk-mono-newline-mangled": ("vmdk", vmdk_monolithic(128, newline=b"\n \n\n")),
    "vmdk-mono-v2-zero-grains": ("vmdk", vmdk_monolithic(64, version=2, zero=True)),
    "vmdk-mono-v3": ("vmdk", vmdk_monolithic(128, version=3)),
    "vmdk-two-gb-sparse": ("vmdk", vmdk_two_gb_sparse),
    "vmdk-kdmv-descriptor-only": ("vmdk", vmdk_kdmv_descriptor_only),
    "vmdk-stream-vmware": ("vmdk", vmdk_stream_vmware),
    "vmdk-flat-offsets": ("vmdk", vmdk_flat_offsets),
    "vmdk-sparse-size-mismatch": ("vmdk", vmdk_sparse_size_mismatch),
    "vmdk-vmfs": ("vmdk", vmdk_vmfs),
    "vmdk-unquoted-create-type": ("vmdk", vmdk_unquoted_create_type),
    "vmdk-cowd-grain1": ("vmdk", vmdk_cowd(1)),
    "vmdk-cowd-grain8": ("vmdk", vmdk_cowd(8)),
    "vmdk-cowd-delta": ("vmdk", vmdk_cowd_delta),
    "vmdk-cowd-short-gd": ("vmdk", vmdk_cowd(8, short_gd=1)),
    "vmdk-sesparse": ("vmdk", vmdk_sesparse()),
    "vmdk-sesparse-dirty-journal": ("vmdk", vmdk_sesparse(replay_journal=1)),
    "vmdk-sesparse-bad-entry": ("vmdk", vmdk_sesparse(bad={6: (5 << 60) | 3})),
}
