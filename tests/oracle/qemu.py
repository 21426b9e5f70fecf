"""Thin wrappers around qemu-img / qemu-io, used as the oracle imgscope is compared against.

Plain functions, no pytest dependency. Every read-only query passes ``-U`` (force share) so it works on
any image, including one another process holds open. Images encrypted with LUKS are addressed through
``--object secret,... --image-opts ...`` when a ``secret`` is given (see ``image_args``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")
SECRET_ID = "sec0"
_ENV = {**os.environ, "LC_ALL": "C"}


class QemuError(subprocess.CalledProcessError):
    """A failed qemu-img/qemu-io run; unlike CalledProcessError, its message includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stdout}{self.stderr}".rstrip()


def available() -> bool:
    return bool(QEMU_IMG and QEMU_IO)


def _run(argv: list, check: bool, cwd=None) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=_ENV, cwd=cwd)
    if check and proc.returncode != 0:
        raise QemuError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def secret_object(secret: str) -> list[str]:
    """``--object`` arguments defining the LUKS passphrase as secret SECRET_ID."""
    return ["--object", f"secret,id={SECRET_ID},data={secret}"]


def image_args(path, fmt: str | None = None, secret: str | None = None) -> list[str]:
    """The arguments naming one image: ``[-f FMT] PATH``, or the --object/--image-opts form for a LUKS secret."""
    if secret is None:
        return [*(["-f", fmt] if fmt else []), str(path)]
    filename = str(path).replace(",", ",,")
    return [*secret_object(secret), "--image-opts",
            f"driver={fmt or 'qcow2'},file.filename={filename},encrypt.key-secret={SECRET_ID}"]


def qemu_img(*args, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Run ``qemu-img ARGS`` (LC_ALL=C, text output captured); raise QemuError on failure if ``check``."""
    return _run([QEMU_IMG, *args], check, cwd)


def _on_image(tool: str, path, fmt: str | None, secret: str | None, *args: str, after: tuple = (),
              check: bool = True) -> subprocess.CompletedProcess:
    """Run ``TOOL ARGS IMAGE AFTER`` in the image's directory: qemu resolves a relative data_file name
    against its working directory (a relative backing file name, against the image's directory)."""
    path = Path(path).absolute()
    return _run([tool, *args, *image_args(path, fmt, secret), *after], check, path.parent)


def qemu_io(fmt: str | None, path, *commands: str, allow_fail: bool = False,
            secret: str | None = None) -> subprocess.CompletedProcess:
    """Run ``qemu-io -c CMD ... -f FMT PATH``.

    qemu-io exits 1 if any command failed. ``allow_fail`` is for ``-c abort`` crash images (qemu-io then
    dies of SIGABRT, returncode -6).
    """
    flags = [arg for cmd in commands for arg in ("-c", cmd)]
    return _on_image(QEMU_IO, path, fmt, secret, *flags, check=not allow_fail)


def text(command: str, path, fmt: str | None = None, *args: str,
         secret: str | None = None) -> subprocess.CompletedProcess:
    """``qemu-img COMMAND ARGS IMAGE`` in the image's directory with its human output (never raises):
    stdout, stderr and returncode as qemu-img printed them. ``snapshot`` takes no ``-f``."""
    return _on_image(QEMU_IMG, path, None if command == "snapshot" else fmt, secret, command, *args, check=False)


def info_json(path, fmt: str | None = None, *, secret: str | None = None, backing_chain: bool = False):
    """``qemu-img info --output=json -U``: a dict, or with ``backing_chain`` a list of dicts (top first)."""
    chain = ["--backing-chain"] if backing_chain else []
    return json.loads(_on_image(QEMU_IMG, path, fmt, secret, "info", "--output=json", "-U", *chain).stdout)


def map_json(path, fmt: str | None = None, *, secret: str | None = None) -> list[dict]:
    """``qemu-img map --output=json -U``: extents with start, length, depth, present, zero, data[, offset]."""
    return json.loads(_on_image(QEMU_IMG, path, fmt, secret, "map", "--output=json", "-U").stdout)


def check_json(path, fmt: str | None = None, repair: str | None = None, *,
               secret: str | None = None) -> tuple[int, dict | None, str]:
    """``qemu-img check --output=json`` -> (returncode, report, stderr).

    Return codes: 0 clean, 1 could not check (typically no JSON), 2 corruptions, 3 leaks only,
    63 format has no check (no JSON). Read-only (``-U``) unless ``repair`` is 'leaks' or 'all'.
    """
    if repair not in (None, "leaks", "all"):
        raise ValueError(f"repair must be None, 'leaks' or 'all', not {repair!r}")
    mode = ["-U"] if repair is None else ["-r", repair]
    proc = _on_image(QEMU_IMG, path, fmt, secret, "check", "--output=json", *mode, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr


_SNAPSHOT_ROW = re.compile(
    r"^(?P<id>\S+)\s+(?P<tag>.*?)\s+(?P<vm_size>[\d.]+ \S*B)\s+(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
    r"\s+(?P<vm_clock>\S+)\s*(?P<icount>\d*)$")


def snapshot_list(path, fmt: str | None = None, *, secret: str | None = None) -> list[dict[str, str]]:
    """Rows of ``qemu-img snapshot -l`` as dicts with keys id, tag, vm_size, date, vm_clock, icount (all str).

    ``info_json(path)["snapshots"]`` has the same data in structured form; this exists to check the text.
    """
    out = _on_image(QEMU_IMG, path, fmt, secret, "snapshot", "-l", "-U").stdout
    rows = []
    for line in out.splitlines()[2:]:  # after "Snapshot list:" and the column titles
        match = _SNAPSHOT_ROW.match(line)
        if match is None:
            raise ValueError(f"unexpected qemu-img snapshot -l line: {line!r}")
        rows.append(match.groupdict())
    return rows


def convert_raw(path, out, fmt: str | None = None, snapshot: str | int | None = None, *,
                secret: str | None = None) -> Path:
    """``qemu-img convert -U -O raw`` of the image (or of internal snapshot with ID ``snapshot``) to ``out``."""
    out = Path(out).absolute()
    snap = [] if snapshot is None else ["-l", f"snapshot.id={snapshot}"]
    _on_image(QEMU_IMG, path, fmt, secret, "convert", "-U", "-O", "raw", *snap, after=(out,))
    return out


def cluster_hashes(raw_path, cluster_size: int) -> list[str]:
    """sha256 hex digest of each ``cluster_size`` chunk of a raw file (the last one may be short)."""
    with open(raw_path, "rb") as f:
        return [hashlib.sha256(chunk).hexdigest() for chunk in iter(lambda: f.read(cluster_size), b"")]
