"""Parameter initializers, under the names ``flax.nnx.initializers`` uses.

An initializer is a function ``init(key, shape, dtype) -> Array``. Almost all of them are
JAX's own (:mod:`jax.nn.initializers`), re-exported here unchanged, so
``nnx.initializers.lecun_normal is jax.nn.initializers.lecun_normal``. Most are factories:
call them with their settings first, then call the result with a key and a shape.

>>> import jax, jax.numpy as jnp
>>> from nnxlib.nn import initializers
>>> init = initializers.lecun_normal()
>>> init(jax.random.key(0), (3, 4)).shape
(3, 4)
>>> initializers.zeros_init()(jax.random.key(0), (2,), jnp.float32)
Array([0., 0.], dtype=float32)

Two additions that JAX lacks:

* :func:`ones_init` and :func:`zeros_init`, factories returning :func:`ones` and
  :func:`zeros` (so every initializer can be spelled as a factory call);
* :func:`nd_dense_init`, a variance-scaling initializer that is told which axes are the
  inputs and outputs when it is *called*, not when it is made.

``Initializer`` is JAX's protocol for the ``init(key, shape, dtype)`` signature, and
``DtypeLikeInexact`` is the type of the ``dtype`` argument; both are for annotations.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.nn.initializers import (
    Initializer,
    constant,
    delta_orthogonal,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    truncated_normal,
    uniform,
    variance_scaling,
    xavier_normal,
    xavier_uniform,
    zeros,
)
from jax.typing import DTypeLike as DtypeLikeInexact

__all__ = [
    "DtypeLikeInexact",
    "Initializer",
    "constant",
    "delta_orthogonal",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "nd_dense_init",
    "normal",
    "ones",
    "ones_init",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
    "zeros_init",
]

_MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")

Axes = int | Sequence[int]


def ones_init() -> Initializer:
    """Return the initializer that fills an array with ones (that is, :func:`ones`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnxlib.nn.initializers import ones_init
        >>> ones_init()(jax.random.key(0), (2, 2), jnp.float32)
        Array([[1., 1.],
               [1., 1.]], dtype=float32)
    """
    return ones


def zeros_init() -> Initializer:
    """Return the initializer that fills an array with zeros (that is, :func:`zeros`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnxlib.nn.initializers import zeros_init
        >>> zeros_init()(jax.random.key(0), (3,), jnp.int32)
        Array([0, 0, 0], dtype=int32)
    """
    return zeros


def nd_dense_init(scale: float, mode: str, distribution: str):
    """Variance-scaling initializer whose input and output axes are chosen per call.

    :func:`variance_scaling` fixes ``in_axis`` and ``out_axis`` when the initializer is
    made. A layer whose kernel has several input or output axes (a general dense layer,
    multi-head attention projections) only knows them when it builds the kernel, so the
    initializer returned here takes them as call arguments::

        init(key, shape, dtype=jnp.float32, in_axis=-2, out_axis=-1, batch_axis=())

    Each axis argument is an int or a tuple of ints. The fan-in is the product of the
    input-axis sizes, the fan-out that of the output-axis sizes, both multiplied by the
    sizes of every remaining non-batch axis (the receptive field). Samples have mean zero
    and variance ``scale / n`` with ``n`` chosen by ``mode``, exactly as
    ``variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis)`` would
    give: the call delegates to it, so the two agree bit for bit.

    Args:
        scale: positive scaling factor of the variance.
        mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``.
        distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.

    Returns:
        The initializer function described above.

    Raises:
        ValueError: if ``mode`` or ``distribution`` is not one of the names above.

    Example:
        >>> import jax
        >>> from nnxlib.nn.initializers import nd_dense_init
        >>> init = nd_dense_init(1.0, "fan_in", "normal")
        >>> # A kernel mapping inputs of shape (8, 16) to 4 heads of size 32.
        >>> kernel = init(jax.random.key(0), (8, 16, 4, 32), in_axis=(0, 1), out_axis=(2, 3))
        >>> kernel.shape, kernel.dtype
        ((8, 16, 4, 32), dtype('float32'))
        >>> round(float(kernel.var() * 8 * 16), 1)  # variance is 1 / fan_in
        1.0
    """
    if mode not in _MODES:
        raise ValueError(f"nd_dense_init: mode must be one of {_MODES}, got {mode!r}.")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"nd_dense_init: distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}."
        )

    def init(
        key: jax.Array,
        shape: Sequence[int],
        dtype: DtypeLikeInexact = jnp.float32,
        in_axis: Axes = -2,
        out_axis: Axes = -1,
        batch_axis: Axes = (),
    ) -> jax.Array:
        scaled = variance_scaling(
            scale, mode, distribution, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
        )
        return scaled(key, shape, dtype)

    return init
