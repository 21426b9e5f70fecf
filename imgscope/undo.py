"""The undo log of a repair: every byte range a repair overwrites, saved before it is written.

Layout (declared once below, big-endian): a header (magic, original file length,
device/inode and path of the image, number of records), then one record per
planned write (offset, length written, the original bytes of the part that lay
inside the original file, SHA-256 of the range after that write and after the
whole repair, a CRC-32 of the record), then the 8-byte trailer ``UNDO-END``.
The log is written completely and fsynced (file and directory) before the image
is touched, so a log without its trailer means no image byte was written yet.

Restoring writes every saved range back (last record first) and truncates the
file to its original length: the result is byte-identical to the image before
the repair.  Before restoring, each range must hold its original bytes, the
bytes of its own write, or the final repaired bytes; anything else means the
image changed after the repair, and restoring is refused unless forced.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from typing import Any

import construct as cs

from .errors import FormatError, RepairError

MAGIC = b"IMGSCOPE-UNDO\x00\x00\x01"
TRAILER = b"UNDO-END"

UndoHeader = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "original_size" / cs.Int64ub,
    "device" / cs.Int64ub,
    "inode" / cs.Int64ub,
    "count" / cs.Int32ub,
    "path" / cs.PascalString(cs.Int32ub, "utf8"),
)

UndoRecord = cs.Struct(
    "offset" / cs.Int64ub,
    "length" / cs.Int64ub,
    "saved" / cs.Prefixed(cs.Int64ub, cs.GreedyBytes),
    "after" / cs.Bytes(32),
    "final" / cs.Bytes(32),
    "crc" / cs.Int32ub,
)

#: the largest undo log imgscope reads back (records hold at most the repaired metadata)
MAX_UNDO_BYTES = 1 << 32


@dataclass
class Record:
    offset: int
    length: int
    saved: bytes   # original bytes of [offset, min(offset + length, original_size))
    after: bytes   # sha256 of the range right after this record's write
    final: bytes   # sha256 of the range after the whole repair

    def crc(self) -> int:
        body = self.offset.to_bytes(8, "big") + self.length.to_bytes(8, "big") + self.saved + self.after + self.final
        return zlib.crc32(body)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def build_records(read: Any, size: int, writes: list[tuple[int, bytes]]) -> list[Record]:
    """Records for ``writes`` (offset, data) in order; ``read(offset, n)`` gives original bytes."""
    recs = []
    for i, (off, data) in enumerate(writes):
        n = max(0, min(off + len(data), size) - off)
        saved = read(off, n) if n else b""
        final = bytearray(data)
        for off2, data2 in writes[i + 1:]:  # later writes overlapping this range
            lo, hi = max(off, off2), min(off + len(data), off2 + len(data2))
            if lo < hi:
                final[lo - off:hi - off] = data2[lo - off2:hi - off2]
        recs.append(Record(off, len(data), saved, _digest(data), _digest(bytes(final))))
    return recs


def write_log(path: str, image_path: str, st: os.stat_result, size: int, records: list[Record]) -> None:
    """Write the complete log and make it durable (file, then its directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(UndoHeader.build(dict(original_size=size, device=st.st_dev, inode=st.st_ino, count=len(records),
                                          path=os.path.abspath(image_path))))
            for r in records:
                f.write(UndoRecord.build(dict(offset=r.offset, length=r.length, saved=r.saved, after=r.after,
                                              final=r.final, crc=r.crc())))
            f.write(TRAILER)
        os.fdatasync(fd)  # its bytes and size; the directory entry is made durable below
    finally:
        os.close(fd)
    fsync_dir(path)


def fsync_dir(path: str) -> None:
    dfd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class UndoLog:
    image_path: str
    original_size: int
    device: int
    inode: int
    records: list[Record]
    complete: bool


def read_log(path: str) -> UndoLog:
    """Parse an undo log; malformed logs raise :class:`FormatError` naming the record."""
    with open(path, "rb") as f:
        data = f.read(MAX_UNDO_BYTES + 1)
    if len(data) > MAX_UNDO_BYTES:
        raise FormatError("undo log", 0, "larger than any log imgscope writes")
    try:
        h = UndoHeader.parse(data)
    except cs.ConstructError as exc:
        raise FormatError("undo log header", 0, f"not an imgscope undo log ({exc.__class__.__name__})") from None
    pos = len(UndoHeader.build(h))
    recs: list[Record] = []
    for i in range(h.count):
        if pos >= len(data) or len(data) - pos < 92:
            return UndoLog(h.path, h.original_size, h.device, h.inode, recs, False)
        try:
            r = UndoRecord.parse(data[pos:])
        except cs.ConstructError:
            return UndoLog(h.path, h.original_size, h.device, h.inode, recs, False)
        rec = Record(r.offset, r.length, bytes(r.saved), bytes(r.after), bytes(r.final))
        if rec.crc() != r.crc or len(rec.saved) > rec.length:
            raise FormatError(f"undo log record {i}", pos, "checksum mismatch")
        recs.append(rec)
        pos += 8 + 8 + 8 + len(rec.saved) + 32 + 32 + 4
    return UndoLog(h.path, h.original_size, h.device, h.inode, recs, data[pos:pos + 8] == TRAILER)


def restore(fd: int, log: UndoLog, force: bool = False) -> int:
    """Put every saved range back and truncate; returns the number of ranges restored."""
    if not log.complete:
        return 0  # the log was never completed: no image byte was written
    size = os.fstat(fd).st_size
    if not force:
        for i, r in enumerate(log.records):
            cur = os.pread(fd, r.length, r.offset) if r.offset < size else b""
            # original bytes (past the original end: nothing or zeros), its own write, or the final state
            untouched = cur[:len(r.saved)] == r.saved and not cur[len(r.saved):].strip(b"\0")
            ok = untouched or _digest(cur) in (r.after, r.final)
            if not ok:
                raise RepairError(f"undo record {i} (offset {r.offset:#x}): the image changed after the repair; "
                                  "use --force to restore anyway")
    for r in reversed(log.records):
        if r.saved:
            os.pwrite(fd, r.saved, r.offset)
    os.ftruncate(fd, log.original_size)
    os.fsync(fd)
    return len(log.records)
