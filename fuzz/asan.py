"""Build imgscope's native extension with AddressSanitizer + UBSan, out of tree, and run code on it.

    .venv/bin/python fuzz/asan.py pytest [pytest args]   # the whole suite on the ASan build (make asan-test)
    .venv/bin/python fuzz/asan.py build DIR              # just build into DIR

The build goes to a temporary directory, never over the in-tree
``imgscope/_native*.so`` (other processes may be using it).  fuzz/asan_site.py,
copied next to it as ``sitecustomize.py``, puts that directory first on
``imgscope.__path__``, so ``imgscope._native`` resolves to the sanitizer build
while everything else is the source tree.  The sanitizer runtime is
``LD_PRELOAD``-ed because the Python binary itself is not instrumented; the
sitecustomize passes it on to child Python processes (xdist workers, the CLI
run by tests) but not to other programs (qemu-img deadlocks under ASan).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAN_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"


def _gcc_lib(name: str) -> str | None:
    """Path of one of gcc's shared libraries, or None when it is not installed."""
    for cc in ("gcc", "cc"):
        try:
            out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        except OSError:
            continue
        if out and os.path.isabs(out) and os.path.exists(out):
            return os.path.realpath(out)
    return None


def runtime() -> str | None:
    """Path of gcc's shared ASan runtime, or None when it is not installed."""
    return _gcc_lib("libasan.so")


def build(dest: str | Path) -> Path:
    """Compile the extension with sanitizers into ``dest``; returns the directory to put on PYTHONPATH."""
    dest = Path(dest)
    pkg = dest / "ext"  # searched as part of imgscope.__path__ (not named imgscope: that would shadow the package)
    pkg.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CC="gcc", IMGSCOPE_NATIVE_CFLAGS=f"{os.environ.get('IMGSCOPE_NATIVE_CFLAGS', '')} "
               f"{SAN_FLAGS}", IMGSCOPE_NATIVE_LDFLAGS=SAN_FLAGS)
    # build_ffi names its sources relative to the project root and cffi compiles inside tmpdir:
    # give it a copy of native/ there
    src = dest / "src"
    shutil.copytree(ROOT / "native", src / "native", ignore=shutil.ignore_patterns("fuzz", "work", "*.o"))
    script = "import sys; sys.path.insert(0, 'native'); import build_ffi; print(build_ffi.ffibuilder.compile(tmpdir='.'))"
    p = subprocess.run([sys.executable, "-c", script], cwd=src, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"sanitizer build failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    so = src / p.stdout.strip().splitlines()[-1]
    so.rename(pkg / so.name)
    shutil.copyfile(Path(__file__).with_name("asan_site.py"), dest / "sitecustomize.py")
    return dest


def env_for(dest: Path) -> dict[str, str]:
    """Environment that runs Python on the sanitizer build."""
    rt = runtime()
    if rt is None:
        raise RuntimeError("gcc's libasan is not installed")
    # libstdc++ too: ASan resolves the real __cxa_throw when it starts, so a C++ extension (matplotlib's
    # ft2font) that throws in a process without libstdc++ loaded at start-up would fail ASan's CHECK
    preload = " ".join(filter(None, [rt, _gcc_lib("libstdc++.so.6")]))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(dest), os.environ.get("PYTHONPATH")])),
                LD_PRELOAD=preload, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
                UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1", IMGSCOPE_FORCE_NATIVE="1", PYTHONMALLOC="malloc")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("pytest", "build"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "build":
        print(build(argv[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="imgscope-asan-") as tmp:
        dest = build(tmp)
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *(argv[1:] or ["-q", "tests"])]
        return subprocess.run(cmd, cwd=ROOT, env=env_for(dest)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
