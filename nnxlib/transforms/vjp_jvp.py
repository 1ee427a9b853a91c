"""``vjp`` and ``jvp`` over functions of modules.

Conventions (nnxlib's, documented here because ``flax.nnx`` 0.12 has several modes):

* **vjp** (with graph updates, the default): a module primal is differentiated with
  respect to its ``Param`` variables, like :func:`nnxlib.grad`; its cotangent is a
  ``State`` of those params (so for a scalar function ``vjp_fn(1.0)[0]`` equals
  ``nnx.grad(f)(model)``). Without graph updates it is ``jax.vjp``'s convention: a module
  of the same type holding the cotangents of every floating leaf. Array primals get
  array cotangents, exactly as in ``jax.vjp``.
* **jvp**: the tangent of a module primal is a ``State`` (or a module of the same
  structure, whose state is used, or ``None``). Its paths pick the leaves that move:
  leaves without a tangent, and leaves that are not floating point (RNG keys and counts),
  are held constant. ``jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))`` is a
  typical tangent.

In every case, state changed by the function (BatchNorm statistics, RNG counts, …) is
written back to the caller's modules, as in eager mode.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> out, vjp_fn = nnx.vjp(lambda m, x: m(x).sum(), model, jnp.ones((3, 2)))
    >>> m_ct, x_ct = vjp_fn(jnp.ones(()))
    >>> sorted(m_ct), x_ct.shape
    (['bias', 'kernel'], (3, 2))
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from nnxlib.filters import to_predicate
from nnxlib.graph.mode import Mode, resolve_mode
from nnxlib.transforms import _lift
from nnxlib.transforms._diff_layout import (
    _MISSING,
    _assemble,
    _is_inexact,
    _Layout,
    _pure_function,
)
from nnxlib.variables import Param

__all__ = ["vjp", "jvp"]


# ------------------------------------------------------------------------ vjp
def vjp(f: Callable[..., Any] | None = None, *primals: Any, has_aux: bool = False,
        reduce_axes: tuple = (), graph: bool | None = None,
        graph_updates: bool | None = None) -> Any:
    """``jax.vjp`` for functions of modules: ``(out, vjp_fn)`` or ``(out, vjp_fn, aux)``.

    ``vjp_fn(cotangent)`` returns one cotangent per primal: a ``State`` of the ``Param``
    cotangents for a module primal, an array (pytree) for an array primal (without graph
    updates, ``graph_updates=False`` or ``graph=False``: like ``jax.vjp`` of a pytree, a
    module of the same type holding the cotangents of all its floating leaves, float0
    zeros for integer ones). State the
    function changes is written back to the caller's modules. Without primals returns a
    function that takes them (``nnx.vjp(f)(model, x)``); usable as a decorator.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((4, 3))
        >>> y, vjp_fn = nnx.vjp(lambda m, x: m(x), model, x)
        >>> m_ct, x_ct = vjp_fn(jnp.ones_like(y))
        >>> grads = nnx.grad(lambda m: m(x).sum())(model)
        >>> bool(jnp.allclose(m_ct["kernel"][...], grads["kernel"][...]))
        True
    """
    mode = resolve_mode(graph, graph_updates)
    if f is None:
        return functools.partial(vjp, has_aux=has_aux, graph=mode.graph,
                                 graph_updates=mode.updates)
    if not primals:
        @functools.wraps(f)
        def wrapper(*args: Any) -> Any:
            return _vjp(f, args, has_aux, mode)

        return wrapper
    return _vjp(f, primals, has_aux, mode)


def _vjp(f: Callable, primals: tuple, has_aux: bool, mode: Mode) -> tuple:
    ext = _lift.extract(primals, mode, "nnx.vjp", "primals")
    layout = _Layout(primals, ext)
    values = ext.values
    if mode.updates:
        is_param = to_predicate(Param)
        diff = tuple(j for j, (path, leaf) in enumerate(zip(layout.paths, layout.template))
                     if is_param(path[1:], leaf))
    else:  # without graph updates: like jax.vjp of a pytree, every floating leaf
        diff = tuple(j for j, value in enumerate(values) if _is_inexact(value))
    pure = _pure_function(f, ext, diff, has_aux, "vjp", mode)

    out, pullback, (box, send, other_out) = jax.vjp(
        pure, [values[j] for j in diff], ext.others, has_aux=True)
    aux = _lift.apply_outputs(ext.plan, box.value, send, other_out)

    def vjp_fn(cotangent: Any) -> tuple:
        graph_cts, other_cts = pullback(cotangent)
        return _assemble(layout, dict(zip(diff, graph_cts)), other_cts,
                         shaped=not mode.updates)

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


# ------------------------------------------------------------------------ jvp
def jvp(f: Callable[..., Any] | None = None, primals: Any = _MISSING,
        tangents: Any = _MISSING, *, has_aux: bool = False, graph: bool | None = None,
        graph_updates: bool | None = None) -> Any:
    """``jax.jvp`` for functions of modules: ``(out, tangent_out)`` (``+ (aux,)``).

    ``primals`` and ``tangents`` are tuples with one entry per argument. The tangent of
    a module is a ``State`` (or a module of the same structure, or ``None``); leaves it
    leaves out, and non-float leaves, are held constant. Array primals need array
    tangents as in JAX. Without ``primals`` returns ``g(primals, tangents)``.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((1, 2))
        >>> direction = jax.tree.map(jnp.ones_like, nnx.state(model))
        >>> y, dy = nnx.jvp(lambda m, x: m(x), (model, x), (direction, jnp.zeros_like(x)))
        >>> float(dy[0, 0])                  # d/dt of x @ (W + t) + (b + t)
        3.0
    """
    mode = resolve_mode(graph, graph_updates)
    if f is None:
        return functools.partial(jvp, has_aux=has_aux, graph=mode.graph,
                                 graph_updates=mode.updates)
    if primals is _MISSING:
        @functools.wraps(f)
        def wrapper(primals: Any, tangents: Any) -> Any:
            return _jvp(f, primals, tangents, has_aux, mode)

        return wrapper
    return _jvp(f, primals, tangents, has_aux, mode)


def _jvp(f: Callable, primals: Any, tangents: Any, has_aux: bool, mode: Mode) -> tuple:
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; pass one "
            "tangent per primal (a State or None for a module)."
        )
    ext = _lift.extract(primals, mode, "nnx.jvp", "primals")
    layout = _Layout(primals, ext)
    flat_tangents: list = []
    for i, (treedef, tangent) in enumerate(zip(layout.arg_treedefs, tangents)):
        try:
            flat_tangents += treedef.flatten_up_to(tangent)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"jvp: the tangent for argument {i} does not match its primal's structure "
                f"{treedef} (modules shown as leaves; give a State or None for each "
                f"module): {error}"
            ) from None
    graph_tangents: dict = {}
    for p, r in layout.root_at.items():
        for j, value in layout.root_entries(r, flat_tangents[p], "jvp"):
            if _is_inexact(ext.values[j]):
                graph_tangents[j] = value
    diff = tuple(sorted(graph_tangents))
    other_tangents = [flat_tangents[p] for p in sorted(layout.other_index)]
    values = ext.values
    pure = _pure_function(f, ext, diff, has_aux, "jvp", mode)

    out, tangent_out, (box, send, other_out) = jax.jvp(
        pure, ([values[j] for j in diff], ext.others),
        ([graph_tangents[j] for j in diff], other_tangents), has_aux=True)
    aux = _lift.apply_outputs(ext.plan, box.value, send, other_out)
    return (out, tangent_out, aux) if has_aux else (out, tangent_out)
