"""The name guard: every public name of flax.nnx (top level and every submodule) exists
in nnxlib, or is listed in ``nnxlib/_compat_status.py`` with its reason.

Run ``python -m tests.test_flax_names`` (from the repository root) to regenerate
``docs/compatibility.md`` after changing the lists or adding names (the last test here
fails until you do).
"""

import pathlib
import types

import pytest
from flax import nnx as flax_nnx

import nnxlib
from nnxlib import _compat_check as check
from nnxlib import _compat_status as status

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"
ENTRIES = check.entries(flax_nnx)
KEYS = {e.key for e in ENTRIES}
TABLES = {
    "DELIBERATE_OMISSIONS": status.DELIBERATE_OMISSIONS,
    "PENDING_FROM_OTHER_BRANCHES": status.PENDING_FROM_OTHER_BRANCHES,
    "BETTER": status.BETTER,
    "DIFFERENT": status.DIFFERENT,
}


def test_every_flax_name_is_provided_or_listed():
    missing = list(check.missing_names(flax_nnx, nnxlib, status))
    assert not missing, (
        f"{len(missing)} flax.nnx names are missing from nnxlib: {missing[:40]}. Add them, "
        "or list them in nnxlib/_compat_status.py with the reason.")


@pytest.mark.parametrize("table", sorted(TABLES))
def test_status_entries_name_real_flax_names(table):
    unknown = []
    for key in TABLES[table]:
        if key.endswith(".*"):
            if key[:-2] not in KEYS:
                unknown.append(key)
        elif key not in KEYS:
            unknown.append(key)
    assert not unknown, f"{table} lists names flax.nnx does not have: {unknown}"


@pytest.mark.parametrize("table", ["DELIBERATE_OMISSIONS", "PENDING_FROM_OTHER_BRANCHES"])
def test_listed_as_absent_means_absent(table):
    # Stale: nnxlib has the name at every path flax users reach it by. (nnx.graph.Static
    # is nnxlib's own class; flax's graphlib.Static stays omitted from nnx.graphlib.)
    paths: dict = {}
    for e in ENTRIES:
        if check.status_lookup(TABLES[table], e.key) is not None:
            paths.setdefault(e.key, []).append(check.resolve(nnxlib, e.access) is not None)
    present = sorted(key for key, found in paths.items() if all(found))
    assert not present, (
        f"{table} lists names nnxlib now provides: {present}. Remove them from "
        "nnxlib/_compat_status.py (and regenerate docs/compatibility.md).")


@pytest.mark.parametrize("table", ["BETTER", "DIFFERENT"])
def test_notes_are_for_provided_names(table):
    absent = [e.access for e in ENTRIES if e.key in TABLES[table]
              and check.resolve(nnxlib, e.access) is None]
    assert not absent, f"{table} describes names nnxlib lacks: {absent}"


def test_every_reason_is_written():
    for table in TABLES.values():
        for key, reason in table.items():
            assert isinstance(reason, str) and len(reason) > 10, key


def test_submodule_aliases_are_nnxlib_modules():
    for name in ("rnglib", "variablelib", "statelib", "graphlib", "filterlib", "helpers",
                 "object", "pytreelib", "traversals", "visualization", "reprlib",
                 "optimizer", "tracers", "deprecations", "extract", "proxy_caller",
                 "compat"):
        module = getattr(nnxlib, name)
        assert isinstance(module, types.ModuleType), name
        assert module.__name__.startswith("nnxlib."), name
    assert nnxlib.rnglib.RngStream is nnxlib.RngStream
    assert nnxlib.statelib.restore_int_paths is nnxlib.restore_int_paths
    assert nnxlib.object is nnxlib.pytreelib


def test_the_guard_catches_a_missing_name():
    root = types.ModuleType("flaxlike")
    sub = types.ModuleType("flaxlike.rnglib")
    root.rnglib = sub

    def sample():
        pass

    sample.__module__ = "flaxlike.rnglib"
    sub.sample, sub.RngStream = sample, nnxlib.RngStream  # RngStream: defined elsewhere
    assert list(check.missing_names(root, nnxlib, status)) == ["rnglib.sample"]


def test_compatibility_page_is_up_to_date():
    expected = check.render_page(flax_nnx, nnxlib, status)
    assert PAGE.read_text() == expected, (
        "docs/compatibility.md is out of date: run `python -m tests.test_flax_names`.")


if __name__ == "__main__":
    PAGE.write_text(check.render_page(flax_nnx, nnxlib, status))
    print(f"wrote {PAGE}")
