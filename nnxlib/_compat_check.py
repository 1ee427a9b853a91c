"""Which public names flax.nnx has, and where nnxlib must have them (the name guard).

This module never imports flax: the functions take flax's module objects as arguments.
``tests/test_flax_names.py`` uses them to fail on any flax.nnx name that nnxlib lacks
and that :mod:`nnxlib._compat_status` does not list, and ``python
tests/test_flax_names.py`` writes ``docs/compatibility.md`` from the same data.

A module's *public names* are its attributes without a leading underscore, less the
import artifacts every Python module has: other modules, type variables, typing
aliases, and objects from the standard library. In a module that defines things
(``flax.nnx.graphlib``) only the names it defines count; names it merely imports are
counted where they are defined. A *hub* (``flax.nnx`` itself, ``nn``, ``compat``,
``nn.initializers``…) exists to re-export, so every name in it counts.

Example:
    >>> import types
    >>> hub = types.ModuleType("pkg")
    >>> class Thing:
    ...     pass
    >>> hub.Thing, hub._hidden, hub.os = Thing, 1, types
    >>> sorted(public_names(hub, "", hub=True))
    ['Thing']
"""

from __future__ import annotations
import __future__

import functools
import importlib
import sys
import types
import typing
from typing import Any, Iterator, NamedTuple

from nnxlib._compat_suite import SUITE_FAILURES

# Modules whose every public name counts (they exist to re-export).
HUBS = frozenset({"", "nn", "transforms", "training", "compat", "nn.initializers",
                  "nn.activations"})
# Modules that are a re-export of another one: checked as that one.
SHIMS = {"graph": "graphlib"}
_STDLIB = frozenset({
    "typing", "typing_extensions", "builtins", "collections", "collections.abc",
    "_collections_abc", "functools", "abc", "dataclasses", "types", "inspect",
    "itertools", "io", "threading", "contextlib", "warnings", "os", "sys", "enum", "copy",
    "weakref", "operator",
})


def public_names(module: types.ModuleType, relative: str, *, hub: bool) -> dict[str, Any]:
    """The public names of ``module`` (see the module docstring), name to object.

    ``relative`` is the module's name below the package root (``""`` for the root).

    Example:
        >>> import json
        >>> "dumps" in public_names(json, "json", hub=False)
        True
    """
    names = {}
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if isinstance(value, types.ModuleType):
            # A submodule of this package counts (``nn.linear``); an import does not.
            root = module.__name__ if relative else module.__name__ + "."
            if value.__name__.startswith(root.rstrip(".") + "."):
                names[name] = value
            continue
        if _is_artifact(value):
            continue
        origin = getattr(value, "__module__", None)
        if not hub and origin is not None and origin != module.__name__:
            continue
        names[name] = value
    return names


def _is_artifact(value: Any) -> bool:
    if isinstance(value, (typing.TypeVar, typing.ParamSpec, __future__._Feature,
                          types.GenericAlias)):
        return True
    if type(value).__module__ == "typing":  # Union[...], Annotated[...], Any
        return True
    if isinstance(value, functools.partial):  # a re-exported function with new defaults
        return False
    return getattr(value, "__module__", None) in _STDLIB


class Entry(NamedTuple):
    """One public name of flax.nnx.

    ``access`` is how user code reaches it (``"object.Data"``), ``key`` the name under
    its defining module (``"pytreelib.Data"``, the key of the status lists), and
    ``value`` flax's object.
    """

    access: str
    key: str
    value: Any


def entries(flax_root: types.ModuleType) -> list[Entry]:
    """Every public name of ``flax_root`` and its submodules, reached by every path.

    Example:
        >>> import types
        >>> root = types.ModuleType("pkg")
        >>> sub = types.ModuleType("pkg.sub")
        >>> root.sub, sub.f = sub, (lambda: 0)
        >>> sub.f.__module__ = "pkg.sub"
        >>> [e.access for e in entries(root)]
        ['sub', 'sub.f']
    """
    prefix = flax_root.__name__ + "."
    out: list[Entry] = []
    queue = [("", flax_root)]
    while queue:
        access, module = queue.pop(0)
        relative = module.__name__[len(prefix):] if access else ""
        relative = SHIMS.get(relative, relative)
        if relative in SHIMS.values() and access:
            module = importlib.import_module(prefix + relative)
        names = public_names(module, relative, hub=relative in HUBS)
        for name, value in sorted(names.items()):
            key = f"{relative}.{name}" if relative else name
            child = f"{access}.{name}" if access else name
            out.append(Entry(child, key, value))
            if isinstance(value, types.ModuleType):
                queue.append((child, value))
    return out


def resolve(root: types.ModuleType, access: str) -> Any:
    """Follow ``access`` (``"nn.linear.Linear"``) from ``root``; ``None`` if absent.

    Example:
        >>> import nnxlib
        >>> resolve(nnxlib, "nn.Linear") is nnxlib.Linear
        True
    """
    value: Any = root
    for part in access.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            return None
    return value


def status_lookup(table: dict[str, str], key: str) -> str | None:
    """The note for ``key`` in a status table, where ``"spmd.*"`` covers a module.

    Example:
        >>> status_lookup({"spmd.*": "other branch"}, "spmd.get_partition_spec")
        'other branch'
    """
    if key in table:
        return table[key]
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        note = table.get(".".join(parts[:end]) + ".*")
        if note is not None:
            return note
    return None


class Status(NamedTuple):
    """Where one flax.nnx name stands in nnxlib: ``kind`` and the reason or note."""

    kind: str  # "same", "better", "different", "omitted" or "pending"
    note: str


def status_of(entry: Entry, ours: types.ModuleType, status: types.ModuleType) -> Status:
    """The status of one flax.nnx name given nnxlib and the status lists.

    Example:
        >>> import nnxlib
        >>> from nnxlib import _compat_status
        >>> status_of(Entry("Linear", "Linear", None), nnxlib, _compat_status).kind
        'same'
    """
    for kind, table in (("pending", status.PENDING_FROM_OTHER_BRANCHES),
                        ("omitted", status.DELIBERATE_OMISSIONS)):
        note = status_lookup(table, entry.key)
        if note is not None:
            return Status(kind, note)
    for kind, table in (("better", status.BETTER), ("different", status.DIFFERENT)):
        note = status_lookup(table, entry.key)
        if note is not None:
            return Status(kind, note)
    return Status("same", "")


_KIND_TEXT = {"same": "same", "better": "better", "different": "different",
              "omitted": "**omitted**", "pending": "pending"}


def render_page(flax_root: types.ModuleType, ours: types.ModuleType,
                status: types.ModuleType) -> str:
    """``docs/compatibility.md``: every flax.nnx name with its status in nnxlib.

    Example:
        >>> import nnxlib, types
        >>> from nnxlib import _compat_status
        >>> root = types.ModuleType("flaxlike")
        >>> root.Linear = type("Linear", (), {})
        >>> "| `Linear` | same |" in render_page(root, nnxlib, _compat_status)
        True
    """
    version = getattr(sys.modules.get(flax_root.__name__.split(".")[0]), "__version__", "?")
    all_entries = entries(flax_root)
    rows: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for entry in all_entries:
        if entry.key in seen:  # the same name reached by a second path (object/pytreelib)
            continue
        seen.add(entry.key)
        st = status_of(entry, ours, status)
        counts[st.kind] = counts.get(st.kind, 0) + 1
        module = entry.key.rpartition(".")[0]
        name = entry.key.rpartition(".")[2]
        note = st.note.replace("|", "\\|").replace("\n", " ")
        rows.setdefault(module, []).append(f"| `{name}` | {_KIND_TEXT[st.kind]} | {note} |")
    aliases: dict[str, list[str]] = {}
    for entry in all_entries:
        if isinstance(entry.value, types.ModuleType):
            target = entry.value.__name__[len(flax_root.__name__) + 1:]
            target = SHIMS.get(target, target)
            if entry.access != target:
                aliases.setdefault(target, []).append(entry.access)
    lines = [
        "# Compatibility with flax.nnx",
        "",
        "`import nnxlib as nnx` runs code written for `flax.nnx`. This page lists every",
        f"public name of flax.nnx {version} (top level and every submodule) and where nnxlib",
        "stands on it:",
        "",
        "- **same**: the name exists and behaves as in flax.nnx;",
        "- **better**: it exists and nnxlib does more (the note says what);",
        "- **different**: it exists and deliberately behaves differently (the note says",
        "  how and why);",
        "- **omitted**: deliberately not provided (the note says why);",
        "- **pending**: being added on another branch.",
        "",
        "This page is generated from `nnxlib/_compat_status.py` by",
        "`python -m tests.test_flax_names`; that test file fails when a flax.nnx",
        "name is missing from nnxlib without being listed there, or when this page is out",
        "of date.",
        "",
        "Totals: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in _KIND_TEXT) + ".",
        "",
    ]
    for module in sorted(rows, key=lambda m: (m != "", m)):
        title = f"`nnx.{module}`" if module else "`nnx` (top level)"
        lines += [f"## {title}", ""]
        if aliases.get(module):
            also = ", ".join(f"`nnx.{a}`" for a in sorted(aliases[module]))
            lines += [f"Also reached as {also}.", ""]
        lines += ["| name | status | note |", "|---|---|---|", *rows[module], ""]
    return "\n".join(lines + suite_section(SUITE_FAILURES))


def suite_section(failures: dict[str, dict[str, str]]) -> list[str]:
    """The page's last section: flax.nnx's own tests that fail on nnxlib, and why.

    Example:
        >>> suite_section({"tests/nnx/a_test.py": {"T::test_x": "reads a flax internal"}})[-2]
        '| `tests/nnx/a_test.py` | `T::test_x` | reads a flax internal |'
    """
    rows = [f"| `{test_file}` | `{test_id}` | {reason} |"
            for test_file, table in sorted(failures.items())
            for test_id, reason in sorted(table.items())]
    return [
        "## flax.nnx's own test suite",
        "",
        "`../shared/tools/flax_suite.py nnxlib` runs flax.nnx's `tests/nnx` with the",
        "imports rewritten to nnxlib. These tests fail, each for the reason given",
        "(`nnxlib/_compat_suite.py`; `python tools/flax_suite_report.py OUT_DIR` checks a",
        f"run against this list). Listed: {len(rows)}.",
        "",
        "| file | test | reason |",
        "|---|---|---|",
        *rows,
        "",
    ]


def missing_names(flax_root: types.ModuleType, ours: types.ModuleType,
                  status: types.ModuleType) -> Iterator[str]:
    """Access paths of flax.nnx names nnxlib lacks that no status list excuses.

    Example:
        >>> import nnxlib, types
        >>> from nnxlib import _compat_status
        >>> root = types.ModuleType("flaxlike")
        >>> root.NoSuchThing = type("NoSuchThing", (), {})
        >>> list(missing_names(root, nnxlib, _compat_status))
        ['NoSuchThing']
    """
    for entry in entries(flax_root):
        if resolve(ours, entry.access) is not None:
            continue
        if status_of(entry, ours, status).kind in ("omitted", "pending"):
            continue
        yield entry.access

