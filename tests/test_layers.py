"""The layer guard: the import graph of nnxlib follows DESIGN.md's layer table.

Read statically (every ``import`` statement, also inside functions), so a cycle cannot
hide behind a late import:

* a module of a layer imports only its own layer and the layers below it;
* the modules of nnxlib and bridge form no import cycle (Python's implicit import of a
  package before its submodule is not an edge: only written imports are);
* nnxlib never imports flax; bridge reaches nnxlib through its public modules only;
* no source file is over 800 lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# DESIGN.md's table, bottom first: layer -> modules (a package stands for its modules).
LAYERS = [
    ("errors", ["nnxlib.errors", "nnxlib._flags"]),
    ("display", ["nnxlib.display"]),
    ("variables", ["nnxlib.variables"]),
    ("filters", ["nnxlib.filters"]),
    ("state", ["nnxlib.state"]),
    ("spmd", ["nnxlib.spmd"]),
    ("graph", ["nnxlib.graph"]),
    ("containers", ["nnxlib.containers"]),
    ("module", ["nnxlib.module"]),
    ("rngs", ["nnxlib.rngs"]),
    ("transforms", ["nnxlib.transforms"]),
    ("nn", ["nnxlib.nn"]),
    ("training", ["nnxlib.training"]),
]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


SOURCES = {module_name(p): p for folder in ("nnxlib", "bridge")
           for p in sorted((ROOT / folder).rglob("*.py"))}


def imports_of(module: str) -> set[str]:
    """The modules ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module)."""
    path = SOURCES[module]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in SOURCES else base)
    return found


GRAPH = {m: {i for i in imports_of(m) if i in SOURCES and i != m} for m in SOURCES}


def test_imports_point_down_the_layer_table():
    upward = []
    for module, targets in GRAPH.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {target} "
                              f"({LAYERS[theirs][0]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_nnxlib_never_imports_flax_and_bridge_uses_the_public_api():
    bad = []
    for module in SOURCES:
        raw = set()
        for node in ast.walk(ast.parse(SOURCES[module].read_text())):
            if isinstance(node, ast.Import):
                raw.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                raw.add(node.module)
        for name in raw:
            if module.startswith("nnxlib") and name.split(".")[0] == "flax":
                bad.append(f"{module} imports {name}")
            if module.startswith("bridge") and name.startswith("nnxlib.") and \
                    layer_of(name) is not None:
                bad.append(f"{module} reaches into {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_file_over_800_lines(module):
    assert SOURCES[module].read_text().count("\n") <= 800
