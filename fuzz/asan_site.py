"""The ``sitecustomize`` of a sanitizer run (fuzz/asan.py copies it next to the ASan build).

Python imports it at the start of every interpreter whose PYTHONPATH holds that directory —
the pytest process, its xdist workers, and every ``.venv/bin/imgscope`` or
``python -m imgscope.cli`` a test starts — and it does two things there:

1. ``imgscope._native`` resolves to the sanitizer build in ``ext/`` next to this file.
2. The sanitizer runtime (``LD_PRELOAD``) is passed on only to children that are Python
   interpreters or scripts run by one.  Any other program a test starts (qemu-img, qemu-io,
   dot, chromium, compilers, libFuzzer binaries) runs without it: none of them is under test,
   and qemu's coroutines deadlock under AddressSanitizer.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import imgscope

imgscope.__path__.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext"))

_PRELOAD = ("LD_PRELOAD", b"LD_PRELOAD")


def _runs_python(prog: str, env: dict | None) -> bool:
    """Is ``prog`` (a name or path, as Popen gets it) a Python interpreter or a ``#!`` script of one?"""
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    path = prog if os.sep in prog else shutil.which(prog, path=os.fsdecode(search))
    if not path:
        return False
    real = os.path.realpath(path)
    if os.path.basename(real).startswith("python"):
        return True
    try:
        with open(real, "rb") as f:
            first = f.readline(256)
    except OSError:
        return False
    # "#!/path/python3" or "#!/usr/bin/env python3"
    return first.startswith(b"#!") and any(os.path.basename(w).startswith(b"python") for w in first[2:].split()[:2])


_execute_child = subprocess.Popen._execute_child


def _execute_child_preloading_python_only(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                                          *rest):
    prog = executable or (args if isinstance(args, (str, bytes, os.PathLike)) else args[0])
    if not _runs_python(os.fsdecode(prog), env):
        env = {k: v for k, v in (os.environ if env is None else env).items() if k not in _PRELOAD}
    return _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)


if os.environ.get("LD_PRELOAD"):
    subprocess.Popen._execute_child = _execute_child_preloading_python_only
