"""``pmap``: ``jax.pmap`` for functions of modules (one member per device).

Built on the general lifting of :mod:`nnxlib.transforms.general` (a split and merge
per call): ``nnx.vmap`` plus sharding is the fast, recommended way to use several
devices; ``pmap`` exists for code written against ``flax.nnx.pmap``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> n = jax.local_device_count()
    >>> class Acc(nnx.Module):
    ...     def __init__(self):
    ...         self.total = nnx.Variable(jnp.zeros(n))
    >>> acc = Acc()
    >>> @nnx.pmap(in_axes=(0, 0), axis_name="d")
    ... def add(acc, x):
    ...     acc.total.value += jax.lax.psum(x, "d")
    >>> add(acc, jnp.ones(n))
    >>> float(acc.total[0]) == n
    True
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import jax

from nnxlib.graph import check_mode, is_node_or_variable
from nnxlib.graph_mode import resolve_mode
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms._tree_mode import check_packed, raise_returned_input, root_labels
from nnxlib.transforms.general import (
    InputSlot,
    Packed,
    merge_inputs,
    objects_in,
    pack,
    write_back,
)

__all__ = ["pmap"]


def _packed_in(tree: Any) -> list:
    """The :class:`Packed` objects among ``tree``'s leaves, in order."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, Packed))
    return [x for x in leaves if isinstance(x, Packed)]


def _object_positions(args: tuple) -> tuple:
    leaves = jax.tree_util.tree_leaves(args, is_leaf=is_node_or_variable)
    return tuple(i for i, x in enumerate(leaves) if is_node_or_variable(x))


def _object_axes(in_axes: tuple, args: tuple) -> list:
    """The in-axis of every graph object in ``args`` (in ``objects_in`` order)."""
    axes = []
    for axis, arg in zip(in_axes, args):
        if not isinstance(axis, (int, type(None))):
            raise TypeError(
                f"nnx.pmap: in_axes entry {axis!r} for an argument holding modules; "
                "pmap takes an int or None per argument. Hint: use nnx.vmap with "
                "nnx.StateAxes for per-variable axes."
            )
        axes += [axis] * len(objects_in(arg))
    return axes


def pmap(f: Callable | None = None, *, axis_name: Hashable | None = None,
         in_axes: Any = 0, out_axes: Any = 0,
         static_broadcasted_argnums: int | Iterable[int] = (),
         devices: Sequence[Any] | None = None, backend: str | None = None,
         axis_size: int | None = None, donate_argnums: int | Iterable[int] = (),
         transform_metadata: Mapping[str, Any] | None = None, graph: bool | None = None,
         graph_updates: bool | None = None) -> Any:
    """Map ``f`` over devices like ``jax.pmap``; modules and variables in the
    arguments are mapped by the argument's ``in_axes`` entry (an int or ``None``).

    State changed inside is written back: a mapped module gets each device's new
    state stacked on its axis; a broadcast one (``None``) gets device 0's.
    ``transform_metadata`` is accepted for flax compatibility and not used.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> n = jax.local_device_count()
        >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> out = nnx.pmap(lambda m, x: m(x), in_axes=(None, 0))(layer, jnp.ones((n, 1, 2)))
        >>> out.shape == (n, 1, 3)
        True
    """
    mode = resolve_mode(graph, graph_updates)
    in_axes = prefix_argument(in_axes, "in_axes", "nnx.pmap", mode)
    out_axes = prefix_argument(out_axes, "out_axes", "nnx.pmap", mode)
    if f is None:
        return functools.partial(
            pmap, graph=mode.graph, graph_updates=mode.updates, axis_name=axis_name,
            in_axes=in_axes, out_axes=out_axes,
            static_broadcasted_argnums=static_broadcasted_argnums, devices=devices,
            backend=backend, axis_size=axis_size, donate_argnums=donate_argnums,
            transform_metadata=transform_metadata)
    check_function(f, "nnx.pmap")
    inner = merge_inputs(f)

    @functools.wraps(f)
    def wrapper(*args: Any) -> Any:
        axes = tuple(in_axes) if isinstance(in_axes, (list, tuple)) else (in_axes,) * len(args)
        check_mode(args, mode.graph, "nnx.pmap", "args")
        object_axes = _object_axes(axes, args)
        inputs = objects_in(args)
        packed = pack(args)
        mapped = jax.pmap(
            inner, axis_name, in_axes=axes,
            out_axes=(tuple(0 for _ in inputs), out_axes),
            static_broadcasted_argnums=static_broadcasted_argnums, devices=devices,
            backend=backend, axis_size=axis_size, donate_argnums=donate_argnums)
        new_inputs, out = mapped(*packed)
        if not mode.updates:
            before = [p.graphdef for p in _packed_in(packed)]
            check_packed(mode, "nnx.pmap", before, [p.graphdef for p in new_inputs],
                         root_labels(args, _object_positions(args), None))
            if any(isinstance(x, InputSlot) for x in jax.tree_util.tree_leaves(
                    out, is_leaf=lambda x: isinstance(x, InputSlot))):
                raise_returned_input("nnx.pmap", mode, "module or variable")
        # A broadcast object's state comes back once per device: keep device 0's.
        new_inputs = tuple(
            jax.tree_util.tree_map(lambda x: x[0], packed) if axis is None else packed
            for packed, axis in zip(new_inputs, object_axes))
        return write_back(inputs, new_inputs, out)

    return wrapper
