"""Helpers for transforms whose traced bodies hand back the *full* state of their inputs.

``jit`` and ``grad`` return only the variables a function replaced, which is known once
the function has been traced. ``cond``/``switch`` (every branch must return the same
structure), ``fori_loop``/``while_loop`` (the carry must keep its structure), ``shard_map``
(output specs are fixed before tracing) and ``custom_vjp`` (the primal and forward rules
must agree) cannot know that in advance, so their traced bodies return every leaf value
of their module arguments. Unchanged leaves pass straight through, which XLA removes.
"""

from __future__ import annotations

from typing import Any

import jax

from nnxlib.errors import format_path
from nnxlib.graph import Plan, is_graph_node
from nnxlib.graph.mode import GRAPH, Mode
from nnxlib.transforms import _lift
from nnxlib.variables import Variable, _refs, put_raw

__all__ = ["collect_full", "full_values", "write_values", "describe_change", "detach",
           "raw"]


def raw(value: Any) -> Any:
    """The array held by a variable (a ref-backed one's value), or ``value`` itself."""
    if not isinstance(value, Variable):
        return value
    value = value._raw_value
    return _refs.read(value) if _refs.holds_refs(value) else value


def collect_full(rebuilt: _lift.Rebuilt, key: tuple, out: Any, mode: Mode = GRAPH,
                 where: str = "", names: tuple | None = None) -> tuple:
    """Like :func:`_lift.collect`, but every input leaf value is sent out.

    Returns ``(info, values, others)`` where ``info.changed`` lists every leaf position,
    so :func:`_lift.apply_outputs` writes all of them back.
    """
    info, send, others = _lift.collect(rebuilt, key, out, mode, where, names)
    if not info.fast:
        return info, send, others
    values = list(rebuilt.in_values)
    changed = info.changed
    for i, value in zip(changed, send):
        values[i] = value
    values += send[len(changed):]
    return info._replace(changed=tuple(range(len(rebuilt.in_values)))), values, others


def full_values(rebuilt: _lift.Rebuilt, key: tuple, where: str) -> list:
    """Every leaf value of the rebuilt inputs after the call; their structure must be
    unchanged (a clear error otherwise). Expires the rebuilt objects."""
    info, send, _ = _lift.collect(rebuilt, key, None)
    if not info.fast:
        raise ValueError(
            f"{where}: the function changed the structure of its module arguments (added "
            "or removed attributes or variables, or changed static values or metadata). "
            f"{where} carries only array values in and out. Hint: create every attribute "
            "before calling the transform, and remove temporary ones (for example with "
            "nnx.pop) before returning."
        )
    values = list(rebuilt.in_values)
    for i, value in zip(info.changed, send):
        values[i] = value
    return values


def write_values(plan: Plan | None, positions: Any, values: Any) -> None:
    """Write ``values`` into the leaves at ``positions`` of the caller's objects."""
    if plan is None:
        return
    template = plan.template
    for i, value in zip(positions, values):
        target = template[i]
        if isinstance(target, Variable):
            put_raw(target, value)
        else:
            _lift._write_slot(plan, i, value)


def describe_change(old_key: tuple, new_key: tuple) -> str:
    """A short human description of how two :attr:`Extracted.key` s differ."""
    old_treedef, old_positions, old_def = old_key
    new_treedef, new_positions, new_def = new_key
    if old_treedef != new_treedef or old_positions != new_positions:
        return (f"the container structure changed from {old_treedef} to {new_treedef} "
                "(graph objects shown as leaves)")
    single = len(old_positions) == 1  # leaf paths start with the root's position
    old_paths = {p[single:] for p in old_def.paths} if old_def is not None else set()
    new_paths = {p[single:] for p in new_def.paths} if new_def is not None else set()
    added = sorted(format_path(p) for p in new_paths - old_paths)
    removed = sorted(format_path(p) for p in old_paths - new_paths)
    parts = []
    if added:
        parts.append(f"new state at {added[:5]}")
    if removed:
        parts.append(f"state removed at {removed[:5]}")
    if not parts:
        parts.append("static attributes, variable types or metadata, or shared "
                     "references changed")
    return "; ".join(parts)


def detach(out: Any, where: str) -> Any:
    """Copy ``out`` into a pytree of arrays (variables become new variable boxes).

    Graph nodes (modules) are not allowed: ``where`` names the transform in the error.
    Must run before the rebuilt input objects are expired.
    """
    leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_graph_node)
    for leaf in leaves:
        if is_graph_node(leaf):
            raise TypeError(
                f"{where}: the function returned a {type(leaf).__name__}, but here only "
                "arrays (and pytrees of arrays or variables) can be returned. Hint: "
                "return nnx.state(module) instead, or mutate the module argument in place "
                "(changes are written back)."
            )
    return jax.tree_util.tree_unflatten(treedef, leaves)
