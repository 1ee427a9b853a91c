"""Activation functions (JAX's own, under the ``flax.nnx`` names) and ``PReLU``.

Every function here *is* the JAX function (``nnx.relu is jax.nn.relu``; ``nnx.tanh is
jnp.tanh``), so there is nothing to keep in sync.

>>> import jax, jax.numpy as jnp
>>> import nnxlib as nnx
>>> nnx.relu is jax.nn.relu
True
>>> nnx.relu(jnp.array([-1.0, 2.0]))
Array([0., 2.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from nnxlib.module import Module
from nnxlib.nn import dtypes
from nnxlib.variables import Param

# Aliases, not wrappers: each name is the JAX function object itself.
celu = jax.nn.celu
elu = jax.nn.elu
gelu = jax.nn.gelu
glu = jax.nn.glu
hard_sigmoid = jax.nn.hard_sigmoid
hard_silu = jax.nn.hard_silu
hard_swish = jax.nn.hard_swish
hard_tanh = jax.nn.hard_tanh
identity = jax.nn.identity
leaky_relu = jax.nn.leaky_relu
log_sigmoid = jax.nn.log_sigmoid
log_softmax = jax.nn.log_softmax
logsumexp = jax.nn.logsumexp
one_hot = jax.nn.one_hot
relu = jax.nn.relu
relu6 = jax.nn.relu6
selu = jax.nn.selu
sigmoid = jax.nn.sigmoid
silu = jax.nn.silu
soft_sign = jax.nn.soft_sign
softmax = jax.nn.softmax
softplus = jax.nn.softplus
standardize = jax.nn.standardize
swish = jax.nn.swish
tanh = jnp.tanh

__all__ = (
    "PReLU celu elu gelu glu hard_sigmoid hard_silu hard_swish hard_tanh identity "
    "leaky_relu log_sigmoid log_softmax logsumexp one_hot relu relu6 selu sigmoid silu "
    "soft_sign softmax softplus standardize swish tanh"
).split()


class PReLU(Module):
    """Leaky ReLU with a learned negative slope: ``x if x >= 0 else slope * x``.

    The slope is a scalar :class:`~nnxlib.Param` ``negative_slope`` starting at
    ``negative_slope_init``; no random keys are needed.

    Args:
        negative_slope_init: initial slope for negative inputs.
        dtype: computation dtype (default: the input's dtype).
        param_dtype: dtype of ``negative_slope``.
        promote_dtype: casting function for ``(inputs, negative_slope)`` when ``dtype``
            is given.
        negative_slope_metadata: extra metadata of ``negative_slope``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> act = nnx.PReLU(0.5)
        >>> act(jnp.array([-2.0, 3.0]))
        Array([-1.,  3.], dtype=float32)
    """

    def __init__(
        self,
        negative_slope_init: float = 0.01,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        negative_slope_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.negative_slope = Param(
            jnp.asarray(negative_slope_init, param_dtype), **negative_slope_metadata
        )
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Apply the activation.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.PReLU()(jnp.array([-100.0])).round(3)
            Array([-1.], dtype=float32)
        """
        slope = self.negative_slope[...]
        if self.dtype is None:
            # Without a dtype the input's dtype wins (a bf16 activation stays bf16).
            slope = jnp.asarray(slope, jnp.result_type(inputs))
        else:
            inputs, slope = self.promote_dtype((inputs, slope), dtype=self.dtype)
        return jnp.where(inputs >= 0, inputs, slope * inputs)
