"""``pmap``: ``jax.pmap`` for functions of modules (one member per device).

Built on the same machinery as :func:`~nnxlib.vmap` (``vmap.mapped``), with
``jax.pmap`` doing the mapping: a module's state is mapped leaf by leaf (an axis for
all of it, ``None``, or a :class:`~nnxlib.StateAxes`/``nnx.prefix`` entry), changed
state comes back on its axis, modules made inside come back stacked. ``nnx.vmap`` plus
sharding is the usual way to use several devices; ``pmap`` serves code written for
``flax.nnx.pmap``.

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

from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms.vmap import mapped

__all__ = ["pmap"]


def pmap(f: Callable | None = None, *, axis_name: Hashable | None = None,
         in_axes: Any = 0, out_axes: Any = 0,
         static_broadcasted_argnums: int | Iterable[int] = (),
         devices: Sequence[Any] | None = None, backend: str | None = None,
         axis_size: int | None = None, donate_argnums: int | Iterable[int] = (),
         transform_metadata: Mapping[str, Any] | None = None, graph: bool | None = None,
         graph_updates: bool | None = None) -> Any:
    """Map ``f`` over devices like ``jax.pmap``, modules included.

    ``in_axes``/``out_axes`` work as in :func:`~nnxlib.vmap` (ints, ``None``,
    ``nnx.StateAxes`` or ``nnx.prefix`` entries for modules). Arguments at
    ``static_broadcasted_argnums`` are passed as Python values (hashable; one
    compilation per value). ``donate_argnums`` is accepted for compatibility; no buffer
    is donated. ``transform_metadata`` works as in ``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> n = jax.local_device_count()
        >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> out = nnx.pmap(lambda m, x: m(x), in_axes=(None, 0))(layer, jnp.ones((n, 1, 2)))
        >>> out.shape == (n, 1, 3)
        True
    """
    if transform_metadata is None:
        transform_metadata = {}
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
    statics = ((static_broadcasted_argnums,) if isinstance(static_broadcasted_argnums, int)
               else tuple(static_broadcasted_argnums))

    def map_fn(pure: Callable, in_axes: Any, out_axes: Any) -> Callable:
        return jax.pmap(pure, axis_name, in_axes=in_axes, out_axes=out_axes,
                        devices=devices, backend=backend, axis_size=axis_size)

    if not statics:
        return mapped(f, in_axes, out_axes, mode, transform_metadata, "pmap", map_fn)
    per_static: dict = {}

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        n = len(args)
        at = sorted({i % n for i in statics if -n <= i < n})
        values = tuple(args[i] for i in at)
        inner = per_static.get(values)
        if inner is None:
            def with_statics(*dynamic: Any, **kw: Any) -> Any:
                full = list(dynamic)
                for i, value in zip(at, values):
                    full.insert(i, value)
                return f(*full, **kw)

            axes = in_axes
            if isinstance(axes, (tuple, list)) and len(axes) == n:
                axes = tuple(a for i, a in enumerate(axes) if i not in at)
            inner = per_static[values] = mapped(with_statics, axes, out_axes, mode,
                                                transform_metadata, "pmap", map_fn)
        return inner(*(a for i, a in enumerate(args) if i not in at), **kwargs)

    return wrapper
