"""cffi build script (API mode, out of line): native/*.c -> imgscope._native.

The list of native sources lives here and nowhere else.  ``IMGSCOPE_NATIVE_CFLAGS``
adds compiler flags (CI uses it for -Werror and for sanitizer builds).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["tables.c", "status.c", "check.c"]
HEADER = HERE / "imgscope_native.h"


def _cdef_text() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#include")]
    # constants become "#define NAME ..." so cffi takes their values from the compiler
    lines = [re.sub(r"^#define (\w+) .*$", r"#define \1 ...", ln) for ln in lines]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "imgscope._native",
    '#include "imgscope_native.h"',
    # setuptools wants paths relative to the project root (where pip runs this)
    sources=[os.path.relpath(HERE / s) for s in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=c99", "-pthread"]
    + os.environ.get("IMGSCOPE_NATIVE_CFLAGS", "").split(),
    extra_link_args=["-pthread"] + os.environ.get("IMGSCOPE_NATIVE_LDFLAGS", "").split(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
