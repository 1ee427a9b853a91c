"""A dense map over several input and output axes, as the attention projections need.

Written for ``MultiHeadAttention`` while the public ``LinearGeneral`` is developed on
another branch; it follows flax.nnx 0.12's ``LinearGeneral`` (same arguments, same
parameter shapes, same keys drawn in the same order), so swapping in the public class
changes no parameter and no number.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> from nnxlib.nn._linear_general import LinearGeneral
>>> LinearGeneral(4, (2, 3), rngs=nnx.Rngs(0))(jnp.ones((5, 4))).shape
(5, 2, 3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from nnxlib.errors import ShapeMismatchError
from nnxlib.module import Module
from nnxlib.nn import dtypes, initializers
from nnxlib.rngs import Rngs
from nnxlib.variables import Param

__all__ = ["LinearGeneral"]

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (int(x),) if isinstance(x, int) else tuple(int(i) for i in x)


def _init_as_matrix(init: Callable[..., Any], key: jax.Array, shape: tuple[int, ...],
                    n_out: int, dtype: DTypeLike) -> Any:
    """Initialise ``shape`` as the 2-D matrix (inputs, outputs) it acts as, then reshape.

    Fan-in scaled initializers (LeCun, He, ...) then see the true fan-in of the map.
    """
    matrix = (math.prod(shape[: len(shape) - n_out]), math.prod(shape[len(shape) - n_out:]))
    return jnp.reshape(init(key, matrix, dtype), shape)


class LinearGeneral(Module):
    """A learned linear map contracting the input ``axis`` (one or several axes).

    ``kernel`` has shape ``(*batch_sizes, *in_features, *out_features)`` and ``bias``
    ``(*batch_sizes, *out_features)``. The kernel is initialised as the matrix
    ``(prod(in_features), prod(out_features))`` and reshaped, so fan-in scaled
    initializers see the whole input size. ``batch_axis`` maps leading input axes to
    their sizes: those axes are batched (one kernel per index), not contracted.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from nnxlib.nn._linear_general import LinearGeneral
        >>> merge_heads = LinearGeneral((2, 3), 5, axis=(-2, -1), rngs=nnx.Rngs(0))
        >>> merge_heads.kernel.shape
        (2, 3, 5)
        >>> merge_heads(jnp.ones((7, 2, 3))).shape
        (7, 5)
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        axis: int | Sequence[int] = -1,
        batch_axis: Mapping[int, int] = MappingProxyType({}),
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        kernel_init: Callable[..., Any] = initializers.lecun_normal(),
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        precision: Any = None,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        dot_general: Callable[..., jax.Array] | None = None,
        dot_general_cls: Any = None,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        self.in_features = _as_tuple(in_features)
        self.out_features = _as_tuple(out_features)
        self.axis = _as_tuple(axis)
        self.batch_axis = tuple(sorted(dict(batch_axis).items()))
        if len(self.in_features) != len(self.axis):
            raise ValueError(
                f"LinearGeneral: in_features {self.in_features} and axis {self.axis} must "
                "have the same length (one size per contracted axis). Hint: pass "
                "in_features=(a, b) together with axis=(-2, -1)."
            )
        batch_dims = [d for d, _ in self.batch_axis]
        if batch_dims != list(range(len(batch_dims))):
            raise ValueError(
                f"LinearGeneral: batch_axis keys {batch_dims} must be the leading axes "
                "0, 1, ..., n-1."
            )
        batch_sizes = tuple(size for _, size in self.batch_axis)
        n_out = len(self.out_features)
        kernel_shape = (*batch_sizes, *self.in_features, *self.out_features)
        self.kernel = Param(
            _init_as_matrix(kernel_init, rngs.params(), kernel_shape, n_out, param_dtype),
            **kernel_metadata,
        )
        self.bias: Param | None = None
        if use_bias:
            bias_shape = (*batch_sizes, *self.out_features)
            flat = bias_init(rngs.params(), (math.prod(bias_shape),), param_dtype)
            self.bias = Param(jnp.reshape(flat, bias_shape), **bias_metadata)
        self.use_bias = use_bias
        self.dtype, self.param_dtype = dtype, param_dtype
        self.precision, self.promote_dtype = precision, promote_dtype
        self.dot_general, self.dot_general_cls = dot_general, dot_general_cls
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Contract ``inputs`` over ``axis``; returns ``(*other_axes, *out_features)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> from nnxlib.nn._linear_general import LinearGeneral
            >>> LinearGeneral(2, 3, rngs=nnx.Rngs(0))(jnp.ones((4, 2))).shape
            (4, 3)
        """
        ndim = jnp.ndim(inputs)
        axis = tuple(a % ndim for a in self.axis)
        found = tuple(jnp.shape(inputs)[a] for a in axis)
        if found != self.in_features:
            raise ShapeMismatchError(
                f"LinearGeneral: expected inputs of size {self.in_features} on axes "
                f"{self.axis} (the kernel's input axes), got shape {jnp.shape(inputs)}. "
                "Hint: check the previous layer's output size."
            )
        batch_axis = tuple(d for d, _ in self.batch_axis)
        n_batch = len(batch_axis)
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
        if self.dot_general_cls is not None:
            dot_general = self.dot_general_cls()
        else:
            dot_general = self.dot_general if self.dot_general is not None else lax.dot_general
        # Optional keywords only when set: custom dot_generals written against the older
        # lax signature (without out_sharding) keep working.
        extra: dict[str, Any] = {}
        if out_sharding is not None:
            extra["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            extra["preferred_element_type"] = self.preferred_element_type
        contract = tuple(range(n_batch, n_batch + len(axis)))
        y = dot_general(x, kernel, ((axis, contract), (batch_axis, tuple(range(n_batch)))),
                        precision=self.precision, **extra)
        if bias is not None:
            # dot_general puts batch axes first, then the free input axes, then outputs;
            # the bias has the batch axes and the outputs.
            free = ndim - len(axis) - n_batch
            bias = jnp.reshape(bias, (*bias.shape[:n_batch], *(1,) * free, *self.out_features))
            y = y + bias
        return y
