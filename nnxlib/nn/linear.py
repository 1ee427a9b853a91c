"""Dense layers.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 3))).shape
(2, 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from nnxlib.module import Module
from nnxlib.nn import dtypes, initializers
from nnxlib.rngs import Rngs
from nnxlib.variables import Param

__all__ = ["Linear"]

#: Kernel initializer used when none is given: LeCun normal (truncated, fan-in scaled).
default_kernel_init = initializers.lecun_normal()
#: Bias initializer used when none is given: zeros.
default_bias_init = initializers.zeros_init()

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class Linear(Module):
    """A learned affine map ``y = x @ kernel + bias`` over the last axis of ``x``.

    ``kernel`` has shape ``(in_features, out_features)`` and ``bias`` shape
    ``(out_features,)``; both are :class:`~nnxlib.Param` (``bias`` is None when
    ``use_bias=False``). Parameters are created in ``param_dtype`` from keys drawn from
    the ``params`` stream of ``rngs`` (kernel first, then bias). The computation runs in
    ``dtype`` when given, else in the promoted dtype of inputs and parameters.

    Args:
        in_features: size of the last axis of the input.
        out_features: size of the last axis of the output.
        use_bias: whether to add a learned bias.
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        precision: passed to ``dot_general``.
        kernel_init: initializer ``(key, shape, dtype) -> array`` for the kernel.
        bias_init: initializer for the bias.
        dot_general: the contraction function (``lax.dot_general`` signature), e.g. to
            plug in quantised matmuls.
        promote_dtype: ``promote_dtype((x, kernel, bias), dtype=...)`` casting function.
        preferred_element_type: accumulation/output dtype hint for ``dot_general``.
        rngs: the random streams; ``rngs.params()`` is called for each parameter.
        kernel_metadata: extra metadata for the kernel variable (e.g. sharding).
        bias_metadata: extra metadata for the bias variable.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.Linear(3, 2, use_bias=False, rngs=nnx.Rngs(0))
        >>> layer.kernel.shape, layer.bias
        ((3, 2), None)
        >>> layer(jnp.ones((5, 3))).shape
        (5, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        dot_general: Callable[..., jax.Array] = lax.dot_general,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        self.kernel = Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype),
            **kernel_metadata,
        )
        self.bias: Param | None = None
        if use_bias:
            self.bias = Param(
                bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata
            )
        # Static configuration (lands in the GraphDef), grouped by what it controls.
        self.in_features, self.out_features = in_features, out_features
        self.use_bias = use_bias
        self.dtype, self.param_dtype = dtype, param_dtype
        self.promote_dtype, self.preferred_element_type = promote_dtype, preferred_element_type
        self.dot_general, self.precision = dot_general, precision

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Apply the layer to ``inputs`` of shape ``(..., in_features)``.

        ``out_sharding`` is forwarded to ``dot_general`` (explicit-sharding meshes).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> layer = nnx.Linear(2, 2, kernel_init=nnx.initializers.ones, rngs=nnx.Rngs(0))
            >>> layer(jnp.array([1.0, 2.0]))
            Array([3., 3.], dtype=float32)
        """
        # Compared with the kernel as it is (not in_features): inside shard_map the
        # kernel and the inputs are both per-device shards.
        expected = self.kernel.shape[:1]
        if jnp.shape(inputs)[-1:] != expected:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): expected inputs whose "
                f"last axis has {expected[0]} entries (the kernel's first axis), got shape "
                f"{jnp.shape(inputs)}. Hint: check the previous layer's output size, or "
                "reshape the inputs so that features come last."
            )
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
        # Optional keywords are only passed when set, so a custom dot_general written
        # against the older lax signature (no out_sharding) keeps working.
        extra: dict[str, Any] = {}
        if out_sharding is not None:
            extra["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            extra["preferred_element_type"] = self.preferred_element_type
        y = self.dot_general(
            x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=self.precision, **extra
        )
        if bias is not None:
            y = y + bias
        return y
