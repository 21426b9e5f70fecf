"""qemu's image locking, so a repair never writes under a running VM (Linux OFD locks).

qemu's file-posix driver (block/file-posix.c, ``RAW_LOCK_PERM_BASE`` 100 and
``RAW_LOCK_SHARED_BASE`` 200) expresses its block-layer permissions as shared
(F_RDLCK) open-file-description locks on single bytes of the image file:

* byte ``100 + i`` is locked while it *holds* permission bit ``i``;
* byte ``200 + i`` is locked while it *does not share* permission bit ``i``;

with the bits of qemu 7.2's ``BLK_PERM_*``: 0 consistent-read, 1 write,
2 write-unchanged, 3 resize (bit 4, the removed graph-mod, may still be locked by
qemu <= 6.1).  Opening checks for conflicts with F_OFD_GETLK *after* taking its
own locks, so two openers racing always see each other.  A qemu writer (a VM,
``qemu-io``, ``qemu-img check -r``) holds bytes 100, 101, 103, 201 and 203; a
reader holds 100, 201 and 203.  ``-U``/force-share openers take no locks and are
invisible to everyone, qemu included.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator

from .errors import ImageInUse, ImgscopeError

PERM_BASE = 100
SHARED_BASE = 200
PERM_NAMES = ("consistent read", "write", "write unchanged", "resize", "graph mod")

#: what a qemu writer holds: permissions read, write, resize; does not share write, resize
WRITER_PERM = (0, 1, 3)
WRITER_UNSHARED = (1, 3)
#: bytes whose lock by anyone else conflicts with a writer (qemu's raw_check_lock_bytes for
#: a writer, plus write-unchanged and the legacy graph-mod bit, which imgscope also refuses)
CONFLICT_BYTES = tuple(PERM_BASE + i for i in (1, 2, 3, 4)) + tuple(SHARED_BASE + i for i in range(5))

_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
#: struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding)
_FLOCK = struct.Struct("@hhqqi4x")


def _fcntl(fd: int, cmd: int, ltype: int, start: int, length: int = 1) -> tuple[int, int]:
    """One OFD lock call; returns (l_type, l_pid) of the answer."""
    arg = _FLOCK.pack(ltype, os.SEEK_SET, start, length, 0)
    out = fcntl.fcntl(fd, cmd, arg)
    t, _, _, _, pid = _FLOCK.unpack(out)
    return t, pid


def _conflicts(fd: int) -> list[int]:
    """Bytes of CONFLICT_BYTES locked by an open file description other than ``fd``'s."""
    return [b for b in CONFLICT_BYTES if _fcntl(fd, _F_OFD_GETLK, fcntl.F_WRLCK, b)[0] != fcntl.F_UNLCK]


def _describe(path: str, held: list[int]) -> str:
    perms = [PERM_NAMES[b - PERM_BASE] for b in held if b < SHARED_BASE]
    unshared = [PERM_NAMES[b - SHARED_BASE] for b in held if b >= SHARED_BASE]
    parts = []
    if perms:
        parts.append("holds " + ", ".join(perms))
    if unshared:
        parts.append("does not share " + ", ".join(unshared))
    who = holders(path)
    return f"{', '.join(who) if who else 'another process'} ({'; '.join(parts)})"


def holders(path: str, limit: int = 4096) -> list[str]:
    """Best effort: ``name (pid N)`` of processes holding qemu lock bytes on ``path``.

    OFD locks report no owner pid, so this reads ``/proc/*/fdinfo`` (lock lines) for
    descriptors on the same inode; processes of other users are not visible.
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    out: list[str] = []
    me = os.getpid()
    pids = [p for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []
    for pid in pids[:limit]:
        if int(pid) == me:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    if any(line.startswith("lock:") and key in line and _in_range(line) for line in f):
                        with open(f"/proc/{pid}/comm") as c:
                            out.append(f"{c.read().strip()} (pid {pid})")
                        break
        except OSError:
            continue
    return out


def _in_range(line: str) -> bool:
    """Whether a /proc lock line covers a qemu lock byte."""
    try:
        start, end = line.split()[-2:]
        lo, hi = int(start), (1 << 63) if end == "EOF" else int(end)
    except ValueError:
        return False
    return lo <= PERM_BASE + 4 and hi >= PERM_BASE or lo <= SHARED_BASE + 4 and hi >= SHARED_BASE


def probe(path: str | os.PathLike[str]) -> str | None:
    """Who holds a lock that conflicts with writing ``path`` (None when nobody does)."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImgscopeError(f"{path}: {exc.strerror}") from None
    try:
        held = _conflicts(fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
            return None  # the file system has no OFD locks: nothing can be detected (qemu: locking=auto)
        raise
    finally:
        os.close(fd)
    return _describe(path, held) if held else None


def _set(fd: int, ltype: int, byte: int) -> None:
    _fcntl(fd, _F_OFD_SETLK, ltype, byte)


@contextlib.contextmanager
def exclusive_for_repair(fd: int, path: str | None = None) -> Iterator[None]:
    """Hold on ``fd`` the locks a qemu writer holds, for the duration of the block.

    Locks first, then checks for conflicts (qemu's order), so a qemu process that
    opens concurrently either sees imgscope's locks or is seen.  Raises
    :class:`ImageInUse` naming the holder when another process holds a
    conflicting lock.  Closing ``fd`` also drops the locks.
    """
    where = path or f"fd {fd}"
    mine = [PERM_BASE + i for i in WRITER_PERM] + [SHARED_BASE + i for i in WRITER_UNSHARED]
    taken: list[int] = []
    try:
        try:
            for b in mine:
                _set(fd, fcntl.F_RDLCK, b)
                taken.append(b)
            held = _conflicts(fd)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                held = list(CONFLICT_BYTES)
            elif exc.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
                held = []  # no OFD locks on this file system
            else:
                raise
        if held:
            raise ImageInUse(f"{where}: image is in use by {_describe(where, held) if path else 'another process'}; "
                             "stop the VM or process using it before repairing "
                             "(imgscope takes the same locks as a qemu writer)")
        yield
    finally:
        for b in taken:
            with contextlib.suppress(OSError):
                _set(fd, fcntl.F_UNLCK, b)
