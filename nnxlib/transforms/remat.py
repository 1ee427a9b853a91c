"""``remat`` (alias ``checkpoint``): rematerialise a function of modules under ``grad``.

A thin layer over ``jax.checkpoint``: the arrays of module arguments go in, fresh
modules are rebuilt from them inside the checkpointed function, and the arrays the
function changed come out and are written back into the caller's variables. Under
differentiation, the intermediate values of the function are recomputed on the
backward pass instead of being stored (``policy`` chooses which ones may be saved).

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Block(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.linear = nnx.Linear(4, 4, rngs=rngs)
    ...     @nnx.remat
    ...     def __call__(self, x):
    ...         return jnp.tanh(self.linear(x))
    >>> block = Block(nnx.Rngs(0))
    >>> grads = nnx.grad(lambda b: b(jnp.ones((2, 4))).sum())(block)
    >>> grads["linear"]["kernel"].shape
    (4, 4)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _lift
from nnxlib.transforms._arguments import check_function

__all__ = ["remat", "checkpoint"]


def _as_tuple(x: Any) -> tuple:
    if x is None:
        return ()
    if isinstance(x, int):
        return (x,)
    return tuple(x)


def remat(f: Callable | None = None, *, prevent_cse: bool = True,
          static_argnums: int | tuple[int, ...] = (),
          policy: Callable[..., bool] | None = None, graph: bool | None = None,
          graph_updates: bool | None = None) -> Any:
    """``jax.checkpoint`` for functions whose arguments hold modules.

    ``prevent_cse`` and ``policy`` are passed to ``jax.checkpoint``. Positional
    arguments listed in ``static_argnums`` are passed to ``f`` as Python values (not
    traced). State changed inside ``f`` is visible on the caller's modules afterwards.
    Works as ``nnx.remat(f)``, as a decorator with or without arguments, and on
    methods.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
        >>> def loss(m, x):
        ...     return nnx.remat(lambda m, x: jnp.sin(m(x)))(m, x).sum()
        >>> jaxpr = jax.make_jaxpr(lambda x: nnx.grad(loss)(model, x))(jnp.ones((1, 3)))
        >>> any("remat" in e.primitive.name or "checkpoint" in e.primitive.name
        ...     for e in jaxpr.eqns)
        True
    """
    mode = resolve_mode(graph, graph_updates)
    if f is None:
        return functools.partial(remat, prevent_cse=prevent_cse,
                                 static_argnums=static_argnums, policy=policy,
                                 graph=mode.graph, graph_updates=mode.updates)
    check_function(f, "nnx.remat")
    statics = _as_tuple(static_argnums)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        n = len(args)
        static_at = sorted({i % n for i in statics if -n <= i < n})
        static_values = [args[i] for i in static_at]
        dynamic = tuple(a for i, a in enumerate(args) if i not in static_at)
        ext = _lift.extract((dynamic, kwargs), mode, "nnx.remat", _lift.ARGS_KWARGS)
        key = ext.key

        def pure(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            call_args, call_kwargs = rebuilt.tree
            call_args = list(call_args)
            for i, value in zip(static_at, static_values):
                call_args.insert(i, value)
            out = f(*call_args, **call_kwargs)
            info, send, other_out = _lift.collect(rebuilt, key, out, mode, "nnx.remat",
                                                  _lift.ARGS_KWARGS)
            return _lift.StaticBox(info), send, other_out

        checkpointed = jax.checkpoint(pure, prevent_cse=prevent_cse, policy=policy)
        box, send, other_out = checkpointed(ext.values, ext.others)
        return _lift.apply_outputs(ext.plan, box.value, send, other_out)

    return wrapper


#: Alias of :func:`remat`, as in ``jax.checkpoint``.
checkpoint = remat
