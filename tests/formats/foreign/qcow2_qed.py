"""qcow2 and QED as older and newer qemu versions wrote them: qemu-made images rewritten with
``imgscope.formats.qcow2.layout`` / ``imgscope.formats.qed.layout``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from imgscope.formats.qcow2 import layout as Q
from imgscope.formats.qed import layout as QL

from .common import KiB, pattern, qemu_img, qemu_io


def _qcow2_base(d: Path, name: str, compat: str, size: str = "8M") -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", name, size, cwd=d)
    qemu_io("qcow2", name, "write -P 0x61 0 64k", "write -P 0x62 3M 8k", cwd=d)
    return d / name


def _qcow2_header(p: Path):
    return Q.Header.parse(p.read_bytes()[:4096])


def qcow2_old_v2(d: Path) -> str:
    """qcow2 version 2 as qemu 0.10-1.0 wrote it: a 72-byte header, no extensions at all, a snapshot whose
    table entry has no extra data."""
    p = _qcow2_base(d, "o.qcow2", "0.10")
    qemu_img("snapshot", "-c", "s1", "o.qcow2", cwd=d)
    raw = bytearray(p.read_bytes())
    h = _qcow2_header(p)
    raw[72:1 << h.cluster_bits] = bytes((1 << h.cluster_bits) - 72)  # header cluster: nothing after the header
    _rewrite_snapshots(raw, h, extra_size=0)
    p.write_bytes(bytes(raw))
    return "o.qcow2"


def _rewrite_snapshots(raw: bytearray, h, extra_size: int) -> None:
    """Rewrite the snapshot table in place with ``extra_size`` bytes of extra data per entry."""
    at = h.snapshots_offset
    out = bytearray()
    for _ in range(h.nb_snapshots):
        e = Q.SnapshotEntry.parse(bytes(raw[at:at + 64 * KiB]).ljust(64 * KiB, b"\0"))  # qemu omits the last pad
        size = len(Q.SnapshotEntry.build(e))
        extra = bytes(e.extra)
        if extra_size <= len(extra):
            new_extra = extra[:extra_size]
        else:
            new_extra = extra + pattern("extra", extra_size - len(extra))
        e.fixed.extra_data_size = extra_size
        e.extra = new_extra
        out += Q.SnapshotEntry.build(e)
        at += size
    assert len(out) <= 1 << h.cluster_bits
    raw[h.snapshots_offset:h.snapshots_offset + len(out)] = out


def qcow2_v2_backing_without_format(d: Path) -> str:
    """qcow2 v2 as qemu < 1.0 wrote an overlay: the backing file name and no backing-format extension
    (qemu 7.2 probes the parent's format)."""
    qemu_img("create", "-q", "-f", "raw", "base.raw", "4M", cwd=d)
    qemu_io("raw", "base.raw", "write -P 0x71 0 1M", cwd=d)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", "ov.qcow2", cwd=d)
    qemu_io("qcow2", "ov.qcow2", "write -P 0x72 512k 64k", cwd=d)
    p = d / "ov.qcow2"
    raw = bytearray(p.read_bytes())
    h = _qcow2_header(p)
    name = bytes(raw[h.backing_file_offset:h.backing_file_offset + h.backing_file_size])
    raw[72:1 << h.cluster_bits] = bytes((1 << h.cluster_bits) - 72)
    raw[72:72 + len(name)] = name
    h.backing_file_offset = 72
    raw[:72] = Q.Header.build(h)
    p.write_bytes(bytes(raw))
    return "ov.qcow2"


def qcow2_long_header(d: Path) -> str:
    """A v3 header longer than qemu 7.2's (header_length 136: fields of a newer writer, zero), the
    extensions after it."""
    p = _qcow2_base(d, "l.qcow2", "1.1")
    raw = bytearray(p.read_bytes())
    h = _qcow2_header(p)
    grow = 24
    old = h.header_length
    end = old
    while Q.ExtensionHeader.parse(raw[end:end + 8]).type != 0:
        end += 8 + -(-Q.ExtensionHeader.parse(raw[end:end + 8]).length // 8) * 8
    raw[old + grow:end + 8 + grow] = raw[old:end + 8]
    raw[old:old + grow] = bytes(grow)
    h.header_length = old + grow
    raw[:old] = Q.Header.build(h)
    p.write_bytes(bytes(raw))
    return "l.qcow2"


def qed_backing_probed(d: Path) -> str:
    """QED as qemu < 1.0 wrote an overlay on a raw file: no 'backing format no probe' bit, so qemu
    probes the parent's format."""
    qemu_img("create", "-q", "-f", "raw", "base.img", "3M", cwd=d)
    qemu_io("raw", "base.img", "write -P 0x74 0 2M", cwd=d)
    qemu_img("create", "-q", "-f", "qed", "-b", "base.img", "-F", "raw", "o.qed", cwd=d)
    qemu_io("qed", "o.qed", "write -P 0x75 1M 64k", cwd=d)
    p = d / "o.qed"
    raw = bytearray(p.read_bytes())
    h = QL.Header.parse(raw)
    h.features &= ~QL.F_BACKING_FORMAT_NO_PROBE
    hb = QL.Header.build(h)
    raw[:len(hb)] = hb
    p.write_bytes(bytes(raw))
    return "o.qed"


def qcow2_snapshot_extra(size: int) -> Callable[[Path], str]:
    """A v3 snapshot entry with ``size`` bytes of extra data: 40 (a newer writer's fields qemu 7.2 does
    not know), 0 (a v2-era entry in a v3 image)."""
    def build(d: Path) -> str:
        p = _qcow2_base(d, "x.qcow2", "1.1")
        qemu_img("snapshot", "-c", "s1", "x.qcow2", cwd=d)
        qemu_io("qcow2", "x.qcow2", "write -P 0x63 1M 4k", cwd=d)
        raw = bytearray(p.read_bytes())
        _rewrite_snapshots(raw, _qcow2_header(p), extra_size=size)
        p.write_bytes(bytes(raw))
        return "x.qcow2"
    return build


def qcow2_features(incompatible: int = 0, compatible: int = 0, autoclear: int = 0,
                   unknown_ext: bool = False) -> Callable[[Path], str]:
    """v3 with extra feature bits set and/or an unknown header extension after the known ones."""
    def build(d: Path) -> str:
        p = _qcow2_base(d, "b.qcow2", "1.1")
        raw = bytearray(p.read_bytes())
        h = _qcow2_header(p)
        h.incompatible_features |= incompatible
        h.compatible_features |= compatible
        h.autoclear_features |= autoclear
        hdr = Q.Header.build(h)
        raw[:len(hdr)] = hdr
        if unknown_ext:
            at = h.header_length
            exts = []
            while True:
                e = Q.ExtensionHeader.parse(raw[at:at + 8])
                if e.type == 0:
                    break
                exts.append(bytes(raw[at:at + 8 + (-(-e.length // 8) * 8)]))
                at += 8 + (-(-e.length // 8) * 8)
            payload = b"future extension payload"
            new = Q.ExtensionHeader.build(dict(type=0x7A5C0DE1, length=len(payload))) + payload.ljust(24, b"\0")
            blob = b"".join(exts[:1]) + new + b"".join(exts[1:]) + bytes(8)
            raw[h.header_length:h.header_length + len(blob)] = blob
        p.write_bytes(bytes(raw))
        return "b.qcow2"
    return build


CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "qcow2-old-v2": ("qcow2", qcow2_old_v2),
    "qcow2-long-header": ("qcow2", qcow2_long_header),
    "qed-backing-probed": ("qed", qed_backing_probed),
    "qcow2-v2-backing-without-format": ("qcow2", qcow2_v2_backing_without_format),
    "qcow2-snapshot-extra-40": ("qcow2", qcow2_snapshot_extra(40)),
    "qcow2-v3-snapshot-extra-0": ("qcow2", qcow2_snapshot_extra(0)),
    "qcow2-unknown-extension": ("qcow2", qcow2_features(unknown_ext=True)),
    "qcow2-unknown-incompatible": ("qcow2", qcow2_features(incompatible=1 << 9)),
    "qcow2-unknown-compatible": ("qcow2", qcow2_features(compatible=1 << 7)),
    "qcow2-unknown-autoclear": ("qcow2", qcow2_features(autoclear=1 << 5)),
}
