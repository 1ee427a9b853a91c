"""Private helpers of the mapping transforms: axis prefixes and axis metadata.

This file turns ``in_axes``/``out_axes`` prefixes (see :mod:`nnxlib.transforms.axes`)
into one axis per array, once per traced signature, and updates sharding metadata when
a mapped axis is added to or removed from a variable.

Example:
    >>> from nnxlib.transforms import _axes
    >>> _axes.is_prefix_leaf(None), _axes.is_prefix_leaf(0)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax

from nnxlib.errors import format_path
from nnxlib.graph import GraphDef, is_node_or_variable, node_impl
from nnxlib.rngs import RngState
from nnxlib.spmd import add_variable_axis as add_axis
from nnxlib.spmd import remove_variable_axis as remove_axis
from nnxlib.transforms.axes import (  # noqa: F401  (re-exported for the transforms)
    PARTITION_NAME,
    STATE_PREFIXES,
    Carry,
    StateAxes,
    TreeState,
    _axis_repr,
    _check_axis,
)
from nnxlib.variables import Variable, _new_variable, thaw_metadata


# ------------------------------------------------------------------ prefix handling
def is_prefix_leaf(x: Any) -> bool:
    """True for the entries an axis prefix tree ends in."""
    return x is None or x is Carry or isinstance(x, STATE_PREFIXES)


def prefix_leaves(prefix: Any, tree: Any, is_leaf: Callable, where: str) -> list:
    """For each leaf of ``tree`` (graph objects are leaves), the ``prefix`` entry over it."""
    entries, treedef = jax.tree_util.tree_flatten(prefix, is_leaf=is_prefix_leaf)
    try:
        subtrees = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{where}={prefix!r} does not match the structure of the values it describes: "
            f"{e} Hint: give one entry per positional argument (or output), or a single "
            "axis for all of them."
        ) from None
    out: list = []
    for entry, sub in zip(entries, subtrees):
        out += [entry] * len(jax.tree_util.tree_leaves(sub, is_leaf=is_leaf))
    return out


def out_specs(out_axes: Any, out: Any, where: str, array_axes: str) -> tuple[list, list]:
    """Split ``out_axes`` into the entry per graph root of ``out`` and per other leaf.

    ``out`` may be ``None`` (nothing returned); ``array_axes`` names what an array output
    accepts, for the error message.
    """
    if out is None:
        return [], []
    specs = prefix_leaves(out_axes, out, is_node_or_variable, f"{where} out_axes")
    leaves = jax.tree_util.tree_leaves(out, is_leaf=is_node_or_variable)
    roots, others = [], []
    for spec, leaf in zip(specs, leaves):
        if is_node_or_variable(leaf):
            roots.append(spec)
        elif isinstance(spec, STATE_PREFIXES):
            raise ValueError(
                f"{where} out_axes: {spec!r} is given for an output that is not a module or "
                f"variable ({type(leaf).__name__}). Hint: use {array_axes} for arrays."
            )
        else:
            others.append(spec)
    return roots, others


def leaf_names(tree: Any, is_leaf: Callable, top: Any = ("args", "kwargs")) -> list:
    """A readable location (``args[0]``, ``kwargs['m']``) for every leaf of ``tree``.

    ``top`` names the entries of a top-level tuple (a tuple of names) or the whole tree
    (a string).
    """
    names = []
    for keypath, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]:
        if isinstance(top, str):
            names.append(top + jax.tree_util.keystr(keypath))
        else:
            names.append(top[keypath[0].idx] + jax.tree_util.keystr(keypath[1:]))
    return names


def resolve(spec: Any, path: tuple, leaf: Any, where: str, allow_carry: bool) -> Any:
    """The axis ``spec`` (an int, None, Carry, StateAxes or TreeState) gives the leaf at
    ``path``."""
    axis = spec.axis_for(path, leaf, where) if isinstance(spec, STATE_PREFIXES) else spec
    _check_axis(axis, where, allow_carry)
    return axis


def graph_leaf_axes(graphdef: GraphDef, template: list, root_specs: list,
                    root_names: list, where: str, allow_carry: bool) -> list:
    """One axis per leaf of a joint plan; shared state reached with two axes is an error."""
    paths = graphdef.paths
    axes = [
        resolve(root_specs[p[0]], p[1:], leaf,
                f"{where} for {root_names[p[0]]}{_suffix(p[1:])}", allow_carry)
        for p, leaf in zip(paths, template)
    ]
    _check_shared(graphdef, template, axes, root_specs, root_names, where, allow_carry)
    return axes


def _suffix(path: tuple) -> str:
    if not path:
        return ""
    text = format_path(path)
    return text if text.startswith("[") else "." + text


def shared_reaches(graphdef: GraphDef, more: tuple = ()) -> Iterator[tuple[int, int, tuple]]:
    """``(leaf position, root, path)`` for each further path that reaches a shared
    variable (its first path is ``graphdef.paths[leaf position]``): the places where a
    prefix must give shared state the same entry it gave the first time.

    ``more`` are definitions of further roots (a function's outputs) whose references
    point into ``graphdef``; they are numbered after its roots.
    """
    leaf_of: dict = {}
    node_of: dict = {}
    counter = [0]

    def first_pass(d: Any) -> None:
        kind = d.kind
        if kind in ("variable", "array"):
            if kind == "variable":
                leaf_of[d.index] = counter[0]
            counter[0] += 1
        elif kind in ("node", "pytree"):
            if kind == "node":
                node_of[d.index] = d
            for _, v in d.attributes:
                first_pass(v)

    first_pass(graphdef.root)

    def walk(d: Any, root: int, path: tuple, seen: set, again: bool) -> Iterator:
        kind = d.kind
        if kind == "variable" and again:
            yield leaf_of[d.index], root, path
        elif kind == "ref":
            if d.index in leaf_of:
                yield leaf_of[d.index], root, path
            elif d.index in node_of and (d.index, root) not in seen:
                seen.add((d.index, root))
                for k, v in node_of[d.index].attributes:
                    yield from walk(v, root, path + (k,), seen, True)
        elif kind in ("node", "pytree"):
            for k, v in d.attributes:
                yield from walk(v, root, path + (k,), seen, again)

    roots = [d for _, d in graphdef.root.attributes]
    for i, d in enumerate(roots + list(more)):
        yield from walk(d, i, (), set(), False)


def aliasing_error(where: str, kind: str, first: str, first_entry: str, here: str,
                   entry: str, what: str = "axis") -> ValueError:
    """The error for shared state given two different prefix entries (with flax's
    phrase, which users search for)."""
    return ValueError(
        f"{where}: the {kind} at {first} is shared with {here}, but gets {what} "
        f"{first_entry} there and {entry} here (Inconsistent aliasing detected. The "
        f"following nodes have different prefixes: {kind} at {first}: {first_entry}, "
        f"{here}: {entry}). Hint: give shared state the same {what} on every path that "
        "reaches it."
    )


def check_shared_entries(graphdef: GraphDef, template: list, entries: list,
                         entry_at: Callable, root_names: list, where: str,
                         what: str = "axis", show: Callable = repr,
                         more: tuple = (), error: Callable = aliasing_error) -> None:
    """Raise if a path reaching shared state gets another entry than its first path.

    ``entries[j]`` is what leaf ``j`` got on its first path; ``entry_at(root, path,
    leaf)`` resolves the entry on another path; ``more`` as in :func:`shared_reaches`;
    ``error`` builds the exception (same arguments as :func:`aliasing_error`).
    """
    for j, root, path in shared_reaches(graphdef, more):
        here = entry_at(root, path, template[j])
        if here != entries[j] or (here is Carry) != (entries[j] is Carry):
            first = graphdef.paths[j]
            raise error(where, type(template[j]).__name__,
                        f"{root_names[first[0]]}{_suffix(first[1:])}", show(entries[j]),
                        f"{root_names[root]}{_suffix(path)}", show(here), what)


def _check_shared(graphdef: GraphDef, template: list, axes: list, root_specs: list,
                  root_names: list, where: str, allow_carry: bool) -> None:
    def axis_at(root: int, path: tuple, leaf: Any) -> Any:
        label = f"{where} for {root_names[root]}{_suffix(path)}"
        return resolve(root_specs[root], path, leaf, label, allow_carry)

    check_shared_entries(graphdef, template, axes, axis_at, root_names, where,
                         show=_axis_repr)


def iter_def_leaves(d: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """``(path, definition)`` for each leaf a definition consumes, in leaf order."""
    kind = d.kind
    if kind in ("variable", "array"):
        yield path, d
    elif kind in ("node", "pytree"):
        for k, v in d.attributes:
            yield from iter_def_leaves(v, path + (k,))


def probe(d: Any, value: Any) -> Any:
    """A stand-in for a leaf from its definition, for filters to look at."""
    if d.kind == "variable":
        return _new_variable(d.type, value, thaw_metadata(d.metadata))
    return value


def iter_variables(roots: list) -> Iterator[tuple[int, tuple, Variable]]:
    """``(root index, path, variable)`` for each variable reachable from ``roots``, once."""
    seen: set = set()

    def visit(root: int, path: tuple, value: Any) -> Iterator:
        if isinstance(value, Variable):
            if id(value) not in seen:
                seen.add(id(value))
                yield root, path, value
            return
        impl = node_impl(type(value))
        if impl is None:
            return
        if not impl.pytree:
            if id(value) in seen:
                return
            seen.add(id(value))
        for k, child in impl.children(value):
            yield from visit(root, path + (k,), child)

    for i, root in enumerate(roots):
        yield from visit(i, (), root)


def explain_mapped_shapes(items: list, where: str, length: int | None = None) -> str | None:
    """Why mapped values cannot be mapped together.

    ``items`` are ``(name, value, axis, leaf)``, ``leaf`` the variable (or the value).

    Returns a message naming the offending values, or None if their shapes look fine.
    """
    sizes: dict = {}
    for name, value, axis, leaf in items:
        shape = tuple(getattr(value, "shape", ()))
        if not -len(shape) <= axis < len(shape):
            rng = isinstance(leaf, RngState) or "key<" in str(getattr(value, "dtype", ""))
            hint = ("Hint: split RNG streams first, e.g. decorate with "
                    "nnx.split_rngs(splits=N), or broadcast them with StateAxes({nnx.RngState: "
                    "None, ...: 0})." if rng else
                    "Hint: map it on an axis it has, or broadcast it (None, or a StateAxes "
                    "entry such as {filter: None}).")
            return (f"{where}: {name} has shape {shape}, which has no axis {axis} to map "
                    f"over. {hint}")
        sizes.setdefault(shape[axis], []).append(name)
    if length is not None:
        sizes.setdefault(length, []).append("length")
    if len(sizes) > 1:
        listing = "; ".join(f"size {size}: {', '.join(names[:4])}"
                            for size, names in sizes.items())
        return (f"{where}: the mapped axes have different sizes ({listing}). Hint: every "
                "mapped array (and mapped module state) needs the same size on its axis.")
    return None


# ------------------------------------------------------------------ axis metadata
def strip_mapped_axes(rebuilt: Any, layout: Any, metadata: Mapping) -> None:
    """Inside a trace, before the user function: remove the mapped axis name from the
    metadata of the rebuilt input variables whose axis is an int (the function sees
    per-example variables)."""
    _retag_inputs(rebuilt.objects, layout, metadata, remove_axis)


def restore_mapped_axes(rebuilt: Any, layout: Any, metadata: Mapping, out: Any,
                        out_roots: list, where: str) -> None:
    """Inside a trace, after the user function: put the mapped axis name back on the
    input variables, and add it to variables the function created (found through the
    input roots and the graph objects in ``out``, whose axis entries are ``out_roots``).
    """
    _retag_inputs(rebuilt.objects, layout, metadata, add_axis)
    known = {id(rebuilt.objects[i]) for i in layout.leaf_of_index}
    out_nodes = [x for x in jax.tree_util.tree_leaves(out, is_leaf=is_node_or_variable)
                 if is_node_or_variable(x)]
    specs = [*layout.root_specs, *out_roots]
    for i, path, var in iter_variables([*rebuilt.nodes, *out_nodes]):
        if id(var) in known:
            continue
        axis = resolve(specs[i], path, var, where, allow_carry=True)
        if isinstance(axis, int):
            add_axis(var, axis, metadata, quiet=True)


def _retag_inputs(objects: dict, layout: Any, metadata: Mapping, change: Callable) -> None:
    for index, j in layout.leaf_of_index.items():
        axis = layout.graph_axes[j]
        if isinstance(axis, int) and axis is not Carry:
            change(objects[index], axis, metadata, quiet=True)


def check_transform_metadata(transform_metadata: Mapping, where: str) -> bool:
    """Validate ``transform_metadata``; True when it asks for axis-name updates."""
    if not isinstance(transform_metadata, Mapping):
        raise TypeError(
            f"{where}: transform_metadata must be a mapping such as "
            f"{{nnx.PARTITION_NAME: 'layers'}}, got {type(transform_metadata).__name__}."
        )
    if transform_metadata and PARTITION_NAME not in transform_metadata:
        raise ValueError(
            f"{where}: transform_metadata={dict(transform_metadata)!r} has no "
            f"{PARTITION_NAME!r} entry. Hint: name the mapped axis, e.g. "
            "transform_metadata={nnx.PARTITION_NAME: 'layers'}."
        )
    return bool(transform_metadata)
