"""Modules and containers as JAX pytrees (flax.nnx 0.12's "tree mode").

Registering graph nodes as pytrees lets plain JAX functions take them:
``jax.tree.leaves(model)`` lists its arrays and ``jax.jit(lambda m, x: m(x))(model, x)``
works, as in flax.nnx 0.12. An attribute (or container item) is pytree *data* when it
holds state (a variable, an array, a module, or a container of those); everything else
is static and travels in the aux data.

This is plain pytree semantics, with plain pytree limits: an object reachable twice is
flattened twice and comes back as two objects, and changes made inside a raw JAX
transform stay inside it. ``nnx.jit``/``nnx.grad``/... keep sharing and write changes
back; they treat modules as graph nodes, never through this registration.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> [x.shape for x in jax.tree.leaves(model)]
    [(3,), (2, 3)]
    >>> jax.jit(lambda m, x: m(x))(model, jnp.ones((1, 2))).shape
    (1, 3)
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nnxlib.graph import is_array, is_node_or_variable
from nnxlib.variables import _tracking, freeze_metadata, thaw_metadata

__all__ = ["register_node_pytree"]


#: Exact types of the static values modules hold most (sizes, flags, names, dtypes,
#: functions). They are never containers and never graph nodes, so only
#: ``nnx.register_data_type`` could make one of them state (``is_array`` says so).
PLAIN_STATIC = frozenset({
    int, float, bool, str, bytes, complex, type(None), type, type(jnp.float32),
    types.FunctionType, types.BuiltinFunctionType,
})


def is_state_like(x: Any) -> bool:
    """True for a variable, an array or a graph node (what makes a value state)."""
    return is_node_or_variable(x) or is_array(x)


def holds_state(value: Any) -> bool:
    """True when ``value`` is, or contains, a variable, an array or a graph node."""
    if is_state_like(value):
        return True
    if isinstance(value, (list, tuple, dict)):
        leaves = jax.tree_util.tree_leaves(value, is_leaf=is_node_or_variable)
        return any(map(is_state_like, leaves))
    return False


def register_node_pytree(
    cls: type,
    children: Callable[[Any], list],
    create_empty: Callable[[type, Any], Any],
    fill: Callable[[Any, list], None],
    path_key: Callable[[Any], Any] = jax.tree_util.GetAttrKey,
) -> None:
    """Register graph-node type ``cls`` as a pytree through its graph-node functions.

    ``children(node)`` gives ``(key, value)`` pairs in order; ``create_empty(cls,
    trace)`` and ``fill(node, pairs)`` rebuild a node. Objects rebuilt by JAX belong to
    the trace they are rebuilt in, so a function under ``jax.jit`` may use them freely.
    ``path_key`` makes the key-path entry of a child (attribute, index or dict key).
    """

    def split_children(node: Any) -> tuple[list, tuple]:
        """The ``(key, value)`` pairs that hold state, and the aux data."""
        pairs = children(node)
        data, positions, static = [], [], {}
        for position, pair in enumerate(pairs):
            value = pair[1]
            if (type(value) in PLAIN_STATIC and not is_array(value)) or not holds_state(value):
                static[position] = value  # int keys: freeze_metadata can sort them
            else:
                data.append(pair)
                positions.append(position)
        aux = (tuple([key for key, _ in pairs]), tuple(positions), freeze_metadata(static))
        return data, aux

    def flatten_with_keys(node: Any) -> tuple:
        data, aux = split_children(node)
        return [(path_key(key), value) for key, value in data], aux

    def flatten(node: Any) -> tuple:
        data, aux = split_children(node)
        return [value for _, value in data], aux

    def unflatten(aux: tuple, values: Any) -> Any:
        keys, data_positions, frozen_static = aux
        by_position = {**thaw_metadata(frozen_static), **dict(zip(data_positions, values))}
        node = create_empty(cls, _tracking.current_trace())
        fill(node, [(key, by_position[i]) for i, key in enumerate(keys)])
        return node

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
