"""How states meet graphs: reading a state given to ``merge``/``update`` in a graph's
leaf order, checking that it fits (paths, shapes, dtypes, traces), and writing values
at a path of a graph (also into immutable containers). Private to :mod:`nnxlib.graph`
and the transforms.

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.graph._checks import _leaves_for
    >>> graphdef, state = nnx.split(nnx.Linear(1, 2, rngs=nnx.Rngs(0)))
    >>> [leaf.shape for leaf in _leaves_for(graphdef, (state,), "merge")]
    [(2,), (1, 2)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import jax

from nnxlib.errors import StateMismatchError, format_path
from nnxlib.graph._graphdef import (
    GraphDef,
    is_array,
    is_graph_node,
    is_node_or_variable,
    pytree_impl,
)
from nnxlib.state import FlatState, State
from nnxlib.variables import Variable, _tracking
from nnxlib.variables._arrays import aval_of


def _state_of(paths: tuple, leaves: list) -> Any:
    """The state of a split: a :class:`State`, or, when the root itself is a Variable
    (its one path is ``()``), that Variable, as ``flax.nnx`` returns it."""
    if paths == _ROOT_PATHS:
        return leaves[0]
    return State._from_flat(paths, leaves)


def _flat_of(state: Any) -> tuple:
    """``(paths, leaves)`` of a state given to merge/update: a ``State``, a mapping, a
    ``FlatState``, or a single leaf (a Variable, an array, ...) at the root path."""
    if isinstance(state, State):
        return state._flat()
    if isinstance(state, Mapping):
        return State(state)._flat()
    if isinstance(state, FlatState):
        return state.paths, state.leaves
    return _ROOT_PATHS, (state,)


_ROOT_PATHS = ((),)


def _leaves_for(graphdef: GraphDef, states: tuple, where: str) -> list:
    """Order the leaves of ``states`` as ``graphdef`` expects, or explain the mismatch."""
    if len(states) == 1 and isinstance(states[0], State) and states[0]._paths is not None:
        paths, leaves = states[0]._paths, states[0]._leaves
        if paths is graphdef.paths or paths == graphdef.paths:
            return leaves
    by_path: dict = {}
    for s in states:
        by_path.update(zip(*_flat_of(s)))
    missing = [p for p in graphdef.paths if p not in by_path]
    extra = set(by_path) - set(graphdef.paths)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing paths {[format_path(p) for p in missing[:5]]}")
        if extra:
            parts.append(f"unexpected paths {sorted(format_path(p) for p in extra)[:5]}")
        count = ("" if len(by_path) == len(graphdef.paths)
                 else " (Incorrect number of leaves)")
        raise StateMismatchError(
            f"{where}: the state does not match the graph definition: "
            f"{'; '.join(parts)}. Expected {len(graphdef.paths)} leaves, got "
            f"{len(by_path)}{count}. Hint: pass every state returned by split (e.g. "
            "merge(graphdef, params, rest)) and do not add or drop entries."
        )
    return [by_path[p] for p in graphdef.paths]


def _check_avals(graphdef: GraphDef, leaves: list) -> None:
    """Every concrete leaf must have the shape and dtype the graph was split with.

    A slice of a stacked state legitimately meets the stacked model's graph definition
    (scan over layers, unstacking), so leading axes may be added or removed; traced
    leaves are not checked at all (``jax.vmap`` inside may change any axis).
    """
    bad = []
    for path, expected, leaf in zip(graphdef.paths, graphdef.avals, leaves):
        if expected is None:
            continue
        value = leaf._raw_value if isinstance(leaf, Variable) else leaf
        # jax arrays cache their abstract value: one attribute read on the common path
        aval = getattr(value, "aval", None)
        if aval is not None and aval.shape == expected[0] and aval.dtype == expected[1]:
            continue
        if isinstance(value, jax.core.Tracer):
            continue
        actual = aval_of(value)
        if (actual is not None and actual != expected and not _stacking_of(actual, expected)
                and not _tangent_of(actual, expected)):
            bad.append(f"{format_path(path)}: expected {_aval_str(expected)}, got "
                       f"{_aval_str(actual)}")
    if bad:
        raise StateMismatchError(
            f"merge: the state does not fit the graph definition at {len(bad)} path(s): "
            f"{'; '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}. Hint: merge a state "
            "split from the same model (or one built with the same sizes); to change "
            "dtypes, merge first and cast with nnx.map or `v.value = v.value.astype(...)`."
        )


def _tangent_of(actual: tuple, expected: tuple) -> bool:
    """A float0 leaf where the graph has an integer or bool one: the gradient of that
    leaf (``jax.grad(..., allow_int=True)``), so a module of gradients can be built."""
    return actual[1] == jax.dtypes.float0 and actual[0] == expected[0]


def _stacking_of(actual: tuple, expected: tuple) -> bool:
    """Same dtype, and one shape is the other with leading axes added: a layer stack
    unstacked into layers (or layers merged into a stack's definition) is legitimate."""
    (shape, dtype), (want, want_dtype) = actual, expected
    if dtype != want_dtype or len(shape) == len(want):
        return False
    short, long = (shape, want) if len(shape) < len(want) else (want, shape)
    return long[len(long) - len(short):] == short


def _aval_str(aval: tuple) -> str:
    shape, dtype = aval
    return f"{getattr(dtype, 'name', dtype)}{list(shape)}"


def _static_slot(root: Any, path: tuple) -> tuple | None:
    """``(owner, key)`` when ``path`` reaches a static value held by a module or by a
    mutable container (what ``update`` may replace), else None."""
    owner = root
    for depth, key in enumerate(path):
        impl = pytree_impl(owner)
        if impl is None:
            return None
        children = dict(impl.children(owner))
        if key not in children:
            return None
        child = children[key]
        if depth == len(path) - 1:
            static = not (is_node_or_variable(child) or is_array(child)
                          or pytree_impl(child) is not None)
            mutable = isinstance(owner, (list, dict)) or is_graph_node(owner)
            return (owner, key) if static and mutable else None
        owner = child
    return None


def _check_writable(path: tuple, target: Any, new: Any, root: Any) -> None:
    """update may only write into objects of the current trace, and never a tracer
    of a finished transform (checked for every entry before anything is written)."""
    value = new._raw_value if isinstance(new, Variable) else new
    owner = target if isinstance(target, Variable) else root
    trace = owner._nnx_trace
    if trace is not None and trace != _tracking.current_trace():
        _tracking.check_trace(owner, f"update {format_path(path)!r}")
    _tracking.check_value(owner, value, f"update {format_path(path)!r}")


def _write_into_pytree(root: Any, path: tuple, value: Any) -> None:
    """Rebuild the immutable container holding ``path``'s array and re-attach it.

    Replacing a container changes no structure, but the cached plan of ``root`` holds
    the old array for this position, so the owner is stamped to make it re-read.
    """
    owner, owner_key, rest, obj = None, None, path, root
    for depth, key in enumerate(path):
        if is_graph_node(obj):
            owner, owner_key, rest = obj, key, path[depth + 1:]
        obj = dict(pytree_impl(obj).children(obj))[key]
    impl = pytree_impl(owner)
    if impl.set_raw is None:
        raise TypeError(
            f"update: cannot write the array at {format_path(path)!r}: its owner "
            f"{type(owner).__name__} has no set_raw in its NodeImpl."
        )

    def rebuild(tree: Any, keys: tuple) -> Any:
        if not keys:
            return value
        tree_impl = pytree_impl(tree)
        children = tree_impl.children(tree)
        values = [rebuild(v, keys[1:]) if k == keys[0] else v for k, v in children]
        return tree_impl.build(type(tree), tuple(k for k, _ in children), values)

    container = dict(impl.children(owner))[owner_key]
    impl.set_raw(owner, owner_key, rebuild(container, rest))
    _tracking.structure_changed(owner)


def _check_compatible(path: tuple, old: Any, new: Any, where: str) -> None:
    old_value = old._raw_value if isinstance(old, Variable) else old
    new_value = new._raw_value if isinstance(new, Variable) else new
    try:
        if old_value.shape == new_value.shape and old_value.dtype == new_value.dtype:
            return
    except AttributeError:  # not arrays (python scalars, tuples from sow): no check
        return
    if tuple(old_value.shape) != tuple(new_value.shape):
        raise StateMismatchError(
            f"{where}: shape mismatch at {format_path(path)!r}: expected "
            f"{tuple(old_value.shape)}, got {tuple(new_value.shape)}. Hint: the state must "
            "come from a model with the same layer sizes."
        )
    raise StateMismatchError(
        f"{where}: dtype mismatch at {format_path(path)!r}: expected {old_value.dtype}, got "
        f"{new_value.dtype}. Hint: cast the state first (jax.tree.map(lambda x: "
        f"x.astype({old_value.dtype}), state)), or set variable.value to change the dtype "
        "on purpose."
    )


def _edges(node: Any) -> Iterator[tuple[Any, Any, Any, tuple]]:
    """Every ``(owner, key, child, path)`` edge below ``node``, through graph nodes
    (each once) and plain containers."""
    seen: set[int] = set()

    def visit(obj: Any, path: tuple) -> Iterator[tuple[Any, Any, Any, tuple]]:
        impl = pytree_impl(obj)
        if not impl.pytree:
            if id(obj) in seen:
                return
            seen.add(id(obj))
        for key, child in impl.children(obj):
            yield obj, key, child, path + (key,)
            if pytree_impl(child) is not None:
                yield from visit(child, path + (key,))

    if pytree_impl(node) is not None:
        yield from visit(node, ())


def _put_raw(root: Any, path: tuple, value: Any) -> Any:
    """Put ``value`` at ``path`` of a freshly built graph (in place of its variable);
    returns the root (``value`` itself for the root path)."""
    if not path:
        return value
    owner = root
    for key in path[:-1]:
        owner = dict(pytree_impl(owner).children(owner))[key]
    impl = pytree_impl(owner)
    if impl.set_raw is None:
        raise TypeError(
            f"nnx.map(recreate_variables=False): cannot put a raw value at "
            f"{format_path(path)!r}: its owner {type(owner).__name__} is immutable. Hint: "
            "return a Variable from the function, or use recreate_variables=True."
        )
    impl.set_raw(owner, path[-1], value)
    _tracking.structure_changed(owner)
    return root
