"""atheris harness: structurally mutated real images through the whole imgscope API.

    .venv/bin/python fuzz/fuzz_images.py [--format qcow2] [--seeds DIR] [-- libFuzzer options]
    e.g. .venv/bin/python fuzz/fuzz_images.py --format qcow2 -- -max_total_time=60 -rss_limit_mb=2048

The fuzzer's input is a recipe, not an image: it picks a seed image (built by
fuzz/seeds.py with qemu-img), a few structural operations (fuzz/mutators.py:
set a header field, table entry, extension length or snapshot field to a
hostile value, copy one structure's offset into another, flip a bit, truncate
at a structure boundary, append) and optionally raw bytes to overlay.  The
mutated image goes through imgscope.open() + every frame + check() +
info_dict() + map_entries() (fuzz/exercise.py); any exception other than an
ImgscopeError is a crash.  When one is found, the mutated image is saved next
to libFuzzer's crash file as ``<crash>.img`` so it can be minimised with
fuzz/minimize.py and added to tests/hostile/regressions/.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import operator  # noqa: E402

import atheris  # noqa: E402

#: dis.cmp_op order: the operation an instrumented comparison passes as ``op``
_CMP = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)
_trace_cmp = atheris._trace_cmp  # atheris.Fuzz() installs its libFuzzer-linked one: see _own_comparisons


def _trace_plain_cmp(a: object, b: object, op: int, counter: int, const: bool) -> object:
    """atheris 3.0 keeps a reference to every result of an instrumented comparison of objects other than
    ints, strings and bytes: each ``array == 0`` in imgscope leaked its array, and a vdi run grew to its
    3 GiB limit after ~13,000 inputs.  Those comparisons (numpy arrays and scalars) are made here instead,
    without libFuzzer's compare feedback, which only ints, strings and bytes give."""
    if type(a) in (int, str, bytes) and type(b) in (int, str, bytes):
        return _trace_cmp(a, b, op, counter, const)
    return _CMP[op](a, b)


def _own_comparisons() -> None:
    """Route instrumented comparisons through _trace_plain_cmp (they look ``atheris._trace_cmp`` up at
    each comparison; atheris.Fuzz() sets it again when it starts, so this runs per input)."""
    global _trace_cmp
    if atheris._trace_cmp is not _trace_plain_cmp:
        _trace_cmp = atheris._trace_cmp
        atheris._trace_cmp = _trace_plain_cmp

with atheris.instrument_imports():
    import imgscope  # noqa: F401
    import imgscope.formats.qcow2.check  # noqa: F401
    import imgscope.frames  # noqa: F401
    from fuzz import exercise, mutators, seeds

STATE: dict = {}


def recipe(data: bytes) -> tuple[int, bytes]:
    """(seed index, mutated image bytes) for one fuzzer input."""
    fdp = atheris.FuzzedDataProvider(data)
    items = STATE["seeds"]
    k = fdp.ConsumeIntInRange(0, len(items) - 1)
    raw, lay = items[k]
    ops = [mutators.Op(mutators.KINDS[fdp.ConsumeIntInRange(0, len(mutators.KINDS) - 1)],
                       fdp.ConsumeIntInRange(0, (1 << 32) - 1), fdp.ConsumeIntInRange(0, (1 << 32) - 1))
           for _ in range(fdp.ConsumeIntInRange(0, 4))]
    img = bytearray(mutators.apply(raw, lay, ops))
    if fdp.ConsumeBool() and img:
        at = fdp.ConsumeIntInRange(0, len(img) - 1)
        patch = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        img[at:at + len(patch)] = patch
    return k, bytes(img)


def test_one_input(data: bytes) -> None:
    _own_comparisons()
    k, img = recipe(data)
    path = STATE["paths"][k]
    mutators.write_sparse(path, img)
    try:
        exercise.exercise(STATE["opened"][k])  # probed, as a user's `imgscope info FILE` does
        if STATE["formats"][k] == "vpc":  # a fixed VHD probes as raw: read it as the VHD it was, too
            exercise.exercise(path, "vpc")
    except BaseException:
        Path(STATE["crash_dir"], f"crash-image-{os.getpid()}{Path(path).suffix}").write_bytes(img)
        if STATE["opened"][k] != path:  # a mutated extent: keep the rest of its image beside it
            shutil.copytree(Path(path).parent, Path(STATE["crash_dir"], f"crash-image-{os.getpid()}.d"),
                            dirs_exist_ok=True)
        raise


def setup(formats: list[str], seed_dir: str) -> None:
    made = seeds.make_seeds(seed_dir, formats)
    work = tempfile.mkdtemp(prefix="imgscope-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    STATE["seeds"], STATE["paths"], STATE["formats"], STATE["opened"] = [], [], [], []
    for fmt in formats:
        for p in made.get(fmt, []):
            STATE["seeds"].append((p.read_bytes(), mutators.describe(p, fmt)))
            STATE["paths"].append(os.path.join(work, f"m{len(STATE['paths'])}{p.suffix}"))
            STATE["opened"].append(STATE["paths"][-1])
            STATE["formats"].append(fmt)
    for fmt, items in seeds.make_foreign_seeds(seed_dir, formats).items():
        for d, top, mutated in items:  # the image's other files once, in a directory of their own
            own = shutil.copytree(d, os.path.join(work, f"f{len(STATE['paths'])}"))
            STATE["seeds"].append((Path(d, mutated).read_bytes(),
                                   mutators.describe(Path(d, mutated), fmt, opened=Path(d, top))))
            STATE["paths"].append(os.path.join(own, mutated))
            STATE["opened"].append(os.path.join(own, top))
            STATE["formats"].append(fmt)
    if not STATE["seeds"]:
        sys.exit(f"no seed images for {formats}")
    STATE["crash_dir"] = os.getcwd()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", action="append", help="format(s) to fuzz (default: every registered one)")
    ap.add_argument("--seeds", default=str(ROOT / "build" / "fuzz" / "seeds"), help="seed image cache")
    args, rest = ap.parse_known_args()
    rest = [a for a in rest if a != "--"]
    if not any(a.startswith("-max_len") for a in rest):
        rest.append("-max_len=256")  # a recipe needs a few dozen bytes; longer inputs only overlay more
    setup(args.format or seeds.registered_formats(), args.seeds)
    atheris.Setup([sys.argv[0], *rest], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
