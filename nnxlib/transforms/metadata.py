"""``transform_metadata``: the per-member view of sharding metadata, by hand.

Example:
    >>> import nnxlib as nnx
    >>> callable(nnx.transform_metadata)
    True
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from nnxlib.graph import check_mode, is_node_or_variable
from nnxlib.transforms._axes import (
    add_axis,
    iter_variables,
    prefix_leaves,
    remove_axis,
    resolve,
)
from nnxlib.transforms.axes import PARTITION_NAME

__all__ = ["transform_metadata"]


def transform_metadata(f: Callable | None = None, *, in_axes: Any = 0, out_axes: Any = 0,
                       partition: str, graph: bool | None = None) -> Any:
    """Show ``f`` the per-member view of sharding metadata, as ``vmap``/``scan`` would.

    Before the call, the ``partition`` name is removed from the sharding metadata of the
    variables in the arguments (at each one's ``in_axes`` position); afterwards it is put
    back, and added to the variables ``f`` returns (at their ``out_axes`` position). Useful
    around code that is mapped by hand (for example ``jax.vmap`` of a pure function).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> w = nnx.Param(jnp.ones((4, 2, 3)), out_sharding=("layers", "embed", "mlp"))
        >>> seen = []
        >>> f = nnx.transform_metadata(lambda p: seen.append(p.out_sharding),
        ...                            in_axes=0, partition="layers")
        >>> f(w); seen[0], w.out_sharding
        (('embed', 'mlp'), ('layers', 'embed', 'mlp'))
    """
    if f is None:
        return lambda fn: transform_metadata(fn, in_axes=in_axes, out_axes=out_axes,
                                             partition=partition, graph=graph)
    metadata = {PARTITION_NAME: partition}

    def axes_of(prefix: Any, tree: Any, where: str) -> list:
        specs = prefix_leaves(prefix, tree, is_node_or_variable, where)
        leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_node_or_variable)
        found = []
        for spec, leaf in zip(specs, leaves):
            for _, path, var in iter_variables([leaf]):
                axis = resolve(spec, path, var, where, allow_carry=False)
                if axis is not None:
                    found.append((var, axis))
        return found

    def wrapper(*args: Any) -> Any:
        check_mode(args, graph, "nnx.transform_metadata", "args")
        prefix = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else in_axes
        inputs = axes_of(prefix, args, "transform_metadata in_axes")
        done = []
        try:
            for var, axis in inputs:
                remove_axis(var, axis, metadata, quiet=False)
                done.append((var, axis))
            out = f(*args)
        finally:
            for var, axis in done:
                add_axis(var, axis, metadata, quiet=False)
        seen = {id(v) for v, _ in inputs}
        for var, axis in axes_of(out_axes, out, "transform_metadata out_axes"):
            if id(var) not in seen:
                add_axis(var, axis, metadata, quiet=False)
        return out

    return wrapper
