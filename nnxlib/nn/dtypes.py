"""Dtype helpers shared by the layers: choose one computation dtype and cast to it.

A layer computes in ``dtype`` when one is given; otherwise in the common dtype of its
inputs and parameters, raised to at least ``float32`` when that common dtype is an
integer (a mean or a matrix product of integers is rarely what a layer wants).

>>> import jax.numpy as jnp
>>> from nnxlib.nn import dtypes
>>> x, w = dtypes.promote_dtype((jnp.ones(2, jnp.bfloat16), jnp.ones(2)), dtype=None)
>>> x.dtype, w.dtype
(dtype('float32'), dtype('float32'))
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

__all__ = ["canonicalize_dtype", "promote_dtype"]

T = TypeVar("T", bound=tuple)


def canonicalize_dtype(*args: Any, dtype: DTypeLike | None = None,
                       inexact: bool = True) -> Any:
    """Return the dtype that ``args`` should be computed in.

    ``dtype`` wins when given. Otherwise it is ``jnp.result_type`` of the non-None
    ``args``; with ``inexact=True`` an integer or boolean result is raised to a floating
    dtype (by promotion with ``float32``).

    Raises:
        ValueError: if ``inexact=True`` and the chosen dtype is not floating or complex.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnxlib.nn.dtypes import canonicalize_dtype
        >>> canonicalize_dtype(jnp.ones(2, jnp.int32))
        dtype('float32')
        >>> canonicalize_dtype(jnp.ones(2), dtype=jnp.bfloat16)
        dtype(bfloat16)
    """
    if dtype is None:
        # jnp.asarray returns a JAX array as it is: skip the call for those.
        present = [a if isinstance(a, jax.Array) else jnp.asarray(a)
                   for a in args if a is not None]
        dtype = jnp.result_type(*present)
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    dtype = jnp.dtype(dtype)
    if inexact and not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(
            f"Expected a floating or complex computation dtype, got {dtype}. Hint: pass "
            "dtype=jnp.float32 (or another inexact dtype) to the layer."
        )
    return dtype


def promote_dtype(args: T, /, *, dtype: DTypeLike | None = None, inexact: bool = True) -> T:
    """Cast every non-None array in the tuple ``args`` to one common dtype.

    The dtype is chosen by :func:`canonicalize_dtype`; None entries pass through, so a
    layer can hand over an optional bias unchanged. Layers accept a replacement for this
    function (argument ``promote_dtype``) with the same signature.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnxlib.nn.dtypes import promote_dtype
        >>> x, w, b = promote_dtype((jnp.ones(2), jnp.ones(2), None), dtype=jnp.float16)
        >>> x.dtype, w.dtype, b
        (dtype('float16'), dtype('float16'), None)
    """
    target = canonicalize_dtype(*args, dtype=dtype, inexact=inexact)
    return tuple(a if a is None or _is_array_of(a, target) else jnp.asarray(a, target)
                 for a in args)  # type: ignore


def _is_array_of(a: Any, dtype: Any) -> bool:
    """True when ``jnp.asarray(a, dtype)`` would return ``a`` itself: a JAX array of
    ``dtype`` that is not weakly typed (the cast would make a weak one strong)."""
    return (isinstance(a, jax.Array) and getattr(a, "weak_type", True) is False
            and a.dtype == dtype)
