"""Dense layers: ``Linear``, ``LinearGeneral`` (several axes in and out), ``Einsum``.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 3))).shape
(2, 4)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from nnxlib.module import Module, first_from
from nnxlib.nn import dtypes, initializers
from nnxlib.nn._checks import check_last_axis, config_error, input_error, layer_text
from nnxlib.rngs import Rngs
from nnxlib.variables import Param, VariableMetadata

__all__ = ["Linear", "LinearGeneral", "Einsum"]

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
        check_last_axis(
            layer_text(type(self).__name__, self.in_features, self.out_features), inputs,
            self.kernel.shape[0], "the kernel's first axis",
            "check the previous layer's output size, or reshape the inputs so that "
            "features come last.")
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


def _as_tuple(value: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Iterable) else (value,)


def _reshaped_init(init: Callable[..., Any], flat: tuple[int, ...], shape: tuple[int, ...]
                   ) -> Callable[..., Any]:
    """``init`` drawn at the 2D (or 1D) ``flat`` shape, then reshaped to ``shape``.

    Fan-in/fan-out scaled initializers then see the true fan-in (all contracted axes
    together) instead of guessing from the last two axes; flax draws the same way, which
    keeps the parameters of a seed identical.
    """
    def draw(key: jax.Array, _shape: Any, dtype: DTypeLike) -> Any:
        value = init(key, flat, dtype)
        if isinstance(value, VariableMetadata):
            return VariableMetadata(jnp.reshape(value.raw_value, shape), metadata=value.metadata)
        return jnp.reshape(value, shape)

    return draw


class LinearGeneral(Module):
    """A linear map that contracts several input axes and produces several output axes.

    ``kernel`` has shape ``(*batch_sizes, *in_features, *out_features)``: the input axes
    listed in ``axis`` (sizes ``in_features``) are contracted, ``out_features`` axes are
    appended at the end of the output, and the axes in ``batch_axis`` (leading input
    axes, ``{axis: size}``) get one kernel each (a batched matmul). A multi-head
    attention projection ``(batch, length, embed) -> (batch, length, heads, head_dim)``
    is ``LinearGeneral(embed, (heads, head_dim))``.

    The kernel (and bias) are initialised as one 2D ``(fan_in, fan_out)`` matrix (1D for
    the bias) and reshaped, so scaled initializers use the full contracted size.

    Args:
        in_features: size(s) of the contracted input axes.
        out_features: size(s) of the produced output axes.
        axis: the contracted input axes (same length as ``in_features``).
        batch_axis: ``{axis: size}`` of leading input axes with their own kernels; the
            axes must be ``0, 1, ...``.
        use_bias: add a learned bias of shape ``(*batch_sizes, *out_features)``.
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        kernel_init: initializer of the kernel (called with the flat 2D shape).
        bias_init: initializer of the bias (called with the flat 1D shape).
        precision: passed to ``dot_general``.
        promote_dtype: casting function for ``(inputs, kernel, bias)``.
        dot_general: the contraction function (default ``lax.dot_general``).
        dot_general_cls: a class whose instances are contraction functions; one is made
            per call (takes precedence over ``dot_general``).
        preferred_element_type: accumulation/output dtype hint for ``dot_general``.
        rngs: the random streams.
        kernel_metadata: extra metadata of ``kernel``.
        bias_metadata: extra metadata of ``bias``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> heads = nnx.LinearGeneral(8, (2, 4), rngs=nnx.Rngs(0))
        >>> heads(jnp.ones((3, 5, 8))).shape
        (3, 5, 2, 4)
        >>> merge = nnx.LinearGeneral((2, 4), 8, axis=(-2, -1), rngs=nnx.Rngs(0))
        >>> merge(jnp.ones((3, 5, 2, 4))).shape
        (3, 5, 8)
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        axis: int | Sequence[int] = -1,
        batch_axis: Mapping[int, int] = _NO_METADATA,
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        precision: Any = None,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        dot_general: Callable[..., jax.Array] | None = None,
        dot_general_cls: Any = None,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        self.in_features, self.out_features = _as_tuple(in_features), _as_tuple(out_features)
        self.axis = _as_tuple(axis)
        self.batch_axis = MappingProxyType(dict(batch_axis))
        name = layer_text("LinearGeneral", in_features, out_features)
        if len(self.in_features) != len(self.axis):
            raise config_error(name, f"one contracted axis per in_features entry "
                               f"({len(self.in_features)})", f"axis={axis!r}",
                               "pass axis=(-2, -1) for in_features=(a, b).")
        if sorted(self.batch_axis) != list(range(len(self.batch_axis))):
            raise config_error(name, "batch_axis keys 0, 1, ... (leading input axes)",
                               f"{sorted(self.batch_axis)}",
                               "move the batched axes to the front of the input.")
        batch_shape = tuple(self.batch_axis.values())
        fan_in = math.prod(batch_shape) * math.prod(self.in_features)
        fan_out = math.prod(self.out_features)
        kernel_shape = (*batch_shape, *self.in_features, *self.out_features)
        draw_kernel = _reshaped_init(kernel_init, (fan_in, fan_out), kernel_shape)
        self.kernel = Param(draw_kernel(rngs.params(), kernel_shape, param_dtype),
                            **kernel_metadata)
        self.bias: Param | None = None
        if use_bias:
            bias_shape = (*batch_shape, *self.out_features)
            draw_bias = _reshaped_init(bias_init, (math.prod(bias_shape),), bias_shape)
            self.bias = Param(draw_bias(rngs.params(), bias_shape, param_dtype),
                              **bias_metadata)
        self.use_bias = use_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.dot_general, self.dot_general_cls = dot_general, dot_general_cls
        self.promote_dtype, self.preferred_element_type = promote_dtype, preferred_element_type

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Contract ``inputs`` over ``axis``; output ``(*other input axes, *out_features)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> per_head = nnx.LinearGeneral(3, 2, batch_axis={0: 4}, rngs=nnx.Rngs(0))
            >>> per_head.kernel.shape, per_head(jnp.ones((4, 7, 3))).shape
            ((4, 3, 2), (4, 7, 2))
        """
        ndim = jnp.ndim(inputs)
        n_batch = len(self.batch_axis)
        self._check_inputs(jnp.shape(inputs))
        axis = tuple(sorted(a % ndim for a in self.axis))
        batch_axes = tuple(range(n_batch))
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
        if self.dot_general_cls is not None:
            contract = self.dot_general_cls()
        else:
            contract = self.dot_general or lax.dot_general
        extra: dict[str, Any] = {}
        if out_sharding is not None:
            extra["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            extra["preferred_element_type"] = self.preferred_element_type
        kernel_in = tuple(range(n_batch, n_batch + len(axis)))
        y = contract(x, kernel, ((axis, kernel_in), (batch_axes, batch_axes)),
                     precision=self.precision, **extra)
        if bias is not None:
            # Output: (*batch, *free input axes, *out_features); the bias has no entry
            # for the free axes.
            n_free = ndim - n_batch - len(axis)
            if n_batch:
                bias = jnp.reshape(bias, (*bias.shape[:n_batch], *(1,) * n_free,
                                          *bias.shape[n_batch:]))
            y = y + bias
        return y

    def _check_inputs(self, shape: tuple[int, ...]) -> None:
        name = layer_text("LinearGeneral", self.in_features, self.out_features,
                          axis=self.axis)
        n_batch = len(self.batch_axis)
        # Compared with the kernel as it is (per-device inside shard_map).
        want = dict(zip(range(n_batch), self.kernel.shape[:n_batch]))
        sizes = self.kernel.shape[n_batch:n_batch + len(self.axis)]
        if any(not -len(shape) <= a < len(shape) for a in self.axis):
            raise input_error(name, f"inputs with axes {self.axis}", f"shape {shape}",
                              "add the missing axes or change axis=.")
        axes = [a % len(shape) for a in self.axis]
        want.update(zip(axes, sizes))
        if len(set(axes) | set(range(n_batch))) != len(axes) + n_batch:
            raise input_error(name, "contracted axes distinct from the batch axes "
                              f"{tuple(range(n_batch))}", f"axes {tuple(axes)} of shape "
                              f"{shape}", "the batch axes lead; contract later axes.")
        bad = {a: n for a, n in want.items() if shape[a] != n}
        if bad:
            raise input_error(
                name, "sizes " + ", ".join(f"{n} on axis {a}" for a, n in want.items()),
                f"shape {shape}", "axis= picks the contracted input axes, whose sizes must "
                "be in_features (and batch_axis sizes on the leading axes).")


def _operand_letters(spec: str, ndim: int, ellipsis: str) -> str:
    """``spec`` with ``...`` replaced by the last ``ndim - explicit`` letters of
    ``ellipsis`` (broadcast dims align on the right, as in NumPy)."""
    if "..." not in spec:
        return spec
    n = ndim - (len(spec) - 3)
    return spec.replace("...", ellipsis[len(ellipsis) - n:] if n > 0 else "")


class Einsum(Module):
    """A learned linear map written as an einsum: ``einsum(einsum_str, inputs, kernel)``.

    ``einsum_str`` names the axes of the input (first operand) and of the kernel (second
    operand), e.g. ``'btd,dnh->btnh'`` for a per-head projection; it must be explicit
    (``->``) and have exactly two operands. It may be given here or at call time. The
    optional bias of ``bias_shape`` is added to the output, aligned with the kernel's
    axes that the output keeps.

    Args:
        einsum_str: the equation (spaces are ignored); None to pass it at each call.
        kernel_shape: shape of ``kernel``.
        bias_shape: shape of ``bias`` (the output axes it covers); None for no bias.
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        precision: passed to ``einsum_op``.
        kernel_init: initializer of the kernel.
        bias_init: initializer of the bias.
        promote_dtype: casting function for ``(inputs, kernel, bias)``.
        einsum_op: the einsum function (``jnp.einsum``'s signature).
        preferred_element_type: accumulation/output dtype hint.
        rngs: the random streams.
        kernel_metadata: extra metadata of ``kernel``.
        bias_metadata: extra metadata of ``bias``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> proj = nnx.Einsum("btd,dnh->btnh", (6, 2, 3), (2, 3), rngs=nnx.Rngs(0))
        >>> proj(jnp.ones((4, 5, 6))).shape
        (4, 5, 2, 3)
    """

    def __init__(
        self,
        einsum_str: str | None,
        kernel_shape: Sequence[int],
        bias_shape: Sequence[int] | None = None,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        einsum_op: Callable[..., jax.Array] = jnp.einsum,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        if einsum_str is not None:
            einsum_str = self._checked(einsum_str, kernel_shape)
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype),
                            **kernel_metadata)
        self.bias: Param | None = None
        if bias_shape is not None:
            self.bias = Param(bias_init(rngs.params(), bias_shape, param_dtype),
                              **bias_metadata)
        self.einsum_str, self.kernel_shape, self.bias_shape = einsum_str, kernel_shape, bias_shape
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.promote_dtype, self.einsum_op = promote_dtype, einsum_op
        self.preferred_element_type = preferred_element_type

    @staticmethod
    def _checked(einsum_str: str, kernel_shape: Sequence[int]) -> str:
        """The equation without spaces, after checking it has the form ``x,k->y``."""
        equation = einsum_str.replace(" ", "")
        name = layer_text("Einsum", einsum_str, tuple(kernel_shape))
        if "->" not in equation:
            raise config_error(name, "an explicit equation with '->'", repr(einsum_str),
                               "write the output axes, e.g. 'bd,df->bf'.")
        if equation.count(",") != 1:
            raise config_error(name, "exactly two operands (inputs, kernel), one comma",
                               f"{equation.count(',')} commas",
                               "Einsum multiplies the input by its one kernel.")
        kernel_spec = equation.split("->")[0].split(",")[1]
        if "..." not in kernel_spec and len(kernel_spec) != len(kernel_shape):
            raise config_error(name, f"a kernel spec with {len(kernel_shape)} axes (the "
                               "kernel's rank)", repr(kernel_spec),
                               "the second operand names the kernel's axes in order.")
        return equation

    def __call__(self, inputs: jax.Array, einsum_str: str | None = None,
                 out_sharding: Any = None) -> jax.Array:
        """Apply ``einsum(einsum_str, inputs, kernel) (+ bias)``.

        ``einsum_str`` here overrides the one given at construction.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> layer = nnx.Einsum(None, (3, 2), rngs=nnx.Rngs(0))
            >>> layer(jnp.ones((5, 3)), "bi,io->bo").shape
            (5, 2)
        """
        equation = first_from(
            einsum_str, self.einsum_str,
            error_msg=f"{layer_text('Einsum', None, tuple(self.kernel_shape))}: expected an "
            "einsum_str, got none (neither at construction nor in the call). Hint: "
            "pass one, e.g. layer(x, 'bi,io->bo').")
        equation = self._checked(equation, self.kernel.shape)
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
        extra: dict[str, Any] = {}
        if out_sharding is not None:
            extra["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            extra["preferred_element_type"] = self.preferred_element_type
        y = self.einsum_op(equation, x, kernel, precision=self.precision, **extra)
        if bias is not None:
            y = y + jnp.reshape(bias, self._bias_broadcast_shape(equation, x, kernel))
        return y

    def _bias_broadcast_shape(self, equation: str, x: Any, kernel: Any) -> tuple[int, ...]:
        """The bias laid out over the output: kernel sizes where an output letter is a
        kernel letter, 1 elsewhere."""
        operands, out = equation.split("->")
        x_spec, k_spec = operands.split(",")
        # Letters no equation uses stand in for the axes an ellipsis covers.
        free = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       if c not in equation)
        n_ellipsis = max(jnp.ndim(x) - (len(x_spec) - 3) if "..." in x_spec else 0,
                         jnp.ndim(kernel) - (len(k_spec) - 3) if "..." in k_spec else 0)
        ellipsis = free[:n_ellipsis]
        k_letters = _operand_letters(k_spec, jnp.ndim(kernel), ellipsis)
        out_letters = out.replace("...", ellipsis)
        sizes = dict(zip(k_letters, jnp.shape(kernel)))
        return tuple(sizes.get(c, 1) for c in out_letters)
