"""``checkify``: functionalised runtime checks for functions of modules.

A thin layer over ``jax.experimental.checkify.checkify``: the wrapped function returns
``(error, output)`` instead of raising, so checks work under ``jit``. Module state
changed by the function is written back to the caller's objects, also when a check
failed (the function ran to the end; the error is only reported).

Example:
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify as jax_checkify
    >>> import nnxlib as nnx
    >>> def safe_log(x):
    ...     jax_checkify.check(jnp.all(x > 0), "log of a non-positive number")
    ...     return jnp.log(x)
    >>> err, y = nnx.checkify(safe_log)(jnp.array([1.0, -1.0]))
    >>> err.get()
    'log of a non-positive number (`check` failed)'
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from jax.experimental import checkify as jax_checkify

from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _lift
from nnxlib.transforms._arguments import check_function

__all__ = ["checkify"]


def checkify(f: Callable[..., Any], errors: frozenset = jax_checkify.user_checks,
             graph: bool | None = None, graph_updates: bool | None = None
             ) -> Callable[..., tuple]:
    """Wrap ``f`` so it returns ``(error, output)`` and modules' state changes persist.

    ``errors`` picks the error categories to check, as in JAX (``checks.user_checks``,
    ``checkify.float_checks``, ``checkify.index_checks``, ``checkify.all_checks``, …).

    Example:
        >>> import jax.numpy as jnp
        >>> from jax.experimental import checkify as jax_checkify
        >>> import nnxlib as nnx
        >>> class Counter(nnx.Module):
        ...     def __init__(self):
        ...         self.calls = nnx.Variable(jnp.array(0))
        >>> def step(counter, x):
        ...     counter.calls[...] += 1
        ...     jax_checkify.check(x >= 0, "x must be >= 0, got {x}", x=x)
        ...     return x * 2
        >>> counter = Counter()
        >>> err, y = nnx.jit(nnx.checkify(step))(counter, jnp.array(-3))
        >>> err.get(), int(y), int(counter.calls[...])
        ('x must be >= 0, got -3 (`check` failed)', -6, 1)
    """
    check_function(f, "nnx.checkify")
    mode = resolve_mode(graph, graph_updates)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> tuple:
        ext = _lift.extract((args, kwargs), mode, "nnx.checkify", _lift.ARGS_KWARGS)
        key = ext.key

        def pure(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            call_args, call_kwargs = rebuilt.tree
            out = f(*call_args, **call_kwargs)
            info, send, other_out = _lift.collect(rebuilt, key, out, mode, "nnx.checkify",
                                                  _lift.ARGS_KWARGS)
            return _lift.StaticBox(info), send, other_out

        error, (box, send, other_out) = jax_checkify.checkify(pure, errors=errors)(
            ext.values, ext.others)
        return error, _lift.apply_outputs(ext.plan, box.value, send, other_out)

    return wrapper
