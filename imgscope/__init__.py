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


def open(path: str | os.PathLike[str], format: str | None = None, *,  # noqa: A001
         tiny_raw: bool = False) -> "Image":  # noqa: F821
    """Open an image read-only and return its :class:`imgscope.image.Image`.

    ``format`` forces a driver (as the backing-format extension does); by default
    the format is detected from magic bytes.  A file smaller than one sector that
    carries no magic is refused (:class:`UnsupportedFormat`) unless ``format="raw"``
    or ``tiny_raw`` (qemu's probing, used for backing files).
    """
    from .detect import detect
    from .io import Source
    src = Source(path)
    try:
        from .formats.registry import driver
        fmt = format or detect(src, tiny_raw=tiny_raw)
        cls = driver(fmt)
        if cls is None:
            raise UnsupportedFormat(f"{src.path}: format {fmt!r} is not supported")
        return cls(src)
    except BaseException:
        src.close()
        raise


def open_chain(path: str | os.PathLike[str], format: str | None = None) -> list:
    """Open an image and its backing files; returns the chain, top first."""
    return open(path, format).chain()
