"""Fleet scan: local process pool, per-image results, qemu-img oracle and a real Dask LocalCluster."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import imgscope
from imgscope.scan import COLUMNS, scan

from conftest import require_qemu
from oracle import qemu

from .fleet import build

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    require_qemu()
    return build(tmp_path_factory.mktemp("fleet"), size=200)


@pytest.fixture(scope="module")
def local(fleet):
    return scan([str(p) for p in fleet], jobs=2)


def test_one_row_per_image_in_order(fleet, local):
    assert list(local.columns) == list(COLUMNS)
    assert len(local) == len(fleet) >= 200
    assert local["path"].tolist() == [str(p) for p in fleet]


def test_bad_images_give_error_rows_not_aborts(local):
    garbage = local[local["path"].str.endswith("garbage.qcow2")]
    assert len(garbage) == 1 and garbage["error"].str.contains("FormatError: qcow2 header").all()
    empty = local[local["path"].str.endswith("empty.qcow2")].iloc[0]
    assert empty["error"].startswith(f"UnsupportedFormat: {empty['path']}: 0-byte file matches no image format")
    others = local[local["error"].notna() & ~local["path"].str.endswith(("empty.qcow2", "garbage.qcow2"))]
    assert others.empty, others[["path", "error"]].to_string()


def test_rows_equal_per_image_check_and_info(fleet, local):
    for p, row in zip(fleet, local.itertuples(index=False)):
        if row.error is not pd.NA and row.error is not None:
            continue
        with imgscope.open(p) as img:
            info = img.info_dict()
            assert row.format == info["format"] and row.virtual_size == info["virtual-size"]
            try:
                res = img.check()
            except NotImplementedError:
                continue
        assert row.check_rc == res.exit_code()
        assert (row.corruptions, row.leaks) == (res.corruptions, res.leaks)


def test_counters_match_qemu_img_check(fleet, local):
    """A sample of each state against the oracle: leaks, dirty images, clean ones."""
    rows = local[local["format"] == "qcow2"].drop_duplicates(subset=["leaks", "dirty", "snapshot_count"])
    assert len(rows) >= 3
    for row in rows.itertuples(index=False):
        rc, js, _ = qemu.check_json(row.path, "qcow2")
        assert row.check_rc == rc
        assert row.leaks == js.get("leaks", 0) and row.corruptions == js.get("corruptions", 0)
    leaky = local[(local["leaks"] > 0).fillna(False)]
    assert len(leaky) >= 5 and (leaky["leaked_bytes"] == leaky["leaks"] * leaky["cluster_size"]).all()
    assert local["dirty"].fillna(False).sum() >= 10


def test_frames_on_request(fleet):
    some = [str(p) for p in fleet[:20]]
    images, extra = scan(some, jobs=2, frames=("snapshots", "findings"))
    assert set(extra) == {"snapshots", "findings"}
    assert set(extra["findings"]["path"]) <= set(some)
    n_snap = int(images["snapshot_count"].fillna(0).sum())
    assert len(extra["snapshots"]) == n_snap


def test_dask_local_cluster_gives_identical_frame(fleet, local):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        via_dask = scan([str(p) for p in fleet], scheduler=client)
    pd.testing.assert_frame_equal(via_dask, local)


def test_cli_scan_json(fleet):
    some = [str(p) for p in fleet[2:8]]
    out = subprocess.run([sys.executable, "-m", "imgscope.cli", "scan", *some, "--output", "json", "-j", "1"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert [r["path"] for r in rows] == some
