"""qcow2 (versions 2 and 3) translated into the neutral model."""
from __future__ import annotations

from functools import cached_property
from typing import Any

from ...image import Image, feature_bit_rows, implemented_in
from ...io import Source
from . import layout as L
from .metadata import Qcow2Metadata, read_metadata


def unsupported_features(m: Any, mask: int) -> str:
    """qemu's refusal of unknown incompatible bits: names from the image's feature table, then the rest."""
    names = []
    for kind, bit, name in m.feature_table:
        if kind == "incompatible" and mask & (1 << bit):
            names.append(name[:46])
            mask &= ~(1 << bit)
    if mask:
        names.append(f"Unknown incompatible feature: {mask:x}")
    return "Unsupported qcow2 feature(s): " + ", ".join(names)


class Qcow2Image(Image):
    format = "qcow2"

    def __init__(self, src: Source) -> None:
        super().__init__(src)
        self.meta: Qcow2Metadata = read_metadata(src)

    # ---------------------------------------------------------------- basics
    @property
    def virtual_size(self) -> int:
        return self.meta.virtual_size

    @property
    def cluster_size(self) -> int:
        return self.meta.cluster_size

    @property
    def dirty(self) -> bool:
        return bool(self.meta.incompatible & L.INCOMPAT_DIRTY)

    @property
    def corrupt(self) -> bool:
        return bool(self.meta.incompatible & L.INCOMPAT_CORRUPT)

    @cached_property
    def tables(self) -> Any:
        from .tables import Qcow2Tables
        return Qcow2Tables(self.src, self.meta)

    def backing(self) -> tuple[str, str | None] | None:
        if self.meta.backing_file is None:
            return None
        return self.meta.backing_file, self.meta.backing_format

    def snapshot_list(self) -> list:
        return self.meta.snapshots

    def layer_index(self, layer: str | int) -> int | None:
        """None for the active layer, else the snapshot's index in the table."""
        if layer in (None, "active"):
            return None
        for i, s in enumerate(self.meta.snapshots):
            if layer in (s.id, s.name, f"snapshot:{s.id}") or (isinstance(layer, int) and str(layer) == s.id):
                return i
        raise KeyError(f"no layer {layer!r}: use 'active' or a snapshot id or name")

    # ---------------------------------------------------------------- records
    def header_fields(self) -> dict[str, Any]:
        h = self.meta.header
        out: dict[str, Any] = {k: v for k, v in h.items() if not k.startswith("_") and k not in ("padding",)}
        out["magic"] = h.magic.hex()
        out["header_length"] = self.meta.header_length
        out["refcount_order"] = self.meta.refcount_order
        out["refcount_bits"] = 1 << self.meta.refcount_order
        out["cluster_size"] = self.cluster_size
        out["backing_file"] = self.meta.backing_file
        out["backing_format"] = self.meta.backing_format
        out["data_file"] = self.meta.data_file
        out["file_size"] = self.src.size
        for k in ("incompatible_features", "compatible_features", "autoclear_features", "compression_type"):
            out[k] = out.get(k) or 0
        return out

    def feature_rows(self) -> list[dict[str, Any]]:
        m = self.meta
        return feature_bit_rows({"incompatible": m.incompatible, "compatible": m.compatible, "autoclear": m.autoclear},
                                L.FEATURE_NAMES, table_names={(k, b): n for k, b, n in m.feature_table})

    def extension_rows(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.meta.extensions:
            dec = e.decoded
            if hasattr(dec, "items"):
                dec = {k: v for k, v in dec.items() if not k.startswith("_")}
            rows.append({"type": e.type, "name": e.name, "offset": e.offset, "length": e.length,
                         "decoded": repr(dec) if dec is not None else None, "raw": e.data})
        return rows

    # ---------------------------------------------------------------- qemu-compatible info
    def qemu_open_error(self, io: bool = True) -> str | None:
        """qcow2_do_open's refusals that the header decides, in its order."""
        m = self.meta
        unknown = m.incompatible & ~L.INCOMPAT_KNOWN
        if unknown:
            return unsupported_features(m, unknown)
        ct = m.compression_type
        if ct not in (L.COMPRESSION_ZLIB, L.COMPRESSION_ZSTD):
            return f"qcow2: unknown compression type: {ct}"
        if (ct != L.COMPRESSION_ZLIB) != bool(m.incompatible & L.INCOMPAT_COMPRESSION):
            return "qcow2: Compression type incompatible feature bit must " + ("not be set" if ct == 0 else "be set")
        if io and m.has_data_file and not m.data_file:  # qemu-img info opens without the data file
            return "'data-file' is required for this image"
        if io and not m.has_data_file and m.autoclear & L.AUTOCLEAR_DATA_FILE_RAW:
            return "data-file-raw requires a data file"
        return None

    def info_dict(self) -> dict[str, Any]:
        m = self.meta
        out = super().info_dict()
        if m.snapshots:
            out["snapshots"] = [snapshot_json(s) for s in m.snapshots]
        data: dict[str, Any] = {"compat": "0.10" if m.version == 2 else "1.1",
                                "compression-type": "zstd" if m.compression_type == 1 else "zlib",
                                "refcount-bits": 1 << m.refcount_order}
        if m.version >= 3:
            data["lazy-refcounts"] = bool(m.compatible & L.COMPAT_LAZY_REFCOUNTS)
            data["corrupt"] = self.corrupt
            data["extended-l2"] = m.extended_l2
            if m.bitmaps:
                data["bitmaps"] = [{"name": b.name, "granularity": 1 << b.granularity_bits,
                                    "flags": [f for bit, f in ((L.BITMAP_FLAG_IN_USE, "in-use"),
                                                               (L.BITMAP_FLAG_AUTO, "auto")) if b.flags & bit]}
                                   for b in m.bitmaps]
            if m.data_file is not None:
                data["data-file"] = m.data_file
            if m.has_data_file:
                data["data-file-raw"] = bool(m.autoclear & L.AUTOCLEAR_DATA_FILE_RAW)
        if m.header.crypt_method:
            out["encrypted"] = True
            enc = luks_json(m) if m.header.crypt_method == 2 else {"format": "aes"}
            if enc is not None:
                data["encrypt"] = enc
        out["format-specific"] = {"type": "qcow2", "data": data}
        return out

    # ---------------------------------------------------------------- mapping
    def guest_map(self, layer: str | int = "active") -> Any:
        return self.tables.guest_map(self.layer_index(layer))

    def extents(self) -> Any:
        from .status import active_extents
        return active_extents(self)

    def host_file(self, guest_offset: int) -> str:
        """An external data file as its header extension names it (qemu opens that name)."""
        m = self.meta
        return m.data_file if m.has_data_file and m.data_file else self.path

    def layer_extents(self, layer: str | int = "active") -> Any:
        from .status import layer_extents
        return layer_extents(self, self.layer_index(layer))

    def reference_rows(self) -> Any:
        return self.walk().rows

    def refcounts(self, n: int) -> Any:
        return self.tables.refcounts(n)

    def shared_by(self, n: int) -> Any:
        from .refs import shared_by
        return shared_by(self, n)

    def walk(self) -> Any:
        """Every reference the file makes to its own clusters (cached)."""
        if getattr(self, "_walk", None) is None:
            from .refs import walk
            self._walk = walk(self)
        return self._walk

    check = implemented_in("imgscope.formats.qcow2.check:check_image")


def snapshot_json(s: Any) -> dict[str, Any]:
    out = {"id": s.id, "name": s.name, "vm-state-size": s.vm_state_size, "date-sec": s.date_sec,
           "date-nsec": s.date_nsec, "vm-clock-sec": s.vm_clock_nsec // 1_000_000_000,
           "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000}
    if s.icount is not None and s.icount != (1 << 64) - 1:
        out["icount"] = s.icount
    return out


def luks_json(m: Qcow2Metadata) -> dict[str, Any] | None:
    """LUKS1 header details as qemu's QCryptoBlockInfoLUKS prints them."""
    h = m.luks
    if h is None:
        return {"format": "luks"}
    cipher = h.cipher_name.rstrip("\0")
    key_bits = h.key_bytes * 8
    mode, _, ivgen = h.cipher_mode.rstrip("\0").partition("-")
    ivalg, _, ivhash = ivgen.partition(":")
    if mode == "xts":
        key_bits //= 2
    out: dict[str, Any] = {
        "format": "luks",
        "cipher-alg": f"{cipher}-{key_bits}",
        "cipher-mode": mode,
        "ivgen-alg": ivalg,
        "hash-alg": h.hash_spec.rstrip("\0"),
        "payload-offset": h.payload_offset * 512,
        "master-key-iters": h.mk_digest_iter,
        "uuid": h.uuid.rstrip("\0"),
        "slots": [],
    }
    if ivhash:
        out["ivgen-hash-alg"] = ivhash
    for ks in h.key_slots:
        slot: dict[str, Any] = {"active": ks.active == L.LUKS_KEY_ENABLED, "key-offset": ks.key_material_offset * 512}
        if slot["active"]:
            slot["iters"] = ks.iterations
            slot["stripes"] = ks.stripes
        out["slots"].append(slot)
    return out
