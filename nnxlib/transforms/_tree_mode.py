"""The rules tree mode and ``graph_updates=False`` add to a transform.

Every transform lifts its function with :mod:`nnxlib.transforms._lift`; these checks
run at its two ends, so no transform can skip them:

* before the call, in tree mode (``graph=False``): the arguments hold every variable
  and module once (:func:`check_inputs`; one cached flag per structure);
* at trace time, with ``graph_updates=False`` (always in tree mode): the function left
  its inputs' structure as it was and returned no object twice or from its inputs
  (:func:`check_outputs`). flax.nnx silently drops such a structural change; nnxlib
  raises, because a dropped ``sow`` or attribute is a silent wrong result.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> @nnx.jit(graph=False)
    ... def step(model):
    ...     model.kernel[...] += 1.0     # values flow back in tree mode too
    ...     return model.kernel[...].sum()
    >>> float(step(model)) == float(model.kernel[...].sum())
    True
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from nnxlib.errors import GraphStructureError, SharedReferenceError, format_path
from nnxlib.graph import is_node_or_variable
from nnxlib.graph._tree_check import check_tree, compat_name, index_paths, variable_kind, walk_defs
from nnxlib.graph.mode import Mode

__all__ = ["check_inputs", "check_outputs", "root_labels", "Trace", "raise_returned_input",
           "check_packed"]


def root_labels(tree: Any, positions: tuple, names: tuple | str | None,
                head: str = "args") -> list[str]:
    """Python-style names of the graph objects at leaf ``positions`` of ``tree``.

    ``names`` labels ``tree``'s top-level items (``("args", "kwargs")``) or, a string,
    names ``tree`` itself; without it, ``tree`` is called ``head``.
    """
    if isinstance(names, str):  # the tree is one argument: ``names`` is its name
        head, names = names, None
    keypaths = [p for p, _ in jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=is_node_or_variable)[0]]
    labels = []
    for i in positions:
        keypath = keypaths[i]
        if names is not None and keypath:
            labels.append(names[keypath[0].idx] + jax.tree_util.keystr(keypath[1:]))
        else:
            labels.append(head + jax.tree_util.keystr(keypath))
    return labels


def check_inputs(graphdef: Any, tree: Any, positions: tuple, names: tuple | None,
                 where: str) -> None:
    """Tree mode: no object reachable twice across the arguments (else raise)."""
    if graphdef.shared_reference() is not None:
        check_tree(graphdef, where, root_labels(tree, positions, names))


class Trace(NamedTuple):
    """What :func:`check_outputs` needs from one traced call."""

    in_root: Any  # the inputs' joint definition before the call (None: no graph inputs)
    new_in_root: Any  # ... and after it
    out_defs: tuple  # definitions of the returned objects, walked after the inputs
    in_labels: Callable[[], list]  # names of the input roots (computed on error only)
    out_labels: Callable[[], list]  # names of the returned objects


def check_outputs(mode: Mode, where: str, trace: Trace) -> None:
    """At trace time, with graph updates off: inputs kept their structure, and the
    outputs are new objects, each returned once (an input object returned, or one
    returned twice, shows as a reference in ``out_defs``)."""
    option, name = _option(mode), compat_name(where)
    if trace.in_root is not None and trace.new_in_root != trace.in_root:
        path = _first_difference(trace.in_root, trace.new_in_root, ())
        raise GraphStructureError(
            f"{where}({option}): the function changed the structure of its input at "
            f"`{_label(path, trace.in_labels())}` (an attribute or container item added, "
            "removed or replaced, a static value or variable metadata changed). In this "
            "mode only variable values flow back, so the change would be lost; nothing "
            "was changed.\nHint: pass graph=True, graph_updates=True (or use "
            f"nnx.compat.{name}) to apply structural changes, or return the new values "
            "instead.")
    for i, d in enumerate(trace.out_defs):
        ref = _first_ref(d)
        if ref is None:
            continue
        path, index = ref
        out_labels = trace.out_labels()
        here = format_path(path, out_labels[i])
        in_paths = index_paths(trace.in_root) if trace.in_root is not None else {}
        if index in in_paths:
            other, what = _label(in_paths[index], trace.in_labels()), "an input object"
        elif mode.graph:
            continue  # graph mode keeps a new object returned twice as one object
        else:
            other, what = "?", "returned twice"
            for j, dj in enumerate(trace.out_defs):
                found = index_paths(dj).get(index)
                if found is not None:
                    other = format_path(found, out_labels[j])
                    break
        kind = variable_kind(trace.in_root if index in in_paths else d, index)
        if index not in in_paths:
            kind = next((variable_kind(dj, index) for dj in trace.out_defs
                         if index in index_paths(dj)), kind)
        raise SharedReferenceError(
            f"{where}({option}): the output `{here}` is {what} (`{other}`): Duplicate "
            f"{kind} found at paths `{other}` and `{here}`; {where} with {option} does "
            "not support Variable aliasing.\n"
            "Expected: in this mode outputs are new objects, each returned once. "
            "Actual: an alias.\nHint: return new values (or an nnx.clone), or pass "
            f"graph=True, graph_updates=True (nnx.compat.{name}) to return the objects "
            "themselves.")


def raise_returned_input(where: str, mode: Mode, type_name: str) -> None:
    """An input object came back as an output, which this mode does not allow."""
    option, name = _option(mode), compat_name(where)
    raise SharedReferenceError(
        f"{where}({option}): the function returned one of its input objects (a "
        f"{type_name}); {where} with {option} does not support Variable aliasing.\n"
        "Expected: in this mode outputs are new objects. Actual: an "
        "alias.\nHint: return new values (or an nnx.clone), or pass graph=True, "
        f"graph_updates=True (nnx.compat.{name}) to return the objects themselves.")


def check_packed(mode: Mode, where: str, before: list, after: list, labels: list) -> None:
    """For transforms built on split/merge contexts (``pmap``): with graph updates off,
    each input's graph definition must come back unchanged."""
    option = _option(mode)
    for old, new, label in zip(before, after, labels):
        if old != new:
            path = _first_difference(old.root, new.root, ())
            raise GraphStructureError(
                f"{where}({option}): the function changed the structure of its input at "
                f"`{format_path(path, label)}`. In this mode only variable values flow "
                "back; nothing was changed.\nHint: pass graph=True, graph_updates=True "
                f"(nnx.compat.{compat_name(where)}) to apply structural changes.")


def _option(mode: Mode) -> str:
    """The argument that put this call in the mode whose rule was broken."""
    return "graph=False" if not mode.graph else "graph_updates=False"


def _label(path: tuple, labels: list) -> str:
    # Joint definitions start with the root's number: show the argument's name.
    if path and isinstance(path[0], int) and path[0] < len(labels):
        return format_path(path[1:], labels[path[0]])
    return format_path(path)


def _first_ref(d: Any) -> tuple | None:
    """``(path, index)`` of the first reference in a definition (None if there is none)."""
    return next(((path, ref.index) for ref, path in walk_defs(d) if ref.kind == "ref"),
                None)


def _first_difference(old: Any, new: Any, path: tuple) -> tuple:
    """The path of the first place two definitions differ (``path`` if it is here).

    Identity indices are ignored: an object added early shifts every later index."""
    if old.kind != new.kind or old.kind not in ("node", "pytree") or old.type != new.type:
        return path
    old_attrs, new_attrs = dict(old.attributes), dict(new.attributes)
    keys = list(old_attrs) + [k for k in new_attrs if k not in old_attrs]
    for key in keys:  # an attribute added or removed here explains it best
        if key not in old_attrs or key not in new_attrs:
            return path + (key,)
    for key in keys:
        if not _alike(old_attrs[key], new_attrs[key]):
            return _first_difference(old_attrs[key], new_attrs[key], path + (key,))
    return path


def _alike(a: Any, b: Any) -> bool:
    """Definitions equal up to identity indices."""
    if a.kind != b.kind:
        return False
    if a.kind in ("node", "pytree"):
        return (a.type == b.type and len(a.attributes) == len(b.attributes)
                and all(ka == kb and _alike(va, vb) for (ka, va), (kb, vb)
                        in zip(a.attributes, b.attributes)))
    if a.kind == "variable":
        return a.type == b.type and a.metadata == b.metadata
    if a.kind == "ref":
        return True
    return a == b
