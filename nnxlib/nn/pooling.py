"""Pooling over windows of channels-last inputs: ``pool``, ``avg_pool``, ``max_pool``,
``min_pool``.

Inputs are ``(*batch, *window_axes, features)``: the window covers the axes between
the batch axes and the last (feature) axis, one per entry of ``window_shape``; any
number of batch axes is accepted, including none.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
>>> nnx.max_pool(x, (2, 2), strides=(2, 2))[0, :, :, 0]
Array([[ 5.,  7.],
       [13., 15.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnxlib.nn._checks import config_error, input_error

__all__ = ["pool", "avg_pool", "max_pool", "min_pool"]

PoolPadding = str | Sequence[tuple[int, int]]


def _window_args(inputs: Any, window_shape: Sequence[int], strides: Sequence[int] | None,
                 padding: PoolPadding, name: str) -> tuple[tuple, tuple, Any, int]:
    """Validate and expand to full-rank window dims, strides and padding."""
    window = tuple(window_shape)
    rank = len(window)
    if not window or not all(isinstance(w, int) and w > 0 for w in window):
        raise config_error(name, "window_shape as a non-empty tuple of positive ints (one "
                           "per pooled axis)", repr(window_shape),
                           "use window_shape=(2, 2) to pool 2x2 patches of an image.")
    strides = (1,) * rank if strides is None else tuple(strides)
    if len(strides) != rank or not all(isinstance(s, int) and s > 0 for s in strides):
        raise config_error(name, f"strides as {rank} positive ints (one per window axis)",
                           repr(strides), f"pass strides={window} for non-overlapping "
                           "windows, or None for stride 1.")
    shape = jnp.shape(inputs)
    n_batch = len(shape) - rank - 1
    if n_batch < 0:
        raise input_error(name, f"inputs of rank at least {rank + 1} (*batch, {rank} "
                          "window axes, features)", f"shape {shape}",
                          "the last axis is the feature axis; add one with x[..., None].")
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            raise config_error(name, "padding 'SAME', 'VALID' or (low, high) pairs",
                               repr(padding), "use padding='SAME' to keep the size at "
                               "stride 1, 'VALID' for no padding.")
        pads: Any = padding.upper()
    else:
        try:
            pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
        except (TypeError, ValueError):
            pairs = ()
        if len(pairs) != rank:
            raise config_error(name, f"padding as a string or {rank} (low, high) pairs",
                               repr(padding), f"for example padding={[(1, 1)] * rank}.")
        pads = ((0, 0),) * n_batch + pairs + ((0, 0),)
    dims = (1,) * n_batch + window + (1,)
    return dims, (1,) * n_batch + strides + (1,), pads, n_batch


def pool(inputs: jax.Array, init: Any, reduce_fn: Callable[[Any, Any], Any],
         window_shape: Sequence[int], strides: Sequence[int] | None,
         padding: PoolPadding) -> jax.Array:
    """Reduce every window of ``inputs`` with ``reduce_fn``, starting from ``init``.

    A thin layer over ``lax.reduce_window`` for channels-last inputs. ``init`` should be
    the identity of ``reduce_fn`` (0 for ``lax.add``); padding entries take that value.

    Args:
        inputs: array ``(*batch, *window_axes, features)``.
        init: initial value of each reduction.
        reduce_fn: associative binary function, e.g. ``lax.add`` or ``lax.max``.
        window_shape: window size per window axis.
        strides: step per window axis (None: all 1).
        padding: ``'SAME'``, ``'VALID'``, or one ``(low, high)`` pair per window axis.

    Example:
        >>> import jax.numpy as jnp
        >>> from jax import lax
        >>> import nnxlib as nnx
        >>> nnx.pool(jnp.arange(4.0)[:, None], 0.0, lax.add, (2,), None, "VALID")[:, 0]
        Array([1., 3., 5.], dtype=float32)
    """
    dims, steps, pads, _ = _window_args(inputs, window_shape, strides, padding, "pool")
    return lax.reduce_window(inputs, init, reduce_fn, dims, steps, pads)


def _extreme(dtype: Any, low: bool) -> Any:
    """The identity of max (``low=True``) or min for ``dtype``, as a scalar of it."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.array(-np.inf if low else np.inf, dtype)
    if dtype == jnp.bool_:
        return np.array(not low)
    info = jnp.iinfo(dtype)
    return np.array(info.min if low else info.max, dtype)


def max_pool(inputs: jax.Array, window_shape: Sequence[int],
             strides: Sequence[int] | None = None, padding: PoolPadding = "VALID") -> jax.Array:
    """Maximum over each window (padding never wins: it counts as ``-inf``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.max_pool(jnp.array([[1.0], [3.0], [2.0]]), (2,))[:, 0]
        Array([3., 3.], dtype=float32)
    """
    dims, steps, pads, _ = _window_args(inputs, window_shape, strides, padding, "max_pool")
    return lax.reduce_window(inputs, _extreme(jnp.result_type(inputs), True), lax.max,
                             dims, steps, pads)


def min_pool(inputs: jax.Array, window_shape: Sequence[int],
             strides: Sequence[int] | None = None, padding: PoolPadding = "VALID") -> jax.Array:
    """Minimum over each window (padding counts as ``+inf``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.min_pool(jnp.array([[1.0], [3.0], [2.0]]), (2,))[:, 0]
        Array([1., 2.], dtype=float32)
    """
    dims, steps, pads, _ = _window_args(inputs, window_shape, strides, padding, "min_pool")
    return lax.reduce_window(inputs, _extreme(jnp.result_type(inputs), False), lax.min,
                             dims, steps, pads)


def avg_pool(inputs: jax.Array, window_shape: Sequence[int],
             strides: Sequence[int] | None = None, padding: PoolPadding = "VALID",
             count_include_pad: bool = True) -> jax.Array:
    """Mean over each window.

    With ``count_include_pad=True`` every window sum is divided by the window size
    (padding counts as zeros); with ``False`` by the number of real input entries in the
    window. Those counts depend only on shapes, so they are computed once, in NumPy,
    when the function is traced: the compiled program divides by a constant. A floating
    input keeps its dtype; integer inputs give float32.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> x = jnp.array([[2.0], [4.0], [6.0]])
        >>> nnx.avg_pool(x, (2,), padding="SAME")[:, 0]
        Array([3., 5., 3.], dtype=float32)
        >>> nnx.avg_pool(x, (2,), padding="SAME", count_include_pad=False)[:, 0]
        Array([3., 5., 6.], dtype=float32)
    """
    dims, steps, pads, n_batch = _window_args(inputs, window_shape, strides, padding,
                                              "avg_pool")
    dtype = jnp.result_type(inputs)
    out_dtype = dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32
    sums = lax.reduce_window(inputs, np.array(0, dtype), lax.add, dims, steps, pads)
    if count_include_pad:
        return sums / np.array(np.prod(window_shape), out_dtype)
    # Entries per window: the product over window axes of 1D counts (windows are boxes).
    shape = jnp.shape(inputs)
    full_pads = pads if not isinstance(pads, str) else lax.padtype_to_pads(
        shape, dims, steps, pads)
    counts = np.ones((), np.int64)
    for axis in range(n_batch, len(shape) - 1):
        (lo, hi), w, s, n = full_pads[axis], dims[axis], steps[axis], shape[axis]
        starts = np.arange(0, n + lo + hi - w + 1, s) - lo
        per_axis = np.minimum(starts + w, n) - np.maximum(starts, 0)
        counts = np.multiply.outer(counts, np.maximum(per_axis, 0))
    return sums / np.asarray(counts[..., None], out_dtype)
