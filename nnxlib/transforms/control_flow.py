"""Control flow over functions of modules: ``cond``, ``switch``, ``fori_loop``, ``while_loop``.

Each is a thin layer over the ``jax.lax`` primitive of the same name. Modules among the
operands (or inside the loop carry) go in as their arrays; inside, fresh modules are
rebuilt from those arrays and the user function runs on them as in eager mode; the
resulting arrays come out and are written back into the caller's own variables.

* ``cond``/``switch``: every branch returns the full state of the module operands plus
  its outputs, so branches that change *different* variables still agree on the output
  structure. Branches must change the modules' *structure* (attributes, variables) in
  the same way, if at all.
* ``fori_loop``/``while_loop``: the modules in ``init_val`` are carried through the loop
  by value (all their arrays in, all out); the body must return the carry with the same
  structure (same modules, attributes and variables), and may change any values.

If the user function raises, the caller's modules are left as they were.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> counter = nnx.Variable(jnp.array(0))
    >>> def body(i, c):
    ...     c[...] += i
    ...     return c
    >>> _ = nnx.fori_loop(0, 5, body, counter)
    >>> int(counter[...])
    10
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from nnxlib.errors import format_path
from nnxlib.graph._tree_check import index_paths
from nnxlib.graph.mode import Mode, resolve_mode
from nnxlib.transforms import _full_state, _lift
from nnxlib.transforms._tree_mode import root_labels

__all__ = ["cond", "switch", "fori_loop", "while_loop"]


# ------------------------------------------------------------------- branches
def _run_branches(name: str, labels: Sequence[str], functions: Sequence[Callable],
                  operands: tuple, lax_call: Callable, mode: Mode) -> Any:
    where = f"nnx.{name}"
    ext = _lift.extract(operands, mode, where)
    key = ext.key
    infos: list = [None] * len(functions)

    def make(k: int, fn: Callable) -> Callable:
        def branch(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            out = fn(*rebuilt.tree)
            info, send, other_out = _full_state.collect_full(rebuilt, key, out, mode, where)
            infos[k] = info
            return send, other_out

        return branch

    branches = [make(k, fn) for k, fn in enumerate(functions)]
    try:
        send, other_out = lax_call(branches, ext.values, ext.others)
    except (TypeError, ValueError) as error:
        _check_same(name, labels, infos, error)
        raise
    _check_same(name, labels, infos, None)
    info = next(i for i in infos if i is not None)
    return _lift.apply_outputs(ext.plan, info, send, other_out)


def _check_same(name: str, labels: Sequence[str], infos: list,
                cause: BaseException | None) -> None:
    traced = [(label, info) for label, info in zip(labels, infos) if info is not None]
    if len(traced) < 2:
        return
    first_label, first = traced[0]
    for label, info in traced[1:]:
        if info == first:
            continue
        if info.fast != first.fast or info.joint != first.joint:
            what = (
                "the branches change the structure of the module operands differently "
                f"({first_label}: {_structure_note(first)}; {label}: "
                f"{_structure_note(info)})"
            )
        elif info.out_treedef != first.out_treedef:
            what = (
                f"the branches return outputs of different structure ({first_label}: "
                f"{first.out_treedef}; {label}: {info.out_treedef}, graph objects shown "
                "as leaves)"
            )
        else:
            what = (
                f"the branches return different modules or variables ({first_label} and "
                f"{label} differ in which graph objects they return, or in their structure)"
            )
        raise ValueError(
            f"{name}: {what}. Every branch must return the same kind of output and leave "
            "the modules with the same attributes and variables (values may differ). "
            "Hint: create attributes before the branch, in both branches or in neither."
        ) from cause


def _structure_note(info: _lift.OutInfo) -> str:
    return "keeps it" if info.fast else "changes it"


def cond(pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any,
         graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """``jax.lax.cond`` for functions of modules: run one of two branches on ``operands``.

    Modules among the operands may be mutated by either branch; after the call they
    hold the values of the branch that ran. Both branches must return outputs of the
    same structure and types. If a branch returns one of the operand modules, the
    caller's own module is returned.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Flip(nnx.Module):
        ...     def __init__(self):
        ...         self.ups = nnx.Variable(jnp.array(0))
        ...         self.downs = nnx.Variable(jnp.array(0))
        >>> def up(m, x):
        ...     m.ups[...] += 1
        ...     return x + 1
        >>> def down(m, x):
        ...     m.downs[...] += 1
        ...     return x - 1
        >>> m = Flip()
        >>> float(nnx.cond(jnp.array(True), up, down, m, 1.0))
        2.0
        >>> float(nnx.cond(False, up, down, m, 1.0))
        0.0
        >>> int(m.ups[...]), int(m.downs[...])
        (1, 1)
    """
    return _run_branches(
        "cond", ("true_fun", "false_fun"), (true_fun, false_fun), operands,
        lambda branches, values, others: jax.lax.cond(pred, *branches, values, others),
        resolve_mode(graph, graph_updates))


def switch(index: Any, branches: Sequence[Callable], *operands: Any,
           graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """``jax.lax.switch`` for functions of modules: run ``branches[index]``.

    ``index`` is clamped to the valid range, as in JAX. State changes made by the
    branch that runs are written back to the module operands; all branches must return
    outputs of the same structure.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> hits = nnx.Variable(jnp.zeros(3))
        >>> def hit(k):
        ...     def branch(v):
        ...         v[k] += 1.0
        ...     return branch
        >>> for i in [0, 2, 2, 7]:            # 7 is clamped to the last branch
        ...     nnx.switch(i, [hit(0), hit(1), hit(2)], hits)
        >>> hits[...]
        Array([1., 0., 3.], dtype=float32)
    """
    functions = tuple(branches)
    if not functions:
        raise ValueError("switch: expected at least one branch function.")
    labels = tuple(f"branches[{k}]" for k in range(len(functions)))
    return _run_branches(
        "switch", labels, functions, operands,
        lambda fns, values, others: jax.lax.switch(index, fns, values, others),
        resolve_mode(graph, graph_updates))


# ---------------------------------------------------------------------- loops
def _carry_body(name: str, key: tuple, fn: Callable, pass_index: bool) -> Callable:
    def body(*args: Any) -> tuple:
        if pass_index:
            i, (values, others) = args
        else:
            ((values, others),) = args
        rebuilt = _lift.rebuild(key, values, others)
        out = fn(i, rebuilt.tree) if pass_index else fn(rebuilt.tree)
        new = _lift.extract(out)
        if new.key != key:
            _lift.expire(rebuilt.objects.values())
            raise ValueError(
                f"{name}: body_fun must return a carry with the same structure as "
                f"init_val (the same modules with the same attributes and variables; "
                f"only values may change), but {_full_state.describe_change(key, new.key)}. "
                "Hint: create every attribute before the loop, and return the carry "
                "the body received."
            )
        replaced = _replaced_object(rebuilt, new, out)
        _lift.expire(rebuilt.objects.values())
        if new.plan is not None:
            _lift.expire(new.plan.objects.values())
        if replaced is not None:
            kind, where = replaced
            raise ValueError(
                f"{name}: body_fun replaced the {kind} at {where} "
                "with a new object. The loop carries the same modules and variables from "
                "step to step (a Ref changed inside the loop), so the body must update "
                f"them in place.\nHint: write the value (`v[...] = new_value`) instead of "
                "assigning a new variable or module.")
        return new.values, new.others

    return body


def _replaced_object(rebuilt: _lift.Rebuilt, new: _lift.Extracted,
                     carry: Any) -> tuple | None:
    """``(type name, where)`` of the first carried object the body swapped for another
    (same structure, so the same index, but not the same object), or None."""
    if new.plan is None:
        return None
    for index, obj in new.plan.objects.items():
        if rebuilt.objects.get(index, obj) is not obj:
            path = index_paths(new.plan.graphdef.root)[index]
            labels = root_labels(carry, new.node_positions, "carry")
            return type(obj).__name__, format_path(path[1:], labels[path[0]])
    return None


def _finish(ext: _lift.Extracted, values: list, others: list) -> Any:
    _full_state.write_values(ext.plan, range(len(values)), values)
    if not ext.node_positions:
        return jax.tree_util.tree_unflatten(ext.treedef, others)
    leaves = list(others)
    for position, node in zip(ext.node_positions, _roots(ext)):
        leaves.insert(position, node)
    return jax.tree_util.tree_unflatten(ext.treedef, leaves)


def _roots(ext: _lift.Extracted) -> list:
    objects = ext.plan.objects  # type: ignore[union-attr]
    return [objects[d.index] for _, d in ext.plan.graphdef.root.attributes]  # type: ignore


def fori_loop(lower: Any, upper: Any, body_fun: Callable[[Any, Any], Any], init_val: Any,
              *, unroll: int | bool | None = None, graph: bool | None = None,
              graph_updates: bool | None = None) -> Any:
    """``jax.lax.fori_loop`` whose carry may hold modules: ``body_fun(i, carry) -> carry``.

    Modules in ``init_val`` are carried by value: the body sees fresh copies built from
    the current arrays, changes them, and returns the carry (normally the same objects).
    After the loop the caller's modules hold the final values and are returned in
    place (``out`` holds the very objects passed in). The body must not change the
    carry's structure.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Acc(nnx.Module):
        ...     def __init__(self):
        ...         self.total = nnx.Variable(jnp.array(0.0))
        >>> def body(i, carry):
        ...     acc, x = carry
        ...     acc.total[...] += x
        ...     return acc, x * 2
        >>> acc = Acc()
        >>> out_acc, x = nnx.fori_loop(0, 4, body, (acc, jnp.array(1.0)))
        >>> out_acc is acc, float(acc.total[...]), float(x)
        (True, 15.0, 16.0)
    """
    ext = _lift.extract(init_val, resolve_mode(graph, graph_updates), "nnx.fori_loop",
                        "init_val")
    body = _carry_body("fori_loop", ext.key, body_fun, pass_index=True)
    values, others = jax.lax.fori_loop(lower, upper, body, (ext.values, ext.others),
                                       unroll=unroll)
    return _finish(ext, values, others)


def while_loop(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any],
               init_val: Any, *, graph: bool | None = None,
               graph_updates: bool | None = None) -> Any:
    """``jax.lax.while_loop`` whose carry may hold modules.

    ``cond_fun(carry)`` decides whether to continue (changes it makes to modules are
    discarded); ``body_fun(carry) -> carry`` updates the carry, which must keep its
    structure. The caller's modules hold the final values afterwards.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> steps = nnx.Variable(jnp.array(1))
        >>> def double(v):
        ...     v[...] *= 2
        ...     return v
        >>> _ = nnx.while_loop(lambda v: v[...] < 100, double, steps)
        >>> int(steps[...])
        128
    """
    ext = _lift.extract(init_val, resolve_mode(graph, graph_updates), "nnx.while_loop",
                        "init_val")
    key = ext.key

    def cond(carry: tuple) -> Any:
        values, others = carry
        rebuilt = _lift.rebuild(key, values, others)
        result = cond_fun(rebuilt.tree)
        _lift.expire(rebuilt.objects.values())
        return result

    body = _carry_body("while_loop", key, body_fun, pass_index=False)
    values, others = jax.lax.while_loop(cond, body, (ext.values, ext.others))
    return _finish(ext, values, others)
