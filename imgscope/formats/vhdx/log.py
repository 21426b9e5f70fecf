"""The VHDX metadata log: find the active sequence and replay it *in memory*.

A header with a non-zero log GUID means metadata updates may not have reached
their place (the VHDX "dirty" state).  qemu replays the log when it opens the
image read-write and refuses a read-only open; imgscope never writes: it finds
the active sequence the way qemu 7.2's ``vhdx_log_search`` does and overlays
the replayed sectors on every later read (:class:`ReplayedSource`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError
from ...io import Source
from ...limits import LIMITS, enforce
from . import layout as L
from .crc32c import crc32c


@dataclass
class LogEntry:
    offset: int               # position in the log (bytes from the log start)
    header: Any
    descriptors: list[Any]


@dataclass
class LogReplay:
    """The active sequence and the writes it makes."""

    entries: list[LogEntry] = field(default_factory=list)
    writes: list[tuple[int, int, bytes | None]] = field(default_factory=list)  # (offset, length, data or zeros)
    new_size: int | None = None
    problems: list[str] = field(default_factory=list)


class _Log:
    def __init__(self, src: Source, header: Any) -> None:
        self.src, self.hdr = src, header
        self.offset, self.length = header.log_offset, header.log_length

    def sector(self, pos: int) -> bytes:
        return self.src.read(self.offset + pos, L.LOG_SECTOR, "vhdx log sector", zero_fill=True)

    def inc(self, pos: int, n: int = 1) -> int:
        for _ in range(n):
            pos = pos + L.LOG_SECTOR
            pos = 0 if pos >= self.length else pos
        return pos

    def entry(self, pos: int, prev_seq: int) -> tuple[LogEntry | None, int]:
        """Validate the entry at ``pos``; (entry or None, position after it) as ``vhdx_validate_log_entry``."""
        if pos + L.LOG_HEADER_SIZE > self.length:
            pos = 0
        first = self.sector(pos)
        h = L.LogEntryHeader.parse(first)
        ok = (h.signature == b"loge" and h.entry_length <= self.length and h.entry_length % L.LOG_SECTOR == 0
              and h.sequence_number != 0 and h.log_guid == self.hdr.log_guid
              and h.descriptor_count * L.LOG_DESCRIPTOR_SIZE <= h.entry_length
              and (prev_seq == 0 or h.sequence_number == prev_seq + 1))
        if not ok:
            return None, self.inc(pos)
        total = h.entry_length // L.LOG_SECTOR
        nd = L.desc_sectors(h.descriptor_count)
        if nd > total:
            return None, self.inc(pos)
        raw, p = b"", pos
        for _ in range(total):
            raw += self.sector(p)
            p = self.inc(p)
        descs = [L.LogDescriptor.parse(raw[L.LOG_HEADER_SIZE + 32 * i:]) for i in range(h.descriptor_count)]
        if any(not _desc_ok(d, h) for d in descs):
            return None, p
        if crc32c(raw[:4] + b"\0\0\0\0" + raw[8:]) != h.checksum:
            return None, p
        return LogEntry(pos, h, descs), p


def _desc_ok(d: Any, h: Any) -> bool:
    if d.sequence_number != h.sequence_number or d.file_offset % L.LOG_SECTOR:
        return False
    if d.signature == b"zero":
        return int.from_bytes(d.leading_bytes, "little") % L.LOG_SECTOR == 0
    return d.signature == b"desc"


def find_active(src: Source, header: Any) -> LogReplay:
    """The valid sequence with the highest first sequence number (empty when the log is clean)."""
    out = LogReplay()
    if header.log_guid == bytes(16) or header.log_length == 0:
        return out
    if header.log_length % L.MiB or header.log_offset % L.MiB or header.log_offset < L.MiB:
        raise FormatError("vhdx header", None, f"log at {header.log_offset:#x} of {header.log_length} bytes is "
                          "not 1 MiB aligned")
    enforce("max_metadata_bytes", header.log_length, "vhdx log", header.log_offset)
    log = _Log(src, header)
    best: list[LogEntry] = []
    pos = 0
    while True:
        tail = pos
        first, pos = log.entry(pos, 0)
        seq = [first] if first else []
        while first:
            nxt, after = log.entry(pos, seq[-1].header.sequence_number)
            if nxt is None:
                break
            seq.append(nxt)
            pos = after
        if seq and (not best or seq[0].header.sequence_number > best[0].header.sequence_number):
            best = seq
        if pos <= tail:
            break
    out.entries = best
    _replay(log, out)
    return out


def _replay(log: _Log, out: LogReplay) -> None:
    """The writes the active sequence makes, in order (data sectors follow the descriptor sectors)."""
    size = log.src.size
    for e in out.entries:
        h = e.header
        if h.flushed_file_offset > size:
            out.problems.append(f"log entry {h.sequence_number}: flushed file offset {h.flushed_file_offset} is "
                                f"past the end of file ({size}): the file was truncated")
        p = log.inc(e.offset, L.desc_sectors(h.descriptor_count))
        for d in e.descriptors:
            if d.signature == b"desc":
                data = L.LogDataSector.parse(log.sector(p))
                p = log.inc(p)
                if (data.sequence_high << 32 | data.sequence_low) != d.sequence_number:
                    out.problems.append(f"log entry {h.sequence_number}: data sector sequence mismatch")
                    continue
                out.writes.append((d.file_offset, L.LOG_SECTOR, d.leading_bytes + data.data + d.trailing_bytes))
            else:
                n = int.from_bytes(d.leading_bytes, "little")
                if n > LIMITS["max_metadata_bytes"]:
                    out.problems.append(f"log entry {h.sequence_number}: zero descriptor of {n} bytes ignored")
                    continue
                out.writes.append((d.file_offset, n, None))
        if size < h.last_file_offset:
            size = -(-h.last_file_offset // L.MiB) * L.MiB
            out.new_size = size


class ReplayedSource:
    """A read-only view of a Source with the log's writes applied (nothing is written to disk)."""

    def __init__(self, src: Source, replay: LogReplay) -> None:
        self.src, self.replay = src, replay
        self.path, self.allocated = src.path, src.allocated
        self.size = max(src.size, replay.new_size or 0, *(o + n for o, n, _ in replay.writes))

    def read(self, offset: int, length: int, structure: str, *, zero_fill: bool = False) -> bytes:
        if offset + length > self.size and not zero_fill:
            raise FormatError(structure, offset, f"{length} bytes run past end of file ({self.size} bytes)")
        buf = bytearray(self.src.read(offset, length, structure, zero_fill=True))
        for off, n, data in self.replay.writes:
            lo, hi = max(off, offset), min(off + n, offset + length)
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - off:hi - off] if data is not None else bytes(hi - lo)
        return bytes(buf)

    def readinto(self, buf: memoryview, offset: int) -> None:
        buf[:] = self.read(offset, len(buf), "vhdx", zero_fill=True)

    def data_ranges(self) -> list[tuple[int, int]]:
        return self.src.data_ranges()
