"""``make_jaxpr``: ``jax.make_jaxpr`` for functions of modules.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> jaxpr = nnx.make_jaxpr(lambda m, x: m(x))(layer, jnp.ones((1, 2)))
    >>> "dot_general" in str(jaxpr)
    True
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax

from nnxlib.graph import check_mode
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms.general import merge_inputs, pack

__all__ = ["make_jaxpr"]


def make_jaxpr(f: Callable, *, static_argnums: int | Sequence[int] = (),
               axis_env: Sequence[tuple[Any, int]] | None = None,
               return_shape: bool = False, abstracted_axes: Any = None,
               graph: bool | None = None, graph_updates: bool | None = None) -> Callable:
    """The jaxpr of ``f`` called on modules (their arrays are the inputs), as
    ``jax.make_jaxpr`` gives it for pure functions. With ``return_shape=True`` the
    result is ``(jaxpr, shapes)``: the ``ShapeDtypeStruct`` s of ``f``'s output.
    The modules passed in are not changed.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> _, shape = nnx.make_jaxpr(lambda m, x: m(x), return_shape=True)(
        ...     layer, jnp.ones((1, 2)))
        >>> shape.shape
        (1, 3)
    """
    graph = resolve_mode(graph, graph_updates).graph

    def output_only(*args: Any, **kwargs: Any) -> Any:
        return merge_inputs(f)(*args, **kwargs)[1]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_mode(args, graph, "nnx.make_jaxpr", "args")
        packed_args, packed_kwargs = pack((args, kwargs))
        options = {} if abstracted_axes is None else {"abstracted_axes": abstracted_axes}
        return jax.make_jaxpr(output_only, static_argnums=static_argnums,
                              axis_env=axis_env, return_shape=return_shape,
                              **options)(*packed_args, **packed_kwargs)

    return wrapper
