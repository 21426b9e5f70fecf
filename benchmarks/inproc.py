"""In-process measurements, run in a fresh child interpreter by benchmarks/run.py.

    python benchmarks/inproc.py OP IMAGE RUNS [once]

OP is one of ``snapshots`` (``imgscope.open(p)`` + ``.snapshots``), ``mapping``
(per-cluster ``.mapping()``), ``guest_map`` (the model behind it), ``clusters`` or
``check``.  Prints one JSON object: the wall time of each run (after one warm-up
run), the tracemalloc peak of one run, the peak RSS of one run above the RSS
before it (VmHWM reset through /proc/self/clear_refs) and private/shared memory
from /proc/self/smaps_rollup while the result is still alive.
"""
from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from typing import Any

import imgscope


def _op(name: str, path: str) -> tuple[Any, Any]:
    """Run one operation on a freshly opened image; returns (image, result) so both stay alive."""
    img = imgscope.open(path)
    if name == "snapshots":
        return img, img.snapshots
    if name == "mapping":
        return img, img.mapping()
    if name == "guest_map":
        return img, img.guest_map()
    if name == "clusters":
        return img, img.clusters()
    if name == "check":
        return img, img.check()
    raise SystemExit(f"unknown op {name}")


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(val.split()[0])
    return out


def _smaps() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
                    out[key] = int(val.split()[0])
    except OSError:
        pass
    return out


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5\n")
        return True
    except OSError:
        return False


def _nbytes(obj: Any) -> int:
    """Bytes held by a result's arrays (GuestMap fields, or a frame's columns)."""
    if hasattr(obj, "memory_usage"):
        return int(obj.memory_usage(index=True, deep=False).sum())
    return sum(getattr(v, "nbytes", 0) for v in vars(obj).values()) if hasattr(obj, "__dict__") else 0


def _clusters(img: Any) -> int:
    return -(-img.virtual_size // img.cluster_size)


def main() -> None:
    op, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    once = len(sys.argv) > 4 and sys.argv[4] == "once"  # one timed run, no warm-up or memory runs (slow ops)
    import numpy  # noqa: F401  (modules are loaded before timing: this is the in-process cost)
    import pandas  # noqa: F401
    if once:
        t0 = time.perf_counter()
        img, res = _op(op, path)
        t = time.perf_counter() - t0
        print(json.dumps({"op": op, "runs": [t], "clusters": _clusters(img), "result_bytes": _nbytes(res),
                          "peak_rss_kib": _status()["VmHWM"]}))
        return
    img, res = _op(op, path)  # warm-up (page cache, lazy imports)
    ncl = _clusters(img)
    size = _nbytes(res)
    img.close()
    del img, res
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        img, res = _op(op, path)
        times.append(time.perf_counter() - t0)
        img.close()
        del img, res
    gc.collect()
    before = _status()
    hwm_ok = _reset_hwm()
    img, res = _op(op, path)
    after, smaps = _status(), _smaps()
    img.close()
    del img, res
    gc.collect()
    tracemalloc.start()
    img, res = _op(op, path)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({
        "op": op, "runs": times, "clusters": ncl, "result_bytes": size, "tracemalloc_peak": traced,
        "peak_rss_delta_kib": after["VmHWM"] - before["VmRSS"] if hwm_ok else None,
        "peak_rss_kib": after["VmHWM"], "rss_anon_kib": after.get("RssAnon"), "rss_file_kib": after.get("RssFile"),
        "private_kib": smaps.get("Private_Clean", 0) + smaps.get("Private_Dirty", 0) if smaps else None,
        "shared_kib": smaps.get("Shared_Clean", 0) + smaps.get("Shared_Dirty", 0) if smaps else None,
        "baseline_rss_kib": before["VmRSS"], "baseline_anon_kib": before.get("RssAnon"),
    }))


if __name__ == "__main__":
    main()
