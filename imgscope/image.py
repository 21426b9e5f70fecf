"""The format-neutral image object every driver returns from :func:`imgscope.open`.

Drivers implement a handful of primitives (metadata records, guest maps,
extents, host references); everything a user sees — frames, qemu-compatible
JSON, checks — is built on top of them here and in :mod:`imgscope.frames`.
Opening never writes: the file descriptor is read-only.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from .io import Source


def implemented_in(spec: str) -> Callable[..., Any]:
    """A driver method whose body is the function ``spec`` ("module:function", called
    with the image and the method's arguments), imported on first call so that
    opening an image never imports the table walks (numpy) or the checks."""
    mod, _, fn = spec.partition(":")

    def method(self: Image, *args: Any, **kw: Any) -> Any:
        return getattr(importlib.import_module(mod), fn)(self, *args, **kw)

    method.__name__ = fn
    method.__doc__ = f"Implemented by :func:`{mod}.{fn}`."
    return method


def feature_bit_rows(words: dict[str, int], names: dict[tuple[str, int], str], width: int = 64,
                     table_names: dict[tuple[str, int], str] | None = None) -> list[dict[str, Any]]:
    """``feature_rows()`` of a format with feature words: ``words`` maps a kind ("incompatible",
    "compatible", "autoclear") to its value; one row per bit that is set or named, by imgscope
    (``names``, keyed by (kind, bit)) or by the image's own feature-name table (``table_names``)."""
    table_names = table_names or {}
    rows = []
    for kind, word in words.items():
        bits = {b for (k, b) in names if k == kind} | {b for (k, b) in table_names if k == kind}
        bits |= {b for b in range(width) if word >> b & 1}
        for bit in sorted(bits):
            rows.append({"name": names.get((kind, bit)) or table_names.get((kind, bit)) or f"unknown bit {bit}",
                         "kind": kind, "bit": bit, "set": bool(word >> bit & 1), "known": (kind, bit) in names,
                         "table_name": table_names.get((kind, bit))})
    return rows


class Image:
    """An opened image file (one layer of a chain, with its internal snapshots)."""

    format = "unknown"
    #: how messages name the format ("QED", "VDI"); None: ``format``
    label: str | None = None
    #: False where qemu 7.2 does not follow the format's parent: ``info_dict`` then names no backing file
    qemu_shows_backing = True

    def __init__(self, src: Source) -> None:
        self.src = src
        self.path = src.path
        self._chain: list[Image] | None = None
        self.backing_error: str | None = None

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        for img in (self._chain or [])[1:]:
            img.close()
        self.src.close()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<imgscope.Image {self.format} {self.path!r} {self.virtual_size} bytes>"

    def _repr_html_(self) -> str:
        """Notebook summary (header facts and snapshot list; no table walk)."""
        from .report.summary import image_html
        return image_html(self)

    # ---------------------------------------------------------------- driver primitives
    @property
    def virtual_size(self) -> int:
        raise NotImplementedError

    @property
    def cluster_size(self) -> int | None:
        return None

    @property
    def dirty(self) -> bool:
        return False

    def header_fields(self) -> dict[str, Any]:
        return {}

    def feature_rows(self) -> list[dict[str, Any]]:
        return []

    def extension_rows(self) -> list[dict[str, Any]]:
        return []

    def snapshot_list(self) -> list:
        return []

    def backing(self) -> tuple[str, str | None] | None:
        """(backing file name as stored, stored format or None) or None."""
        return None

    def layer_names(self) -> list[str]:
        return ["active"] + [f"snapshot:{s.id}" for s in self.snapshot_list()]

    def extents(self) -> Any:
        """Block status of the active layer as :class:`imgscope.extents.Extents`."""
        raise NotImplementedError

    def qemu_extents(self) -> Any:
        """qemu 7.2's block status of the active layer, where it differs from :meth:`extents` (the
        format's own view, used by the ``mapping`` frame): what ``map`` prints."""
        return self.extents()

    def host_file(self, guest_offset: int) -> str:
        """The file holding this layer's data at ``guest_offset``, named as qemu-img map prints it."""
        return self.path

    def guest_map(self, layer: str | int = "active") -> Any:
        """One layer's :class:`imgscope.model.GuestMap` (formats with lookup tables)."""
        raise NotImplementedError(f"{self.format}: no per-cluster guest map")

    def require_active_layer(self, layer: str | int | None) -> None:
        """Single-layer formats: KeyError unless ``layer`` names the active layer ("active", None or 0)."""
        if layer not in ("active", None, 0):
            raise KeyError(f"no layer {layer!r}: {self.label or self.format} images have only the active layer")

    def refcounts(self, n: int) -> Any:
        """On-disk reference counts of the first ``n`` host clusters; None: the format keeps none."""
        return None

    def layer_extents(self, layer: str | int = "active") -> Any:
        """Block status of one layer; formats with internal snapshots override this."""
        if layer not in ("active", None):
            raise KeyError(f"{self.format} images have no layer {layer!r}, only 'active'")
        return self.extents()

    def qemu_open_error(self, io: bool = True) -> str | None:
        """Why qemu would refuse to open this image, in qemu's words (imgscope reads it anyway), or None.
        ``io=False``: for qemu-img info, which opens some images it could not read (no data file)."""
        return None

    def info_dict(self) -> dict[str, Any]:
        """The object ``qemu-img info --output=json`` prints (plus imgscope keys)."""
        out: dict[str, Any] = {
            "virtual-size": self.virtual_size,
            "filename": self.path,
            "format": self.format,
            "actual-size": self.src.allocated,
            "dirty-flag": self.dirty,
        }
        refused = self.qemu_open_error(io=False)
        if refused:  # imgscope reads what qemu will not open: say so (qemu-img info fails here)
            out["imgscope-qemu-refuses"] = refused
        if self.cluster_size:
            out["cluster-size"] = self.cluster_size
        b = self.backing()
        if b is not None and self.qemu_shows_backing:
            out["backing-filename"] = b[0]
            out["full-backing-filename"] = self.full_backing_filename()
            if b[1]:
                out["backing-filename-format"] = b[1]
        return out

    # ---------------------------------------------------------------- chain
    def full_backing_filename(self) -> str | None:
        b = self.backing()
        if b is None:
            return None
        name = b[0]
        if os.path.isabs(name) or ":" in name.split("/", 1)[0]:
            return name
        return os.path.join(os.path.dirname(self.path), name)

    def chain(self, allow_outside: bool | None = None) -> list[Image]:
        """This image and its backing files, top first (opened read-only, once).

        Parents outside this image's directory are refused (``backing_error``)
        unless ``allow_outside`` (default: :data:`imgscope.chain.ALLOW_OUTSIDE`).
        """
        if self._chain is None:
            from .chain import open_backing_chain
            self._chain = open_backing_chain(self, allow_outside)
        return self._chain

    def qemu_chain(self) -> list[Image]:
        """The part of :meth:`chain` qemu reads: it stops below an image whose parent qemu does not open
        (``qemu_shows_backing`` False: VHD and VHDX differencing disks)."""
        out = []
        for img in self.chain():
            out.append(img)
            if not img.qemu_shows_backing:
                break
        return out

    def map_entries(self) -> list[dict]:
        """What ``qemu-img map --output=json`` prints for this image and its chain."""
        from .extents import resolve, to_qemu_json
        return to_qemu_json(*resolve([img.qemu_extents() for img in self.qemu_chain()]))

    # ---------------------------------------------------------------- frames
    @property
    def header(self) -> Any:
        from .frames import header_series
        return header_series(self)

    @property
    def features(self) -> Any:
        from .frames import features_frame
        return features_frame(self)

    @property
    def extensions(self) -> Any:
        from .frames import extensions_frame
        return extensions_frame(self)

    @property
    def snapshots(self) -> Any:
        from .frames import snapshots_frame
        return snapshots_frame(self)

    def mapping(self, layer: str | int = "active", merge: bool = False) -> Any:
        from .frames import mapping_frame
        return mapping_frame(self, layer, merge)

    def chain_frame(self) -> Any:
        """The backing chain as a frame (docs/frames.md): one row per file, top first."""
        from .frames import chain_frame
        return chain_frame(self)

    def clusters(self) -> Any:
        if not self.cluster_size or not hasattr(self, "reference_rows"):
            raise NotImplementedError(f"{self.format}: no host clusters frame")
        from .frames import clusters_frame
        return clusters_frame(self)

    def check(self) -> Any:
        """Formats without a check answer like qemu-img: not supported (exit code 63)."""
        from .check import CheckResult
        return CheckResult(self.path, self.format, supported=False, has_cluster_stats=False, has_end_offset=False)

    def repair(self, mode: str = "all", dry_run: bool = True, allow_data_loss: bool = False) -> Any:
        """The repair plan as a frame (offset, length, structure, reason, phase); nothing is written.

        ``dry_run=False`` applies it (see :func:`imgscope.repair.run_repair`) and
        returns the re-check; this object then shows the old state: reopen the image.
        """
        from .repair import plan_for, run_repair
        if not dry_run:
            return run_repair(self.path, mode, fmt=self.format, allow_data_loss=allow_data_loss)
        plan = plan_for(self, mode, allow_data_loss)
        if plan is None:
            raise NotImplementedError(f"{self.format}: no repair")
        return plan.frame()
