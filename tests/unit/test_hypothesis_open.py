"""Hypothesis mutates the metadata of small real qcow2 images; every reader must either
succeed or raise imgscope.ImgscopeError (a FormatError naming a structure and an offset).

Deterministic by default (CI); ``IMGSCOPE_FUZZ_EXAMPLES=N`` runs N random examples per image.
"""
from __future__ import annotations

import os
from pathlib import Path

import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgscope
from imgscope import native
from imgscope.formats.qcow2 import layout as L
from imgscope.limits import override

from .damage import KiB, Qcow2Copy, build_base, exercise

U64 = (1 << 64) - 1
_N = os.environ.get("IMGSCOPE_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_N or 0) or 70, deadline=None, derandomize=_N is None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: header field -> width in bits, from the construct declaration (If(...) fields by their "then" part)
FIELD_BITS = {sc.name: 8 * getattr(sc.subcon, "thensubcon", sc.subcon).sizeof() for sc in L.Header.subcons
              if sc.name not in ("magic", "padding")}
HEADER_FIELDS = sorted(FIELD_BITS)
#: tighter than the defaults so an example that claims a huge (but allowed) map stays fast
BACKENDS = ["native", "python"] if native.available else ["python"]  # hypothesis picks one per example
FUZZ_LIMITS = {"max_guest_clusters": 1 << 18, "max_metadata_bytes": 32 << 20}


@pytest.fixture(scope="module", params=["v3-512", "extl2-16k", "v2-4k"])
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    """The bytes of a small qemu-made image and the byte ranges of its metadata structures."""
    from conftest import require_qemu
    require_qemu()
    d = tmp_path_factory.mktemp("fuzz")
    if request.param == "v3-512":
        path = build_base(d, cluster_size=512, size=256 * KiB)
    elif request.param == "extl2-16k":
        path = build_base(d, cluster_size=16 * KiB, size=2048 * KiB, opts="extended_l2=on")
    else:
        path = build_base(d, cluster_size=4 * KiB, size=1024 * KiB, opts="compat=0.10", bitmap=False)
    img = Qcow2Copy(path)
    return path.read_bytes(), img.regions()


def _values(size: int, cs: int) -> st.SearchStrategy[int]:
    """u64 values an attacker would pick: flags over in-file or past-EOF offsets, limits, noise."""
    offsets = st.one_of(st.integers(0, size // cs + 2).map(lambda c: c * cs), st.integers(0, 2 * size),
                        st.sampled_from([1 << 40, 1 << 55, (1 << 56) - cs]))
    flags = st.sampled_from([0, 1 << 63, 1 << 62, 3 << 62, 1, (1 << 63) | 1, 0x2, 1 << 56])
    return st.one_of(st.builds(lambda f, o: f | o, flags, offsets),
                     st.sampled_from([0, 1, 7, 8, 9, 16, 21, 22, 64, 65536, 70000, 2**31 - 1, 2**32 - 1, 2**63,
                                      U64]),
                     st.integers(0, U64))


@st.composite
def mutations(draw: st.DrawFn, size: int, cs: int, regions: dict) -> list[tuple]:
    """1-4 edits: (kind, region start, region end, position, value)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(sorted(regions)))
        start, end = draw(st.sampled_from(regions[kind]))
        op = draw(st.sampled_from(["field", "u64", "u32", "xor"] if kind == "header" else ["u64", "u32", "xor"]))
        if op == "field":
            out.append((op, draw(st.sampled_from(HEADER_FIELDS)), draw(_values(size, cs))))
            continue
        width = {"u64": 8, "u32": 4, "xor": 1}[op]
        last = max(start, end - width)
        pos = start + draw(st.integers(0, (last - start) // width)) * width
        value = draw(_values(size, cs)) if op != "xor" else draw(st.integers(1, 255))
        out.append((op, pos, value))
    return out


def _apply(img: Qcow2Copy, edits: list[tuple]) -> None:
    for op, where, value in edits:
        if op == "field":
            try:
                hdr = img.header()
            except cs.ConstructError:  # an earlier edit broke the magic
                continue
            if hdr.get(where) is None:
                continue
            hdr[where] = value & ((1 << FIELD_BITS[where]) - 1)
            img.write(0, L.Header.build(hdr))
        elif op == "xor":
            img.write(where, bytes([img.read(where, 1)[0] ^ value]) if where < img.size else bytes([value]))
        else:
            width = 8 if op == "u64" else 4
            img.write(where, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))


def test_mutated_images_fail_cleanly(pristine: tuple[bytes, dict], tmp_path: Path) -> None:
    data, regions = pristine
    cs = 1 << int.from_bytes(data[20:24], "big")
    target = tmp_path / "mutant.qcow2"

    @FUZZ
    @given(mutations(len(data), cs, regions), st.sampled_from(BACKENDS))
    def run(edits: list[tuple], backend: str) -> None:
        target.write_bytes(data)  # a fresh copy of the pristine image for every example
        _apply(Qcow2Copy(target), edits)
        try:
            with override(**FUZZ_LIMITS), native.use(backend):
                exercise(target, "qcow2")
        except imgscope.FormatError as exc:
            assert isinstance(exc.structure, str) and exc.structure
            assert exc.offset is None or (isinstance(exc.offset, int) and exc.offset >= 0), exc
        except imgscope.ImgscopeError:
            pass

    run()
