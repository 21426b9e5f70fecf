"""Bounded, read-only access to an image file.

:class:`Source` is the only place that reads image bytes.  Every read is
checked against the file size, so a hostile offset can never cause an
unbounded allocation; reads that run past the end are either an error
naming the structure or, where the format says so (qemu reads holes and the
area past EOF as zeros), zero-filled.
"""
from __future__ import annotations

import mmap
import os
import stat
from typing import Any

from .errors import FormatError, ImgscopeError

#: the largest single read a driver may ask for (one table); bigger tables are read in pieces
MAX_READ = 1 << 30


def _open_regular(path: str, flags: int) -> int:
    """Open ``path`` only if it is a regular file, without ever blocking.

    ``O_NONBLOCK`` makes opening a FIFO swapped in after the caller's ``stat``
    return at once; ``fstat`` on the descriptor then decides, and the flag is
    cleared again for ordinary reads.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ImgscopeError(f"{path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImgscopeError(f"{path}: is a special file (device, FIFO or socket), not an image file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Source:
    """A read-only image file opened by path; refuses devices, FIFOs and sockets."""

    def __init__(self, path: str | os.PathLike[str], *, writable: bool = False) -> None:
        self.path = os.fspath(path)
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ImgscopeError(f"{self.path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file (device, FIFO or socket)"
            raise ImgscopeError(f"{self.path}: is a {kind}, not an image file")
        self.fd = _open_regular(self.path, os.O_RDWR if writable else os.O_RDONLY)
        self.writable = writable
        self.size = os.fstat(self.fd).st_size
        self.allocated = st.st_blocks * 512

    def close(self) -> None:
        mm = self.__dict__.pop("_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a caller still holds a view; the mapping goes with it
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def qemu_size(self) -> int:
        """The file's length as qemu sees it: whole 512-byte sectors (``bdrv_getlength`` counts a partial
        last sector, which reads as zeros past EOF).  What "past the end of the file" means to qemu."""
        return -(-self.size // 512) * 512

    def mapping(self) -> mmap.mmap | None:
        """The whole file mapped read-only (kept until :meth:`close`), or None when it cannot be:
        an empty file, a failed ``mmap``, or a subclass whose reads differ from the file's bytes.

        Pages are mapped only when touched; :meth:`release` unmaps them again, so a walk over a
        huge file holds one chunk of page cache at a time.  A file truncated by another process
        while it is mapped makes reads of the lost pages fault (SIGBUS); bulk walks accept that
        risk for speed (docs/security.md).
        """
        if type(self) is not Source or self.size <= 0 or self.fd < 0:
            return None
        mm = self.__dict__.get("_mm")
        if mm is None:
            try:
                mm = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)
            except (OSError, ValueError, OverflowError):
                return None
            self._mm = mm
        return mm

    def release(self, offset: int, length: int) -> None:
        """Drop the mapped pages of ``[offset, offset + length)`` from this process (they stay cached)."""
        mm = self.__dict__.get("_mm")
        if mm is None or length <= 0 or not hasattr(mm, "madvise"):
            return
        lo = max(0, offset) // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(self.size, offset + length)
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, length: int, structure: str, *, zero_fill: bool = False) -> bytes:
        """Read exactly ``length`` bytes at ``offset``.

        Past the end of the file: raise :class:`FormatError` naming ``structure``,
        or return zeros for the missing part when ``zero_fill`` is set.
        """
        if offset < 0 or length < 0:
            raise FormatError(structure, offset, "negative offset or length")
        if length > MAX_READ:
            raise FormatError(structure, offset, f"length {length} is larger than any table imgscope reads")
        end = offset + length
        if end > self.size and not zero_fill:
            raise FormatError(structure, offset, f"{length} bytes run past end of file ({self.size} bytes)")
        data = os.pread(self.fd, max(0, min(end, self.size) - offset), offset) if offset < self.size else b""
        if len(data) < length:
            if not zero_fill and offset + len(data) < min(end, self.size):
                raise FormatError(structure, offset, "short read")
            data += bytes(length - len(data))
        return data

    def readinto(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` from ``offset``; bytes past EOF become zeros."""
        n = len(buf)
        got = 0
        while got < n and offset + got < self.size:
            chunk = os.preadv(self.fd, [buf[got:]], offset + got)
            if chunk <= 0:
                break
            got += chunk
        if got < n:
            buf[got:] = bytes(n - got)

    def advise_willneed(self, offset: int, length: int) -> None:
        """Ask the kernel to prefetch a range (cold-cache table reads)."""
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass

    def prefetch(self, offsets: Any, length: int) -> None:
        """Start reading the ranges ``[o, o + length)`` of every offset (ints) into the page cache at once
        (adjacent ones as one range): a walk over a cold cache then reads them in large requests instead
        of one synchronous read per table (docs/performance.md).  Nothing is asked when a sample of the
        ranges is already cached (asking costs a walk of the cache for every page)."""
        ranges: list[tuple[int, int]] = []
        for o in sorted(set(offsets)):
            if not 0 < o < self.size:
                continue
            if ranges and o <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], o + length)
            else:
                ranges.append((o, o + length))
        if self._cached([ranges[i * len(ranges) // 32] for i in range(min(32, len(ranges)))]):
            return
        for start, end in ranges:
            self.advise_willneed(start, end - start)

    def _cached(self, ranges: list[tuple[int, int]]) -> bool:
        """Is the first byte of every range in the page cache (read without waiting for the disk)?"""
        nowait = getattr(os, "RWF_NOWAIT", None)
        if nowait is None or not ranges:
            return False
        probe = bytearray(1)
        for start, _ in ranges:
            try:
                if os.preadv(self.fd, [probe], start, nowait) != 1:
                    return False
            except OSError:  # EAGAIN: not cached (or the flag unsupported)
                return False
        return True

    def data_ranges(self) -> list[tuple[int, int]]:
        """Allocated (non-hole) byte ranges of the host file, via SEEK_DATA/SEEK_HOLE."""
        out: list[tuple[int, int]] = []
        pos = 0
        try:
            while pos < self.size:
                start = os.lseek(self.fd, pos, os.SEEK_DATA)
                end = os.lseek(self.fd, start, os.SEEK_HOLE)
                out.append((start, end))
                pos = end
        except OSError:
            pass
        return out
