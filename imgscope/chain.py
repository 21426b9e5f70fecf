"""Backing chains: resolve and open each parent read-only, safely.

Backing names come from untrusted images.  imgscope never interprets qemu
``json:`` pseudo-filenames or protocol prefixes (``nbd:``, ``http:``...), refuses
anything that is not a regular file, detects cycles and bounds the depth.  A
parent that cannot be opened is recorded on the child (``backing_error``) and
the chain simply ends there: the child's own metadata stays fully visible.
"""
from __future__ import annotations

import os
import re

from .errors import ImgscopeError
from .limits import LIMITS

_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def resolve_backing_path(child_path: str, name: str) -> str:
    """The path of a backing file named ``name`` by the image at ``child_path``."""
    if name.startswith("json:") or _PROTOCOL.match(name):
        raise ImgscopeError(f"backing file {name!r} uses a protocol or json: pseudo-filename; imgscope opens files only")
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(child_path), name)


def open_backing_chain(top: "Image") -> list["Image"]:  # noqa: F821
    from . import open as open_image
    chain = [top]
    seen = {os.path.realpath(top.path)}
    img = top
    while True:
        b = img.backing()
        if b is None:
            break
        if len(chain) > LIMITS["max_chain_depth"]:
            img.backing_error = f"backing chain deeper than max_chain_depth={LIMITS['max_chain_depth']}"
            break
        try:
            path = resolve_backing_path(img.path, b[0])
            real = os.path.realpath(path)
            if real in seen:
                raise ImgscopeError(f"backing chain loops back to {path}")
            seen.add(real)
            parent = open_image(path, format=b[1])
        except ImgscopeError as exc:
            img.backing_error = str(exc)
            break
        chain.append(parent)
        img = parent
    return chain
