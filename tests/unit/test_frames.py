"""The frames keep the contract of docs/frames.md: documented dtypes, exact Parquet round trips,
per-cluster and merged mappings that agree (with each other and with qemu-img map), one
snapshot row per table entry, and references equal to refcounts on a clean image."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import imgscope
from oracle.qemu import check_json, info_json, map_json, qemu_img, qemu_io

from .damage import TABLE_DAMAGES, KiB, Qcow2Copy, build_base

pytest.importorskip("pyarrow")

#: docs/frames.md, column -> dtype (category columns are checked for being categorical)
DTYPES: dict[str, dict[str, str]] = {
    "features": {"name": "string", "kind": "category", "bit": "uint8", "set": "bool", "known": "bool",
                 "table_name": "string"},
    "extensions": {"type": "uint32", "name": "string", "offset": "uint64", "length": "uint64",
                   "decoded": "string", "raw": "object"},
    "snapshots": {"index": "int64", "id": "string", "name": "string", "date": "datetime64[ns, UTC]",
                  "date_sec": "uint32", "date_nsec": "uint32", "vm_clock_nsec": "uint64", "vm_state_size": "uint64",
                  "disk_size": "UInt64", "icount": "UInt64", "l1_table_offset": "uint64", "l1_size": "uint32",
                  "extra_data_size": "uint32", "entry_offset": "uint64", "entry_length": "uint32"},
    "mapping": {"guest_offset": "uint64", "kind": "category", "host_offset": "uint64", "host_length": "uint64",
                "copied": "bool", "flags": "uint8"},
    "mapping_ext": {"subcluster_alloc": "uint32", "subcluster_zero": "uint32"},
    "merged": {"guest_offset": "uint64", "length": "uint64", "depth": "uint8", "present": "bool", "zero": "bool",
               "data": "bool", "host_offset": "UInt64"},
    "clusters": {"host_offset": "uint64", "role": "category", "roles": "category", "owner": "category",
                 "refcount": "UInt64", "references": "uint32", "shared_by": "uint32"},
    "findings": {"problem": "category", "cls": "category", "severity": "category", "counter": "category",
                 "host_offset": "UInt64", "guest_offset": "UInt64", "layer": "string", "structure": "string",
                 "expected": "string", "found": "string", "count": "Int64", "message": "string"},
}
KINDS = ["unallocated", "data", "zero", "zero_alloc", "compressed"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """'base': two snapshots, compressed clusters sharing host clusters, a bitmap; 'extl2': extended L2."""
    from conftest import require_qemu
    require_qemu()
    d = tmp_path_factory.mktemp("frames")
    base = build_base(d)
    qemu_io("qcow2", base, *(f"write -c -P {0x60 + i} {3072 * KiB + 4 * KiB * i} 4k" for i in range(6)))
    qemu_img("snapshot", "-c", "s2", base)
    qemu_io("qcow2", base, "write -P 0x70 4k 4k", "write -z 2052k 4k")
    ext = build_base(d, "extl2.qcow2", cluster_size=64 * KiB, size=8 << 20, opts="extended_l2=on", bitmap=False)
    qemu_io("qcow2", ext, "write -P 0x71 1M 4k", "write -z 1028k 2k")
    damaged = Qcow2Copy(base, d / "damaged.qcow2")  # a finding for nearly every cluster
    TABLE_DAMAGES["refcounts_scrambled"](damaged)
    return {"base": base, "extl2": ext, "damaged": damaged.path}


def frames(img: Any) -> dict[str, pd.DataFrame]:
    out = {"features": img.features, "extensions": img.extensions, "snapshots": img.snapshots,
           "mapping": img.mapping(), "merged": img.mapping(merge=True), "clusters": img.clusters(),
           "findings": img.check().findings}
    for layer in img.layer_names()[1:]:
        out[f"mapping {layer}"] = img.mapping(layer)
        out[f"merged {layer}"] = img.mapping(layer, merge=True)
    return out


def _assert_dtypes(df: pd.DataFrame, expected: dict[str, str]) -> None:
    for col, dt in expected.items():
        if dt == "category":
            assert isinstance(df[col].dtype, pd.CategoricalDtype), (col, df[col].dtype)
        elif dt == "string":
            assert pd.api.types.is_string_dtype(df[col].dtype) and df[col].dtype != object, (col, df[col].dtype)
        else:
            assert df[col].dtype == pd.api.types.pandas_dtype(dt), (col, df[col].dtype, dt)


@pytest.mark.parametrize("name", ["base", "extl2"])
def test_documented_dtypes(images: dict[str, Path], name: str) -> None:
    with imgscope.open(images[name]) as img:
        fr = frames(img)
        ext = img.meta.extended_l2
    for key, df in fr.items():
        kind = key.split()[0]
        _assert_dtypes(df, DTYPES[kind])
        if kind == "mapping":
            assert list(df["kind"].cat.categories) == KINDS
            if ext:
                _assert_dtypes(df, DTYPES["mapping_ext"])
            else:
                assert "subcluster_alloc" not in df
    assert list(fr["clusters"]["owner"].cat.categories[:1]) == ["active"]


@pytest.mark.parametrize("name", ["base", "extl2", "damaged"])
def test_parquet_round_trip(images: dict[str, Path], name: str, tmp_path: Path) -> None:
    with imgscope.open(images[name]) as img:
        fr = frames(img)
    assert name != "damaged" or len(fr["findings"]) > 20
    for key, df in fr.items():
        path = tmp_path / f"{key.replace(':', '_').replace(' ', '_')}.parquet"
        df.to_parquet(path)
        back = pd.read_parquet(path)
        if len(df):
            pd.testing.assert_frame_equal(back, df, check_exact=True, obj=key)
        else:  # pyarrow cannot restore the dtype of an empty categorical column
            assert list(back.columns) == list(df.columns) and not len(back), key
        assert back.attrs == df.attrs, key


def _expand(merged: pd.DataFrame, cs: int, n: int) -> pd.DataFrame:
    """Per-cluster (present, zero, data, host_offset) from merged extents (cluster-aligned here)."""
    start = merged["guest_offset"].to_numpy(np.uint64)
    length = merged["length"].to_numpy(np.uint64)
    assert not (start % np.uint64(cs)).any()
    reps = -(-length.astype(np.int64) // cs)
    idx = np.repeat(np.arange(len(merged)), reps)
    within = np.arange(n) - np.repeat(start.astype(np.int64) // cs, reps)
    host = merged["host_offset"].to_numpy(dtype=np.float64, na_value=np.nan)[idx]
    out = pd.DataFrame({c: merged[c].to_numpy()[idx] for c in ("present", "zero", "data")})
    out["host"] = np.where(np.isnan(host), -1, host + within * cs).astype(np.int64)
    return out


@pytest.mark.parametrize("layer", ["active", "1", "2"])
def test_cluster_mapping_agrees_with_merged(images: dict[str, Path], layer: str) -> None:
    with imgscope.open(images["base"]) as img:
        per = img.mapping(layer)
        merged = img.mapping(layer, merge=True)
    cs, n = per.attrs["cluster_size"], len(per)
    assert int(merged["length"].sum()) == per.attrs["virtual_size"] == n * cs
    exp = _expand(merged, cs, n)
    kind = per["kind"].astype(str).to_numpy()
    has_host = np.isin(kind, ["data", "zero_alloc"])
    # no backing file: everything is at depth 0; unallocated clusters are absent and read as zeros
    assert (merged["depth"] == 0).all()
    np.testing.assert_array_equal(exp["present"], kind != "unallocated")
    np.testing.assert_array_equal(exp["data"], np.isin(kind, ["data", "compressed"]))
    np.testing.assert_array_equal(exp["zero"], np.isin(kind, ["zero", "zero_alloc", "unallocated"]))
    np.testing.assert_array_equal(exp["host"], np.where(has_host, per["host_offset"].astype(np.int64), -1))
    assert (per.loc[kind == "unallocated", ["host_offset", "host_length"]] == 0).all().all()
    assert (per.loc[has_host, "host_length"] == cs).all()
    comp = per[kind == "compressed"]
    assert len(comp) and (comp["host_length"] > 0).all() and (comp["host_length"] <= 2 * cs).all()


def test_merged_mapping_is_qemu_map(images: dict[str, Path]) -> None:
    for path in images.values():
        with imgscope.open(path) as img:
            merged = img.mapping(merge=True)
        rows = [{"start": int(r.guest_offset), "length": int(r.length), "depth": int(r.depth),
                 "present": bool(r.present), "zero": bool(r.zero), "data": bool(r.data),
                 **({} if pd.isna(r.host_offset) else {"offset": int(r.host_offset)})} for r in merged.itertuples()]
        assert rows == map_json(path)


def test_snapshots_frame_is_the_table(images: dict[str, Path]) -> None:
    path = images["base"]
    entries = Qcow2Copy(path).snapshots()
    with imgscope.open(path) as img:
        snaps = img.snapshots
    assert len(snaps) == len(entries) == 2
    assert snaps["index"].tolist() == list(range(len(entries)))
    assert snaps["entry_offset"].tolist() == [off for off, _ in entries]
    assert snaps["id"].tolist() == [e.id_str for _, e in entries]
    assert snaps["name"].tolist() == [e.name for _, e in entries] == ["s1", "s2"]
    assert snaps["l1_table_offset"].tolist() == [e.fixed.l1_table_offset for _, e in entries]
    assert snaps["extra_data_size"].tolist() == [e.fixed.extra_data_size for _, e in entries]
    lengths = [40 + e.fixed.extra_data_size + e.fixed.id_str_size + e.fixed.name_size for _, e in entries]
    assert snaps["entry_length"].tolist() == [n + -n % 8 for n in lengths]
    qemu = info_json(path)["snapshots"]
    assert snaps["id"].tolist() == [s["id"] for s in qemu]
    assert snaps["date_sec"].tolist() == [s["date-sec"] for s in qemu]
    assert snaps["vm_state_size"].tolist() == [s["vm-state-size"] for s in qemu]
    assert snaps["disk_size"].tolist() == [info_json(path)["virtual-size"]] * 2


@pytest.mark.parametrize("name", ["base", "extl2"])
def test_references_equal_refcounts_on_clean_image(images: dict[str, Path], name: str) -> None:
    path = images[name]
    rc, report, _ = check_json(path)
    assert rc == 0, report
    with imgscope.open(path) as img:
        cl = img.clusters()
        res = img.check()
    assert res.exit_code() == 0 and res.summary() == {}
    used = cl[cl["references"] > 0]
    assert (cl["refcount"].astype("uint64").to_numpy() == cl["references"].to_numpy()).all()
    assert set(cl["role"].astype(str)) - {"free"} <= set(used["role"].astype(str)) | {"mixed"}
    assert cl["host_offset"].tolist() == [i * img.cluster_size for i in range(len(cl))]
    if name == "base":  # shared by snapshots (refcount 2, 3) and compressed streams sharing a host cluster
        assert (cl["refcount"] >= 2).any()
        comp = cl[cl["roles"].astype(str).str.contains("compressed")]
        assert len(comp) and (comp["references"] >= 1).all()
        assert {"active", "shared"} <= set(cl["owner"].dropna().astype(str))
