"""Fleet scan: one row per image for thousands of images, locally or on Dask.

``scan(paths)`` expands files, directories and globs, inspects every image in a
process pool (or as Dask tasks when ``scheduler`` is given) and returns one
pandas row per image.  An unreadable or malformed image gives a row with its
``error``; a scan never aborts because of one image.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

#: columns of the scan frame, in order (documented in docs/frames.md)
COLUMNS = ("path", "format", "virtual_size", "file_size", "allocated_bytes", "cluster_size", "dirty", "corrupt",
           "check_rc", "corruptions", "leaks", "check_errors", "leaked_bytes", "allocated_clusters",
           "total_clusters", "fragmented_pct", "snapshot_count", "backing_file", "backing_format",
           "incompatible_features", "error")
_IMAGE_SUFFIXES = (".qcow2", ".qcow", ".img", ".qed", ".vmdk", ".vdi", ".vhd", ".vhdx", ".vpc", ".raw", ".fvd")


def expand(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files named, files under directories (by image suffix) and glob matches, in order, once each."""
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for item in paths:
        s = os.fspath(item)
        if os.path.isdir(s):
            for root, dirs, files in os.walk(s):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(_IMAGE_SUFFIXES):
                        add(os.path.join(root, f))
        elif any(c in s for c in "*?["):
            for m in sorted(glob.glob(s, recursive=True)):
                if os.path.isfile(m):
                    add(m)
        else:
            add(s)
    return out


def scan_one(path: str, checks: bool = True, frames: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inspect one image: (row, {frame name: DataFrame}) — never raises for a bad image."""
    import imgscope
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row["path"] = path
    extra: dict[str, Any] = {}
    try:
        st = os.stat(path)
        row["file_size"], row["allocated_bytes"] = st.st_size, st.st_blocks * 512
        with imgscope.open(path) as img:
            row["format"] = img.format
            row["virtual_size"] = img.virtual_size
            row["cluster_size"] = img.cluster_size
            row["dirty"] = bool(img.dirty)
            row["corrupt"] = bool(getattr(img, "corrupt", False))
            row["snapshot_count"] = len(img.snapshot_list())
            b = img.backing()
            if b is not None:
                row["backing_file"], row["backing_format"] = b
            feats = [f for f in img.feature_rows() if f["kind"] == "incompatible" and f["set"]]
            row["incompatible_features"] = ",".join(f["name"] for f in feats)
            if "snapshots" in frames:
                extra["snapshots"] = img.snapshots
            if checks:
                _check_columns(img, row, extra, "findings" in frames)
    except Exception as exc:  # one bad image must not stop a fleet scan
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row, extra


def _check_columns(img: Any, row: dict[str, Any], extra: dict[str, Any], want_findings: bool) -> None:
    try:
        res = img.check()
    except NotImplementedError:
        return
    row["check_rc"] = res.exit_code()
    row["corruptions"], row["leaks"], row["check_errors"] = res.corruptions, res.leaks, res.check_errors
    row["leaked_bytes"] = res.leaks * (img.cluster_size or 0)
    row["allocated_clusters"], row["total_clusters"] = res.allocated_clusters, res.total_clusters
    if res.allocated_clusters:
        row["fragmented_pct"] = 100.0 * res.fragmented_clusters / res.allocated_clusters
    if want_findings:
        extra["findings"] = res.findings


def _one_kernel_thread() -> None:
    os.environ.setdefault("IMGSCOPE_THREADS", "1")


def _scan_task(args: tuple[str, bool, tuple[str, ...]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return scan_one(*args)


def scan(paths: Iterable[str | os.PathLike[str]] | str, *, checks: bool = True, jobs: int | None = None,
         scheduler: Any = None, frames: Iterable[str] = (), progress: bool = False, dask_frame: bool = False) -> Any:
    """Scan many images; returns the fleet frame (one row per image, in input order).

    ``frames`` may name ``"snapshots"`` and ``"findings"``: the result is then
    ``(images, {name: concatenated frame with a path column})``.  ``scheduler`` is a
    Dask distributed address or ``Client``; ``dask_frame=True`` returns a dask
    DataFrame built from the same rows.
    """
    import pandas as pd
    files = expand([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    frames = tuple(frames)
    tasks = [(p, checks, frames) for p in files]
    results: list[Any] = [None] * len(tasks)
    bar = _bar(len(tasks), progress)
    if scheduler is not None:
        _run_dask(scheduler, tasks, results, bar)
    elif jobs == 1 or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            results[i] = _scan_task(t)
            bar.update(1)
    else:
        # the cores are shared by the images, not by each check's kernel threads (unless the user set them)
        with ProcessPoolExecutor(max_workers=jobs or os.cpu_count(), initializer=_one_kernel_thread) as pool:
            futs = {pool.submit(_scan_task, t): i for i, t in enumerate(tasks)}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                bar.update(1)
    bar.close()
    df = _frame([r[0] for r in results])
    if dask_frame:
        import dask.dataframe as dd
        df = dd.from_pandas(df, npartitions=max(1, min(len(df), 8)))
    if not frames:
        return df
    extra = {}
    for name in frames:
        parts = [r[1][name].assign(path=r[0]["path"]) for r in results if name in r[1] and len(r[1][name])]
        extra[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return df, extra


def _run_dask(scheduler: Any, tasks: list[Any], results: list[Any], bar: Any) -> None:
    from distributed import Client, as_completed as dask_completed
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futs = client.map(_scan_task, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futs)}
        for f in dask_completed(futs):
            results[index[f.key]] = f.result()
            bar.update(1)
    finally:
        if client is not scheduler:
            client.close()


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    ints = ("virtual_size", "file_size", "allocated_bytes", "cluster_size", "check_rc", "corruptions", "leaks",
            "check_errors", "leaked_bytes", "allocated_clusters", "total_clusters", "snapshot_count")
    for c in ints:
        df[c] = pd.array(df[c], dtype="Int64")
    for c in ("dirty", "corrupt"):
        df[c] = pd.array(df[c], dtype="boolean")
    df["fragmented_pct"] = pd.array(df["fragmented_pct"], dtype="Float64")
    for c in ("path", "backing_file", "backing_format", "incompatible_features", "error"):
        df[c] = df[c].astype("string")
    df["format"] = df["format"].astype("category")
    return df


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="image", desc="imgscope scan")
