"""Timing and memory measurement of whole processes (qemu-img vs imgscope) for the benchmarks."""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Wall-clock seconds of each run (after warm-up) and the largest peak RSS seen (KiB)."""

    runs: list[float] = field(default_factory=list)
    maxrss_kib: int = 0
    rc: int | None = None
    cpu: list[float] = field(default_factory=list)  # user + system seconds of each run

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    def merge(self, other: "Timing") -> None:
        self.runs += other.runs
        self.cpu += other.cpu
        self.maxrss_kib = max(self.maxrss_kib, other.maxrss_kib)
        self.rc = other.rc


#: the children's environment: without PYTHONDONTWRITEBYTECODE (set in some shells here), with which
#: every imgscope process recompiles the modules whose cached bytecode is stale (≈ 20-90 ms)
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_process(argv: list[str], runs: int, warmup: int = 1, prepare=None, env: dict | None = None) -> Timing:
    """Run ``argv`` ``warmup`` + ``runs`` times, output to /dev/null; time each and take its rusage.

    ``prepare`` (optional) is called before every run and is not timed (e.g. copy a fresh image).
    """
    t = Timing()
    for i in range(warmup + runs):
        if prepare is not None:
            prepare()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=CHILD_ENV if env is None else env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        t.rc = proc.returncode
        if i >= warmup:
            t.runs.append(elapsed)
            t.cpu.append(usage.ru_utime + usage.ru_stime)
            t.maxrss_kib = max(t.maxrss_kib, usage.ru_maxrss)
    return t


def fresh_copy(src, dst):
    """A ``prepare`` hook for :func:`run_process`: copy ``src`` to ``dst`` (sparse) and write the copy
    back to disk untimed; otherwise the timed tool's first flush pays for writing back cp's pages,
    which varied 8-200 ms here."""
    def prepare() -> None:
        subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return prepare


def drop_caches() -> str | None:
    """Drop the page cache (root only); returns None on success or why it failed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as exc:
        return f"cannot drop caches: {exc.strerror}"


def fmt_seconds(s: float) -> str:
    if s != s:  # NaN
        return "-"
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"
