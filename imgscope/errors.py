"""One exception tree for everything imgscope reports about an image.

Every error that comes from the *content* of an image is a :class:`FormatError`
naming the structure (``"qcow2 header"``, ``"l1[17]"``...) and the absolute
byte offset where it was found, so a user (or a test) can locate it.
"""
from __future__ import annotations


class ImgscopeError(Exception):
    """Root of every error imgscope raises on purpose."""


class FormatError(ImgscopeError, ValueError):
    """The image is malformed: ``structure`` at byte ``offset`` is wrong for ``reason``."""

    def __init__(self, structure: str, offset: int | None, reason: str, path: str | None = None) -> None:
        self.structure = structure
        self.offset = offset
        self.reason = reason
        self.path = path
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{structure}{where}: {reason}")


class LimitError(FormatError):
    """A size or count in the image exceeds a documented imgscope limit."""

    def __init__(self, structure: str, offset: int | None, limit: str, value: int, maximum: int) -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        super().__init__(structure, offset, f"{value} exceeds limit {limit}={maximum}")


class UnsupportedFormat(ImgscopeError):
    """The file is not an image format imgscope can read."""


class ImageInUse(ImgscopeError):
    """Another process (e.g. a running VM) holds a lock on the image."""


class RepairError(ImgscopeError):
    """A repair could not be planned or applied; the image was left as it was."""
