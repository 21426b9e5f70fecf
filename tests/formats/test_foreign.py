"""imgscope's CLI against qemu-img 7.2 on images made the way other tools make them (tests/formats/foreign/,
one module per format): ``info``, ``map``, ``check`` (JSON and exit code) and the guest content against
``qemu-img convert -O raw``.  An image qemu refuses must make ``imgscope check`` exit 1."""
from __future__ import annotations

import shutil

import pytest

import imgscope
from imgscope import model

from conftest import require_qemu

from . import foreign as F
from . import random_history as RH


@pytest.mark.parametrize("case", list(F.CASES))
def test_foreign_image_equals_qemu(case, tmp_path):
    require_qemu()
    fmt, build = F.CASES[case]
    target = build(tmp_path)
    mismatches = RH.compare(tmp_path, fmt, target, inprocess=True, repair=False, content=case not in F.NO_CONTENT,
                            text=case not in F.OWN_ERRORS)
    assert not mismatches, "\n".join(map(str, mismatches))


def test_partially_present_block_is_unreadable_in_qemu(tmp_path):
    """The reason the case above skips the content comparison still holds."""
    require_qemu()
    target = F.vhdx.vhdx_bat_states(tmp_path, partial=True)
    q = RH.run_qemu("qemu-img", "convert", "-f", "vhdx", "-O", "raw", target, "out.raw", cwd=tmp_path)
    assert q.returncode == 1 and "Input/output error" in q.stderr


def test_vhdx_dirty_log_reads_as_replayed(tmp_path):
    """qemu refuses a read-only open of a VHDX whose log must be replayed and replays it on a read-write
    open; imgscope replays it in memory: its info/map/content of the untouched file equal qemu's on a copy
    that qemu replayed."""
    require_qemu()
    target = F.vhdx.vhdx_log_dirty(tmp_path)
    q = RH.run_qemu("qemu-img", "info", "--output=json", "-U", target, cwd=tmp_path)
    assert q.returncode == 1 and "log that needs to be replayed" in q.stderr
    rc, _, _ = RH.run_imgscope("check", "--output", "json", target, cwd=tmp_path, inprocess=True)
    assert rc == 1
    replayed = tmp_path / "replayed"
    replayed.mkdir()
    shutil.copy(tmp_path / target, replayed / target)
    RH.run_qemu("qemu-io", "-f", "vhdx", "-c", "read 0 512", target, cwd=replayed)  # a read-write open replays
    for cmd in (["info", "--output", "json"], ["map", "--output", "json"]):
        _, mine, _ = RH.run_imgscope(*cmd, target, cwd=tmp_path, inprocess=True)
        _, theirs, _ = RH.run_imgscope(*cmd, target, cwd=replayed, inprocess=True)
        a, b = RH._json(mine), RH._json(theirs)
        if isinstance(a, dict):
            for k in ("actual-size", "dirty-flag"):
                a.pop(k, None), b.pop(k, None)
            # info says that qemu-img info refuses the unreplayed image (and why)
            assert "log that needs to be replayed" in a.pop("imgscope-qemu-refuses")
        assert a == b
    assert not RH.compare(replayed, "vhdx", target, inprocess=True, repair=False)
    RH.run_qemu("qemu-img", "convert", "-f", "vhdx", "-O", "raw", target, "want.raw", cwd=replayed)
    want = (replayed / "want.raw").read_bytes()
    with imgscope.open(tmp_path / target) as img:
        gm = img.guest_map()
        cs = gm.cluster_size
        assert img.meta.log.entries and set(gm.kind.tolist()) <= {model.DATA, model.ZERO, model.UNALLOCATED}
        for i, kind in enumerate(gm.kind.tolist()):
            n = min(cs, img.virtual_size - i * cs)
            got = img.reader.read(int(gm.host[i]), n, "payload") if kind == model.DATA else bytes(n)
            assert got == want[i * cs:i * cs + n], f"block {i}"


@pytest.mark.parametrize("descriptor_offset", [0, 10**9, 7])
def test_sparse_vmdk_descriptor_is_read_at_sector_1(tmp_path, descriptor_offset):
    """qemu reads a monolithicSparse file's descriptor at sector 1 whatever its header's descriptor_offset
    says (none, past EOF, inside the grain tables): imgscope refused these images, qemu-img opens them."""
    require_qemu()
    from imgscope.formats.vmdk import layout as ML
    target = "m.vmdk"
    RH.run_qemu("qemu-img", "create", "-q", "-f", "vmdk", target, "16M", cwd=tmp_path)
    RH.run_qemu("qemu-io", "-f", "vmdk", "-c", "write -P 5 64k 64k", target, cwd=tmp_path)
    path = tmp_path / target
    raw = bytearray(path.read_bytes())
    h = ML.SparseHeader.parse(bytes(raw[:ML.HEADER_SIZE]))
    h.descriptor_offset = descriptor_offset
    raw[:ML.HEADER_SIZE] = ML.SparseHeader.build(h)
    path.write_bytes(bytes(raw))
    assert not RH.compare(tmp_path, "vmdk", target, inprocess=True, repair=False)


@pytest.mark.parametrize("subformat,cut", [("fixed", 1), ("fixed", 400), ("dynamic", 300)])
def test_vhd_cut_inside_its_last_sector(tmp_path, subformat, cut):
    """A VHD file cut short inside its footer's zero padding (a copy that lost its last bytes): qemu's
    file length is whole sectors and reads past EOF as zeros, so it still finds a fixed disk's footer;
    imgscope looked 512 bytes before the end of the file and refused the image."""
    require_qemu()
    target = "p.vhd"
    RH.run_qemu("qemu-img", "create", "-q", "-f", "vpc", "-o", f"subformat={subformat}", target, "4M", cwd=tmp_path)
    RH.run_qemu("qemu-io", "-f", "vpc", "-c", "write -P 9 1M 64k", target, cwd=tmp_path)
    path = tmp_path / target
    raw = path.read_bytes()
    assert raw[-cut:] == bytes(cut)  # only the footer's reserved zeros are lost
    path.write_bytes(raw[:-cut])
    assert not RH.compare(tmp_path, "vpc", target, inprocess=True, repair=False)
