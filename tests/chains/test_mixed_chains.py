"""Backing chains of three files mixing formats, against qemu-img 7.2.

Which formats qemu-img 7.2 can chain: qcow2, QED and qcow v1 take a backing file of any
format; a VMDK's parent must itself be a VMDK ("backing_file must be a vmdk image"), so
"qcow2 on vmdk on raw" is impossible and the VMDK chain here is qcow2 on vmdk on vmdk;
raw, VDI, VPC and VHDX have no backing file and appear only at the bottom.  Every layer
gets data (and zero writes) at scattered offsets, some layers differ in size, and one
base lives in a subdirectory.

For each chain: ``map_entries()`` equals ``qemu-img map``, every key of
``qemu-img info --backing-chain`` (except actual-size) has the same value, and the guest
bytes read through imgscope's map equal ``qemu-img convert -O raw``.  A chain with a
missing file still opens and says what is missing.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import imgscope
from formats.test_fvd import Spec, build as build_fvd
from oracle import qemu
from oracle.test_qemu_compat import _same_keys

from conftest import require_qemu

#: chain name -> layers bottom first: (file, format, create options, size, qemu-io commands)
CHAINS: dict[str, list[tuple[str, str, list[str], str, list[str]]]] = {
    "raw-qcow2-qed": [
        ("a.raw", "raw", [], "16M", ["write -P 0x11 0 1M", "write -P 0x12 9M 64k", "write -P 0x13 15M 1M"]),
        ("a.qcow2", "qcow2", [], "16M", ["write -P 0x21 512k 128k", "write -P 0x22 5M 4k", "write -z 9M 32k",
                                          "write -P 0x23 15M 64k"]),
        ("a.qed", "qed", [], "16M", ["write -P 0x31 600k 8k", "write -P 0x32 12M 64k", "write -z 15M 64k",
                                      "write -P 0x33 3M 1M"]),
    ],
    "vmdk-vmdk-qcow2": [
        ("b.vmdk", "vmdk", [], "16M", ["write -P 0x11 0 1M", "write -P 0x12 9M 64k"]),
        ("b2.vmdk", "vmdk", [], "16M", ["write -P 0x21 512k 128k", "write -P 0x22 5M 4k"]),
        ("b.qcow2", "qcow2", [], "16M", ["write -P 0x31 600k 8k", "write -P 0x32 12M 64k", "write -z 15M 64k"]),
    ],
    "vdi-qcow-qcow2": [
        ("c.vdi", "vdi", [], "16M", ["write -P 0x41 1M 1M", "write -P 0x42 7M 8k"]),
        ("c.qcow", "qcow", [], "16M", ["write -P 0x51 1536k 4k", "write -P 0x52 10M 64k"]),
        ("c.qcow2", "qcow2", [], "16M", ["write -P 0x61 0 64k", "write -P 0x62 7M 4k", "write -z 10M 4k"]),
    ],
    "vpc-qed-qcow": [
        ("d.vhd", "vpc", [], "16M", ["write -P 0x71 0 2M", "write -P 0x72 8M 512k"]),
        ("d.qed", "qed", [], "16M", ["write -P 0x81 1M 64k", "write -P 0x82 8200k 4k"]),
        ("d.qcow", "qcow", [], "16M", ["write -P 0x91 1040k 4k", "write -P 0x92 14M 4k"]),
    ],
    "growing-raw-qcow2-qed": [  # 8 MiB <- 12 MiB <- 16 MiB: past a parent's end reads zeros
        ("e.raw", "raw", [], "8M", ["write -P 0xa1 7M 1M"]),
        ("e.qcow2", "qcow2", [], "12M", ["write -P 0xa2 8M 64k", "write -P 0xa3 7680k 64k"]),
        ("e.qed", "qed", [], "16M", ["write -P 0xa4 11M 4k", "write -P 0xa5 13M 64k"]),
    ],
    "vhdx-qcow2-qed": [
        ("f.vhdx", "vhdx", [], "16M", ["write -P 0xb1 0 1M", "write -P 0xb2 12M 4k"]),
        ("f.qcow2", "qcow2", ["-o", "cluster_size=4096"], "16M", ["write -P 0xb3 4k 4k", "write -P 0xb4 12M 512"]),
        ("f.qed", "qed", [], "16M", ["write -P 0xb5 64k 64k"]),
    ],
    "shrinking-raw-xl2qcow2-qed": [  # a 32 MiB base in a subdirectory under 16 MiB overlays
        ("sub/g.raw", "raw", [], "32M", ["write -P 0x11 0 4M", "write -P 0x12 15M 2M"]),
        ("g.qcow2", "qcow2", ["-o", "extended_l2=on"], "16M",
         ["write -P 0x21 4k 2k", "write -P 0x22 70k 6k", "write -c -P 0x23 1M 64k", "write -z 2M 8k",
          "write -P 0x24 16382k 2k"]),
        ("g.qed", "qed", [], "16M", ["write -P 0x31 8k 4k", "write -P 0x32 3M 4k"]),
    ],
    "shrunk-middle-raw-qcow2-qed": [  # 16 MiB <- 8 MiB <- 16 MiB: past the middle's end reads zeros
        ("j.raw", "raw", [], "16M", ["write -P 0x01 0 16M"]),
        ("j.qcow2", "qcow2", [], "8M", ["write -P 0x02 1M 64k"]),
        ("j.qed", "qed", [], "16M", ["write -P 0x03 12M 64k"]),
    ],
    "flatvmdk-qcow2-qed": [
        ("h.vmdk", "vmdk", ["-o", "subformat=monolithicFlat"], "16M", ["write -P 0x41 64k 64k",
                                                                      "write -P 0x42 6M 1M"]),
        ("h.qcow2", "qcow2", [], "16M", ["write -P 0x51 6M 4k"]),
        ("h.qed", "qed", [], "16M", ["write -P 0x61 100k 4k"]),
    ],
    "staticvdi-qed-qcow": [
        ("i.vdi", "vdi", ["-o", "static=on"], "16M", ["write -P 0x41 64k 64k"]),
        ("i.qed", "qed", [], "16M", ["write -P 0x51 6M 4k"]),
        ("i.qcow", "qcow", [], "16M", ["write -P 0x61 7M 4k"]),
    ],
}
#: guest bytes stored compressed (data without a host offset: not readable through the map)
COMPRESSED = {"shrinking-raw-xl2qcow2-qed": 64 << 10}


def _build(d: Path, layers: list[tuple[str, str, list[str], str, list[str]]]) -> Path:
    below = None
    for name, fmt, opts, size, writes in layers:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        backing = ["-b", below[0], "-F", below[1]] if below else []  # relative to the overlay's directory
        qemu.qemu_img("create", "-q", "-f", fmt, *opts, *backing, name, size, cwd=d)
        qemu.qemu_io(fmt, d / name, *writes)
        below = (name, fmt)
    return d / layers[-1][0]


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict[str, Path]:
    """Every chain, built once per module."""
    require_qemu()
    d = tmp_path_factory.mktemp("mixed_chains")
    return {name: _build(d, layers) for name, layers in CHAINS.items()}


def _top_format(name: str) -> str:
    return CHAINS[name][-1][1]


@pytest.mark.parametrize("name", CHAINS)
def test_map_matches_qemu(chains, name) -> None:
    path = chains[name]
    with imgscope.open(path) as img:
        assert [i.format for i in img.chain()] == [layer[1] for layer in reversed(CHAINS[name])]
        assert img.backing_error is None
        assert img.map_entries() == qemu.map_json(path, _top_format(name))


@pytest.mark.parametrize("name", CHAINS)
def test_info_backing_chain_matches_qemu(chains, name) -> None:
    path = chains[name]
    theirs = qemu.info_json(path, _top_format(name), backing_chain=True)
    with imgscope.open(path) as img:
        ours = [i.info_dict() for i in img.chain()]
    assert len(ours) == len(theirs) == 3
    _same_keys(theirs, ours)


def _read_through_map(img: imgscope.image.Image) -> tuple[bytes, list[tuple[int, int]]]:
    """Guest bytes: each extent with data and an offset read from the file at its depth, zeros
    elsewhere.  Data without an offset (VHDX, which qemu 7.2 maps without offsets, and
    compressed clusters) is read through that layer's guest map where it stores plain data;
    also returns the (start, length) ranges left unreadable (compressed data, left as zeros)."""
    chain = img.chain()
    out = bytearray(img.virtual_size)
    unreadable: list[tuple[int, int]] = []
    for e in img.map_entries():
        if not e["data"] or e["zero"]:
            continue
        layer = chain[e["depth"]]
        pieces = ([(e["start"], e["offset"], e["length"])] if "offset" in e else
                  _plain_pieces(layer, e["start"], e["length"]))
        for start, host, length in pieces:
            if host is None:
                unreadable.append((start, length))
                continue
            with open(_file_holding(layer, start), "rb") as f:
                f.seek(host)
                buf = f.read(length)
            out[start:start + len(buf)] = buf
    return bytes(out), unreadable


def _file_holding(layer: imgscope.image.Image, guest: int) -> str:
    """The file a host offset of ``layer`` refers to: a VMDK's extent file (descriptor + flat
    extent), otherwise the image file itself."""
    for ext in getattr(layer, "extents_list", []):
        if ext.start <= guest < ext.start + ext.length:
            return ext.src.path
    return layer.path


def _plain_pieces(layer: imgscope.image.Image, start: int, length: int) -> list[tuple[int, int | None, int]]:
    """(guest start, host offset or None when not plain data, length) per cluster of a guest range."""
    gm = layer.guest_map()
    cs = gm.cluster_size
    out = []
    pos, end = start, start + length
    while pos < end:
        i, within = divmod(pos, cs)
        n = min(cs - within, end - pos)
        kind = imgscope.model.KINDS[int(gm.kind[i])]
        if kind == "data":
            out.append((pos, int(gm.host[i]) + within, n))
        elif kind == "compressed":
            out.append((pos, None, n))
        pos += n
    return out


@pytest.mark.parametrize("name", CHAINS)
def test_guest_content_matches_convert(chains, name, tmp_path) -> None:
    path = chains[name]
    raw = qemu.convert_raw(path, tmp_path / "out.raw", _top_format(name)).read_bytes()
    with imgscope.open(path) as img:
        ours, unreadable = _read_through_map(img)
    assert sum(n for _, n in unreadable) == COMPRESSED.get(name, 0)
    theirs = bytearray(raw)
    for start, length in unreadable:  # compressed ranges: compare the rest
        theirs[start:start + length] = bytes(length)
    assert len(ours) == len(raw) and ours == bytes(theirs)


def test_chain_frame(chains) -> None:
    path = chains["growing-raw-qcow2-qed"]
    with imgscope.open(path) as img:
        df = img.chain_frame()
    assert df["depth"].tolist() == [0, 1, 2] and str(df["depth"].dtype) == "uint8"
    assert df["file"].tolist() == [str(path.parent / n) for n in ("e.qed", "e.qcow2", "e.raw")]
    assert df["format"].astype(str).tolist() == ["qed", "qcow2", "raw"]
    assert df["virtual_size"].tolist() == [16 << 20, 12 << 20, 8 << 20] and str(df["virtual_size"].dtype) == "uint64"
    assert df["backing_file"].tolist()[:2] == ["e.qcow2", "e.raw"] and df["backing_file"].isna().tolist()[2]
    assert df["relation"].astype(str).tolist() == ["top", "backing", "backing"]
    assert list(df["relation"].cat.categories) == ["top", "backing", "missing"]
    assert df["error"].isna().all()


def _copy_chain(src: Path, dst: Path, name: str) -> Path:
    for layer in CHAINS[name]:
        (dst / layer[0]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src.parent / layer[0], dst / layer[0])
    return dst / CHAINS[name][-1][0]


def _cli_info_chain(path: Path) -> tuple[int, list, str]:
    run = [sys.executable, "-m", "imgscope.cli", "info", "--chain"]
    js = subprocess.run([*run, "--output", "json", str(path)], capture_output=True, text=True)
    text = subprocess.run([*run, str(path)], capture_output=True, text=True)
    assert text.returncode == js.returncode
    return js.returncode, json.loads(js.stdout), text.stdout


@pytest.mark.parametrize("missing", [1, 0])
def test_missing_backing_file(chains, tmp_path, missing) -> None:
    """Delete the middle (1) or the bottom (0) file of a qcow2-on-vmdk-on-vmdk chain."""
    name = "vmdk-vmdk-qcow2"
    top = _copy_chain(chains[name], tmp_path, name)
    gone = CHAINS[name][missing][0]
    (tmp_path / gone).unlink()
    with imgscope.open(top) as img:
        chain = img.chain()
        assert [i.format for i in chain] == (["qcow2"] if missing == 1 else ["qcow2", "vmdk"])
        last = chain[-1]
        assert gone in last.backing_error and "No such file" in last.backing_error
        # the images that opened still show their own metadata, like qemu-img info without the chain
        for i in chain:
            _same_keys(qemu.info_json(i.path, i.format), i.info_dict())
        assert img.map_entries()  # resolves what it has: no crash
        df = img.chain_frame()
    assert df["relation"].astype(str).tolist()[-1] == "missing"
    assert df["file"].tolist()[-1] == str(tmp_path / gone) and df["format"].astype(str).tolist()[-1] == "vmdk"
    assert gone in df["error"].tolist()[-1] and df["virtual_size"].tolist()[-1] == 0
    rc, infos, text = _cli_info_chain(top)
    assert rc == 0 and len(infos) == len(chain)
    assert gone in infos[-1]["imgscope-backing-error"]
    assert "backing error" in text and gone in text


def test_fvd_on_qcow2_on_raw(chains, tmp_path) -> None:
    """An FVD image (built by imgscope's layout declarations; qemu cannot read it) over the
    qemu-built qcow2-on-raw pair: depth and content resolve through all three formats."""
    below = chains["raw-qcow2-qed"].parent
    for n in ("a.raw", "a.qcow2"):
        shutil.copy(below / n, tmp_path / n)
    block = 64 << 10
    writes = [(0, b"\xf1" * block), (9 << 20, b"\xf2" * block), (12 << 20, b"\xf3" * (1 << 20))]
    build_fvd(tmp_path / "top.fvd", Spec(size=16 << 20, base="a.qcow2", base_fmt="qcow2", base_size=16 << 20,
                                          block=block, writes=writes))
    expected = bytearray(qemu.convert_raw(tmp_path / "a.qcow2", tmp_path / "base.raw", "qcow2").read_bytes())
    for off, buf in writes:
        expected[off:off + len(buf)] = buf
    with imgscope.open(tmp_path / "top.fvd") as img:
        assert [i.format for i in img.chain()] == ["fvd", "qcow2", "raw"]
        m = img.map_entries()
        ours, unreadable = _read_through_map(img)
        assert img.chain_frame()["relation"].astype(str).tolist() == ["top", "backing", "backing"]
    assert not unreadable and ours == bytes(expected)
    depth = {e["start"]: e["depth"] for e in m}
    assert depth[0] == 0 and depth[block] == 2 and depth[9 << 20] == 0 and depth[12 << 20] == 0
    # the qcow2's own write at 512k..640k shows at depth 1
    assert any(e["depth"] == 1 and e["start"] <= 512 << 10 < e["start"] + e["length"] for e in m)


@pytest.mark.parametrize("base_fmt", ["raw", "qcow2"])
def test_empty_backing_file(tmp_path, base_fmt) -> None:
    """An overlay on a backing file of size 0 (an empty raw file, a 0-byte-disk qcow2): the layer below has
    no extents at all, which map resolved with an IndexError.  Every command equals qemu-img's."""
    require_qemu()
    base = tmp_path / f"base.{base_fmt}"
    if base_fmt == "raw":
        base.write_bytes(b"")
    else:
        qemu.qemu_img("create", "-q", "-f", "qcow2", str(base), "0")
    top = tmp_path / "top.qcow2"
    qemu.qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", base_fmt, str(top), "4M")
    qemu.qemu_io("qcow2", top, "write -P 7 512k 64k")
    for cmd in (["map", "--output=json"], ["map"], ["info", "--backing-chain", "--output=json"],
                ["info", "--backing-chain"], ["check", "--output=json"]):
        ours = subprocess.run([sys.executable, "-m", "imgscope.cli", *cmd, str(top)], capture_output=True,
                              text=True, cwd=tmp_path)
        theirs = qemu.text(cmd[0], top, None, *cmd[1:])
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), cmd
