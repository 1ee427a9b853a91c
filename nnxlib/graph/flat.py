"""Flat and pure views of a graph: ``flatten``/``unflatten``, ``variables``,
``as_pure`` (flax.nnx 0.12 names).

Example:
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> graphdef, flat = nnx.flatten(model)
    >>> [path for path, _ in flat]
    [('bias',), ('kernel',)]
    >>> nnx.unflatten(graphdef, flat).kernel is model.kernel
    True
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax

from nnxlib.graph import GraphDef, merge, split, state
from nnxlib.state import FlatState, State, from_flat_state, to_flat_state
from nnxlib.variables import Variable

__all__ = ["flatten", "unflatten", "variables", "as_pure", "pure"]

A = TypeVar("A")


def flatten(node: Any, /, *, with_paths: bool = True, graph: bool | None = None
            ) -> tuple[GraphDef, Any]:
    """Split ``node`` into its ``GraphDef`` and a flat state.

    With ``with_paths=True`` the flat state is a :class:`~nnxlib.FlatState` of
    ``(path, variable)`` pairs; with ``with_paths=False`` it is the list of leaves
    alone, in the same order.

    Example:
        >>> import nnxlib as nnx
        >>> graphdef, leaves = nnx.flatten(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
        ...                                with_paths=False)
        >>> [leaf.shape for leaf in leaves]
        [(3,), (2, 3)]
    """
    graphdef, state = split(node, graph=graph)
    if not isinstance(state, State):  # the root is a leaf (a variable, an array, ...)
        flat = FlatState([((), state)])
    else:
        flat = to_flat_state(state)
    if with_paths:
        return graphdef, flat
    return graphdef, [leaf for _, leaf in flat]


def unflatten(graphdef: GraphDef, state: Any, /, *, copy_variables: bool = False) -> Any:
    """Rebuild a graph from ``graphdef`` and a state: a ``State``, a ``FlatState`` or
    the list of leaves from ``flatten(..., with_paths=False)``.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> graphdef, leaves = nnx.flatten(model, with_paths=False)
        >>> nnx.unflatten(graphdef, leaves, copy_variables=True).kernel is model.kernel
        False
    """
    if isinstance(state, (list, tuple)):
        if len(state) != graphdef.num_leaves:
            raise ValueError(
                f"unflatten: the graph definition has {graphdef.num_leaves} leaves, got "
                f"a list of {len(state)}. Hint: pass the list from "
                "nnx.flatten(node, with_paths=False) unchanged."
            )
        state = FlatState(list(zip(graphdef.paths, state)))
    if isinstance(state, FlatState):
        if list(state) and state[0][0] == ():
            state = state[0][1]
        else:
            state = from_flat_state(state)
    return merge(graphdef, state, copy=copy_variables)


def variables(node: Any, *filters: Any, graph: bool | None = None
              ) -> State | tuple[State, ...]:
    """The ``Variable`` objects of ``node`` (not copies) as a ``State``, one per filter.

    ``nnx.variables(model, nnx.Param)`` is ``nnx.state(model, nnx.Param)`` in nnxlib (a
    state holds the live variables); the name is flax.nnx's.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> params = nnx.variables(model, nnx.Param)
        >>> params["kernel"] is model.kernel
        True
    """
    return state(node, *filters, graph=graph)


def as_pure(tree: A) -> A:
    """``tree`` with every ``Variable`` replaced by its value (metadata dropped).

    Useful for serialization and export; works on a ``State`` or any pytree.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> pure = nnx.as_pure(state)
        >>> type(pure["kernel"]).__name__, jax.tree.map(jnp.shape, dict(pure))
        ('ArrayImpl', {'bias': (3,), 'kernel': (2, 3)})
    """
    return jax.tree.map(lambda x: x.get_value() if isinstance(x, Variable) else x, tree,
                        is_leaf=lambda x: isinstance(x, Variable))


def pure(tree: A) -> A:
    """The older name of :func:`as_pure` (kept by flax.nnx as a deprecated alias).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.pure({"w": nnx.Param(1.0)})
        {'w': 1.0}
    """
    return as_pure(tree)
