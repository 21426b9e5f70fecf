"""Structural mutations of real images, for every registered format (always runs; no fuzz tooling needed).

Hypothesis draws a few operations from fuzz/mutators.py (hostile values in
header fields, table entries, extension lengths and snapshot entries; copies of
one structure's offset into another; bit flips; truncation at structure
boundaries) and fuzz/exercise.py runs the whole API on the result: every call
must succeed or raise an ImgscopeError — never IndexError, struct.error,
MemoryError, OverflowError...
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz import exercise, mutators
from fuzz.seeds import RECIPES, registered_formats

FORMATS = [f for f in registered_formats() if f in RECIPES]

op_strategy = st.builds(mutators.Op, st.sampled_from(mutators.KINDS), st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def layouts(seed_images):
    return {fmt: [(p, p.read_bytes(), mutators.describe(p, fmt)) for p in paths] for fmt, paths in seed_images.items()}


def test_every_format_has_fields(layouts):
    """The mutation engine finds structure fields in every seed (or it would only flip random bits)."""
    for fmt in FORMATS:
        for path, _, lay in layouts[fmt]:
            if fmt != "raw":
                assert lay.fields, f"{path.name}: no fields located"
            assert lay.boundaries


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_images_fail_cleanly(fmt, layouts, tmp_path, data):
    path, raw, lay = layouts[fmt][data.draw(st.integers(0, len(layouts[fmt]) - 1), label="seed index")]
    note(f"seed {path.name}")
    ops = data.draw(st.lists(op_strategy, min_size=1, max_size=4), label="ops")
    target = tmp_path / f"m{path.suffix}"
    mutators.write_sparse(target, mutators.apply(raw, lay, ops))
    for forced in (None, fmt):  # probed (a fixed VHD probes as raw), then read as the seed's format
        result = exercise.exercise(target, forced)
        assert _failed_cleanly(result)


def _failed_cleanly(result: dict[str, str]) -> bool:
    """The image opened, or opening it raised one of imgscope's own errors (exercise() has already
    turned every later call's ImgscopeError into text and let anything else propagate)."""
    import imgscope.chain
    import imgscope.errors
    own = {c.__name__ for m in (imgscope.errors, imgscope.chain) for c in vars(m).values()
           if isinstance(c, type) and issubclass(c, imgscope.errors.ImgscopeError)}
    return result["open"] == "ok" or result["open"].split(":")[0] in own


def test_seeds_pass_cleanly(layouts):
    """Unmutated seeds open and every call succeeds (so the mutations above are what fails)."""
    for fmt in FORMATS:
        for path, _, _ in layouts[fmt]:
            res = exercise.exercise(path, fmt)
            errors = {k: v for k, v in res.items() if v not in ("ok", "unsupported")}
            assert not errors, f"{path.name}: {errors}"


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """fuzz/seeds.py's multi-file images of other products (COWD, seSparse): (directory, opened, mutated)."""
    from fuzz.seeds import FOREIGN, make_foreign_seeds
    return make_foreign_seeds(tmp_path_factory.mktemp("foreign"), sorted(FOREIGN))


def test_foreign_seeds_pass_cleanly(foreign):
    """The COWD and seSparse seeds open through their descriptors and every call succeeds."""
    assert sum(len(v) for v in foreign.values()) >= 2
    for fmt, items in foreign.items():
        for d, top, mutated in items:
            lay = mutators.describe(d / mutated, fmt, opened=d / top)
            assert lay.fields and lay.boundaries, f"{mutated}: no fields located"
            res = exercise.exercise(d / top, fmt)
            errors = {k: v for k, v in res.items() if v not in ("ok", "unsupported")}
            assert not errors, f"{top}: {errors}"


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_foreign_extents_fail_cleanly(foreign, tmp_path_factory, data):
    """A mutated COWD or seSparse extent, opened through its unchanged descriptor (and parent)."""
    import shutil
    items = [(fmt, *it) for fmt, v in sorted(foreign.items()) for it in v]
    fmt, d, top, mutated = items[data.draw(st.integers(0, len(items) - 1), label="seed index")]
    note(f"seed {mutated}")
    lay = mutators.describe(d / mutated, fmt, opened=d / top)
    ops = data.draw(st.lists(op_strategy, min_size=1, max_size=4), label="ops")
    work = shutil.copytree(d, tmp_path_factory.mktemp("m") / "img")
    mutators.write_sparse(work / mutated, mutators.apply((d / mutated).read_bytes(), lay, ops))
    assert _failed_cleanly(exercise.exercise(work / top, fmt))
