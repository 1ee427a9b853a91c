"""``cached_partial`` and ``jit_partial``: bind modules to a transformed function once.

In ``flax.nnx`` these exist to skip the per-call walk of the bound modules' graphs. In
nnxlib every transform already keeps the split plan of a module cached on the module
(re-walked only after a structural change), so binding is a plain partial application
with the same meaning: the bound objects are passed by reference on every call, state
changes made by the function are visible on them, and, unlike flax, structural changes
(new attributes) are allowed and simply take the slower general path once.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> @nnx.jit
    ... def shift(model, x):
    ...     model.bias[...] += x
    ...     return model.bias[...]
    >>> step = nnx.cached_partial(shift, model)
    >>> _ = step(1.0); step(1.0)
    Array([2., 2.], dtype=float32)
    >>> model.bias[...]
    Array([2., 2.], dtype=float32)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from nnxlib.graph import check_mode
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms.jit import jit

__all__ = ["cached_partial", "jit_partial", "CachedPartial"]


class CachedPartial:
    """``f`` with leading arguments bound; made by :func:`cached_partial`.

    Example:
        >>> import nnxlib as nnx
        >>> add = nnx.cached_partial(lambda a, b: a + b, 1)
        >>> add(2), add.args
        (3, (1,))
    """

    def __init__(self, func: Callable[..., Any], *args: Any):
        self.func = func
        self.args = args
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*self.args, *args, **kwargs)

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        """``func.trace`` (an ``nnx.jit`` function's) with the bound arguments first; its
        compiled program takes the remaining arguments only.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> double = nnx.jit_partial(lambda k, x: k * x, 2.0)
            >>> float(double.trace(jnp.ones(())).lower().compile()(jnp.ones(())))
            2.0
        """
        return self.func.trace(*self.args, *args, **kwargs).with_bound_args(self.args)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """``func.lower`` with the bound arguments first (see :meth:`trace`).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> double = nnx.jit_partial(lambda k, x: k * x, 2.0)
            >>> float(double.lower(jnp.ones(())).compile()(jnp.full((), 3.0)))
            6.0
        """
        return self.func.lower(*self.args, *args, **kwargs).with_bound_args(self.args)

    def __repr__(self) -> str:
        return f"CachedPartial({self.func!r}, {len(self.args)} bound)"


def cached_partial(f: Callable[..., Any], *cached_args: Any, graph: bool | None = None,
                   graph_updates: bool | None = None) -> CachedPartial:
    """Bind ``cached_args`` (typically a model and its optimizer) as ``f``'s first
    arguments; call the result with the remaining ones.

    ``f`` is usually a transformed function (``nnx.jit(train_step)``). Mutations made by
    ``f`` are visible on the bound objects after every call.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Counter(nnx.Module):
        ...     def __init__(self):
        ...         self.n = nnx.Variable(jnp.array(0))
        >>> counter = Counter()
        >>> step = nnx.cached_partial(nnx.jit(lambda c, k: c.n.__iadd__(k)), counter)
        >>> for k in range(4):
        ...     _ = step(k)
        >>> int(counter.n[...])
        6
    """
    check_mode(cached_args, resolve_mode(graph, graph_updates).graph, "nnx.cached_partial",
               "args")
    return CachedPartial(f, *cached_args)


def jit_partial(fun: Callable[..., Any], *partial_args: Any, in_shardings: Any = None,
                out_shardings: Any = None, static_argnums: Any = None,
                static_argnames: Any = None, donate_argnums: Any = None,
                donate_argnames: Any = None, keep_unused: bool = False,
                device: Any = None, backend: Any = None, inline: bool = False,
                graph: bool | None = None, graph_updates: bool | None = None
                ) -> CachedPartial:
    """``nnx.jit(fun, **options)`` with ``partial_args`` bound as its first arguments.

    Argument numbers in ``in_shardings``, ``static_argnums`` and ``donate_argnums``
    count ``fun``'s own positional arguments, bound ones first. State changes are
    written back to the bound objects after each call.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        >>> def train_step(model, optimizer, x, y):
        ...     loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
        ...     loss, grads = nnx.value_and_grad(loss_fn)(model)
        ...     optimizer.update(model, grads)
        ...     return loss
        >>> step = nnx.jit_partial(train_step, model, optimizer)
        >>> x, y = jnp.ones((4, 2)), jnp.ones((4, 3))
        >>> bool(step(x, y) > step(x, y)), int(optimizer.step[...])
        (True, 2)
    """
    check_mode(partial_args, resolve_mode(graph, graph_updates).graph, "nnx.jit_partial",
               "args")
    jitted = jit(fun, in_shardings=in_shardings, out_shardings=out_shardings,
                 static_argnums=static_argnums, static_argnames=static_argnames,
                 donate_argnums=donate_argnums, donate_argnames=donate_argnames,
                 keep_unused=keep_unused, device=device, backend=backend, inline=inline,
                 graph=graph, graph_updates=graph_updates)
    return CachedPartial(jitted, *partial_args)
