"""``eval_shape``: run a function of modules abstractly, without computing or allocating.

A thin layer over ``jax.eval_shape``. Array outputs come back as
``jax.ShapeDtypeStruct`` s; modules and variables returned by the function come back as
*abstract* objects: the same classes, structure and variable metadata, with a
``ShapeDtypeStruct`` where each array would be. This is the abstract-init pattern::

    abs_model = nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))

which learns a model's shapes, dtypes and sharding metadata without spending memory or
compute on its parameters; ``nnx.split(abs_model)`` then gives a ``State`` of
``ShapeDtypeStruct`` s (for example to plan shardings or to restore a checkpoint into).

The caller's arguments are never changed: state updates made inside are abstract and are
dropped, and a module the function returns is a new abstract copy even if it was an
argument.

Example:
    >>> import nnxlib as nnx
    >>> abs_model = nnx.eval_shape(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    >>> abs_model.kernel.value
    ShapeDtypeStruct(shape=(2, 3), dtype=float32)
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from nnxlib import graph as graphlib
from nnxlib.graph import is_node_or_variable
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _full_state, _lift
from nnxlib.transforms._arguments import check_function
from nnxlib.transforms._tree_mode import check_inputs

__all__ = ["eval_shape"]


def eval_shape(f: Callable[..., Any], *args: Any, graph: bool | None = None,
               graph_updates: bool | None = None, **kwargs: Any) -> Any:
    """Shapes and dtypes of ``f(*args, **kwargs)``, modules included, without running it.

    Arguments may hold modules (and concrete or abstract arrays). Returned arrays are
    ``jax.ShapeDtypeStruct`` s; returned modules are abstract modules whose variables
    hold ``ShapeDtypeStruct`` s and keep their metadata, with shared references intact.
    Nothing is written back to the arguments.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
        >>> nnx.eval_shape(lambda m, x: m(x), model, jnp.ones((8, 4)))
        ShapeDtypeStruct(shape=(8, 2), dtype=float32)
        >>> abstract = nnx.eval_shape(lambda: nnx.Linear(4, 2, rngs=nnx.Rngs(0)))
        >>> graphdef, state = nnx.split(abstract)
        >>> state["kernel"].value.shape, graphdef == nnx.graphdef(model)
        ((4, 2), True)
    """
    check_function(f, "nnx.eval_shape")
    mode = resolve_mode(graph, graph_updates)
    ext = _lift.extract((args, kwargs), mode, "nnx.eval_shape", _lift.ARGS_KWARGS)
    key = ext.key
    if not mode.updates and ext.plan is not None:
        # without graph updates eval_shape takes a tree of inputs in both modes, as flax
        check_inputs(ext.plan.graphdef, (args, kwargs), ext.node_positions,
                     _lift.ARGS_KWARGS, "nnx.eval_shape")

    def pure(values: list, others: list) -> tuple:
        rebuilt = _lift.rebuild(key, values, others)
        call_args, call_kwargs = rebuilt.tree
        out = f(*call_args, **call_kwargs)
        leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node_or_variable)
        positions = tuple(i for i, x in enumerate(leaves) if is_node_or_variable(x))
        chosen = set(positions)
        other_out = [x for i, x in enumerate(leaves) if i not in chosen]
        if positions:
            nodes = tuple(leaves[i] for i in positions)
            graphdef, node_leaves, flat = graphlib.flatten(nodes)
            node_values = [_full_state.raw(v) for v in node_leaves]
            _lift.expire(flat.objects.values())
        else:
            graphdef, node_values = None, []
        if mode.updates:
            _lift.expire(rebuilt.objects.values())
        else:  # an input returned as an output is an alias this mode refuses
            _lift.collect(rebuilt, key, out, mode, "nnx.eval_shape", _lift.ARGS_KWARGS)
        return _lift.StaticBox((treedef, positions, graphdef)), node_values, other_out

    box, node_values, other_out = jax.eval_shape(pure, ext.values, ext.others)
    treedef, positions, graphdef = box.value
    if not positions:
        return jax.tree_util.tree_unflatten(treedef, other_out)
    nodes = graphlib.unflatten(graphdef, list(node_values))
    leaves = list(other_out)
    for position, node in zip(positions, nodes):
        leaves.insert(position, node)
    return jax.tree_util.tree_unflatten(treedef, leaves)
