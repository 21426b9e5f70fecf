"""Backing chains: resolve and open each parent read-only, safely.

Backing names (qcow2/QED backing files, VMDK parent and extent lines, VHD/VHDX
parent locators) come from untrusted images.  Every driver resolves them with
:func:`resolve_backing_path`, which

* never interprets qemu ``json:`` pseudo-filenames or protocol prefixes
  (``nbd:``, ``http:``, ``file:``...);
* by default accepts only files inside the referring image's own directory
  (or below it), after resolving symlinks with ``realpath`` — pass
  ``allow_outside=True``, set :data:`ALLOW_OUTSIDE`, the environment variable
  ``IMGSCOPE_ALLOW_BACKING_OUTSIDE=1`` or the CLI option
  ``--allow-backing-outside`` to follow names elsewhere;
* refuses anything that is not a regular file (devices, FIFOs, sockets,
  directories) without opening it.

:func:`open_backing_chain` also detects cycles and bounds the depth
(``max_chain_depth``).  A parent that cannot be opened is recorded on the child
(``Image.backing_error``) and the chain simply ends there: the child's own
metadata stays fully visible.
"""
from __future__ import annotations

import os
import re
import stat

from .errors import ImgscopeError
from .limits import LIMITS

_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

#: process-wide default for ``allow_outside`` (the CLI's --allow-backing-outside sets it)
ALLOW_OUTSIDE = os.environ.get("IMGSCOPE_ALLOW_BACKING_OUTSIDE", "") not in ("", "0")


class BackingRefused(ImgscopeError):
    """A backing/parent/extent name that imgscope will not follow; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"backing file {name!r}: {reason}")


def resolve_backing_path(child_path: str, name: str, allow_outside: bool | None = None) -> str:
    """The path of the file named ``name`` by the image at ``child_path``, checked.

    Relative names are taken relative to the child's directory (as qemu does).
    Raises :class:`BackingRefused` for protocols, ``json:`` names, names that
    resolve outside the child's directory (unless ``allow_outside``), missing
    files and anything that is not a regular file.  The returned path is the
    name joined to the child's directory as given (what qemu prints as
    ``full-backing-filename``); the checks apply to its ``realpath``.
    """
    if allow_outside is None:
        allow_outside = ALLOW_OUTSIDE
    if not name or "\0" in name:
        raise BackingRefused(name, "empty name or NUL byte in the name")
    if name.startswith("json:") or _PROTOCOL.match(name):
        raise BackingRefused(name, "uses a protocol or json: pseudo-filename; imgscope opens files only")
    path = name if os.path.isabs(name) else os.path.join(os.path.dirname(child_path), name)
    base = os.path.dirname(os.path.abspath(child_path))
    real = os.path.realpath(path)
    if not allow_outside and not _inside(real, os.path.realpath(base)):
        raise BackingRefused(name, f"resolves to {real}, outside the image's directory {os.path.realpath(base)} "
                                   "(use --allow-backing-outside / allow_outside=True to follow it)")
    try:
        st = os.stat(real)
    except OSError as exc:
        raise BackingRefused(name, f"cannot be opened: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise BackingRefused(name, f"{real} is {kind}, not an image file")
    return path


def _inside(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives / mix of absolute and relative
        return False


def open_backing_chain(top: "Image", allow_outside: bool | None = None) -> list["Image"]:  # noqa: F821
    """``top`` and its parents, top first; stops (recording ``backing_error``) at the first refused parent."""
    from . import open as open_image
    chain = [top]
    seen = {os.path.realpath(top.path)}
    img = top
    while True:
        try:
            b = img.backing()
        except ImgscopeError as exc:
            img.backing_error = str(exc)
            break
        if b is None:
            break
        if len(chain) > LIMITS["max_chain_depth"]:
            img.backing_error = f"backing chain deeper than max_chain_depth={LIMITS['max_chain_depth']}"
            break
        try:
            path = resolve_backing_path(img.path, b[0], allow_outside)
            real = os.path.realpath(path)
            if real in seen:
                raise BackingRefused(b[0], f"the backing chain loops back to {real}")
            seen.add(real)
            parent = open_image(path, format=b[1], tiny_raw=True)  # probed as qemu probes
        except ImgscopeError as exc:
            img.backing_error = str(exc)
            break
        chain.append(parent)
        img = parent
    return chain
