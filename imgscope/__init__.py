"""imgscope: inspection, check and repair of copy-on-write virtual disk images.

>>> import imgscope
>>> with imgscope.open("disk.qcow2") as img:
...     img.snapshots, img.mapping(), img.clusters()
"""
from __future__ import annotations

import os

from .errors import FormatError, ImageInUse, ImgscopeError, LimitError, RepairError, UnsupportedFormat

__version__ = "0.1.0"
__all__ = ["open", "open_chain", "FormatError", "ImageInUse", "ImgscopeError", "LimitError", "RepairError",
           "UnsupportedFormat", "__version__"]


def _drivers() -> dict[str, type]:
    from .formats.qcow2.driver import Qcow2Image
    from .formats.raw.driver import RawImage
    drivers: dict[str, type] = {"qcow2": Qcow2Image, "raw": RawImage}
    from .formats import registry
    drivers.update(registry.extra_drivers())
    return drivers


def open(path: str | os.PathLike[str], format: str | None = None) -> "Image":  # noqa: A001, F821
    """Open an image read-only and return its :class:`imgscope.image.Image`.

    ``format`` forces a driver (as the backing-format extension does); by default
    the format is detected from magic bytes.
    """
    from .detect import detect
    from .io import Source
    src = Source(path)
    try:
        fmt = format or detect(src)
        drivers = _drivers()
        if fmt not in drivers:
            raise UnsupportedFormat(f"{src.path}: format {fmt!r} is not supported yet")
        return drivers[fmt](src)
    except BaseException:
        src.close()
        raise


def open_chain(path: str | os.PathLike[str], format: str | None = None) -> list:
    """Open an image and its backing files; returns the chain, top first."""
    return open(path, format).chain()
