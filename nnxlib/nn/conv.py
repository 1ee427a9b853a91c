"""Convolutions over channels-last inputs: ``Conv`` and ``ConvTranspose``.

Inputs are ``(*batch, *spatial, features)`` (NHWC for images). Any number of leading
batch axes is accepted, including none (one unbatched example). The kernel is
``(*kernel_size, in_features // feature_group_count, out_features)`` (HWIO).

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> conv = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=nnx.Rngs(0))
>>> conv(jnp.ones((2, 16, 16, 3))).shape
(2, 16, 16, 8)
>>> up = nnx.ConvTranspose(8, 3, kernel_size=(2, 2), strides=2, rngs=nnx.Rngs(0))
>>> up(jnp.ones((2, 16, 16, 8))).shape
(2, 32, 32, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import DTypeLike

from nnxlib.module import Module
from nnxlib.nn import dtypes, initializers
from nnxlib.nn._checks import config_error, input_error, int_tuple, layer_text
from nnxlib.rngs import Rngs
from nnxlib.variables import Param

__all__ = ["Conv", "ConvTranspose", "canonicalize_padding"]

PaddingLike = str | int | Sequence[int | tuple[int, int]]
LaxPadding = str | tuple[tuple[int, int], ...]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
# Padding names lax understands, and the ones the layers implement themselves.
_LAX_PADDINGS = ("SAME", "SAME_LOWER", "VALID")
_LAYER_PADDINGS = ("CIRCULAR", "REFLECT", "CAUSAL")


def canonicalize_padding(padding: PaddingLike, rank: int, layer: str = "Conv") -> LaxPadding:
    """``padding`` as an upper-case mode name or one ``(low, high)`` pair per spatial axis.

    Accepted: a mode name (``'SAME'``, ``'VALID'``, ``'SAME_LOWER'``, ``'CIRCULAR'``,
    ``'REFLECT'``, ``'CAUSAL'``, any case), one int for every side of every axis, or
    ``rank`` entries that are each an int (both sides) or a ``(low, high)`` pair.

    Example:
        >>> canonicalize_padding("same", 2)
        'SAME'
        >>> canonicalize_padding(1, 2)
        ((1, 1), (1, 1))
        >>> canonicalize_padding([(0, 2), 1], 2)
        ((0, 2), (1, 1))
    """
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if isinstance(padding, str):
        mode = padding.upper()
        if mode in _LAX_PADDINGS + _LAYER_PADDINGS:
            return mode
    elif is_int(padding):
        return ((int(padding), int(padding)),) * rank
    elif isinstance(padding, Sequence) and len(padding) == rank:
        pairs = []
        for p in padding:
            if is_int(p):
                pairs.append((int(p), int(p)))
            elif isinstance(p, Sequence) and len(p) == 2 and all(map(is_int, p)):
                pairs.append((int(p[0]), int(p[1])))
        if len(pairs) == rank:
            return tuple(pairs)
    raise config_error(
        layer, f"padding as one of {', '.join(_LAX_PADDINGS + _LAYER_PADDINGS)}, an int, "
        f"or {rank} entries (one per spatial axis) each an int or a (low, high) pair",
        repr(padding), f"for example padding='SAME' or padding={[(1, 1)] * rank}.")


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    """Channels-last layout for ``rank`` spatial axes: NH..C inputs, H..IO kernels."""
    spatial = tuple(range(1, rank + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, rank + 1) + spatial, rhs_spec=(rank + 1, rank) + tuple(range(rank)),
        out_spec=(0, rank + 1) + spatial)


def _kernel_size(kernel_size: int | Sequence[int], layer: str) -> tuple[int, ...]:
    size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    if not size or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                           for k in size):
        raise config_error(layer, "kernel_size as a positive int or a non-empty sequence of "
                           "positive ints (one per spatial axis)", repr(kernel_size),
                           "use kernel_size=(3, 3) for a 2D convolution, 3 for 1D.")
    return size


def _check_mask(mask: Any, kernel_shape: tuple[int, ...], layer: str) -> None:
    if mask is not None and tuple(jnp.shape(mask)) != kernel_shape:
        raise config_error(layer, f"a mask of the kernel's shape {kernel_shape}",
                           f"shape {tuple(jnp.shape(mask))}",
                           "the mask multiplies the kernel entry by entry: build it with "
                           "the kernel's shape (*kernel_size, in_features // "
                           "feature_group_count, out_features).")


def _flatten_batch(layer: str, inputs: jax.Array, rank: int, features: int
                   ) -> tuple[jax.Array, tuple[int, ...] | None]:
    """Check the input's rank and channels; fold its batch axes into exactly one.

    Returns the reshaped inputs and the original batch shape (None when the input
    already has exactly one batch axis and nothing needs undoing).
    """
    shape = jnp.shape(inputs)
    if len(shape) < rank + 1:
        raise input_error(
            layer, f"inputs of rank at least {rank + 1} (*batch, {rank} spatial axes, "
            "features)", f"shape {shape}",
            "add the missing axes; channels come last (NHWC), e.g. x[..., None] for a "
            "single channel.")
    if shape[-1] != features:
        raise input_error(
            layer, f"inputs with {features} features on the last axis", f"shape {shape}",
            "channels come last (NHWC, not NCHW): transpose the input, or build the layer "
            "with in_features equal to the input's channel count.")
    batch = shape[: len(shape) - rank - 1]
    if len(batch) == 1:
        return inputs, None
    return jnp.reshape(inputs, (-1, *shape[len(batch):])), batch


def _conv_kwargs(out_sharding: Any, preferred_element_type: Any) -> dict[str, Any]:
    # Optional keywords go in only when set, so that a custom convolution written
    # against an older lax signature keeps working.
    extra: dict[str, Any] = {}
    if out_sharding is not None:
        extra["out_sharding"] = out_sharding
    if preferred_element_type is not None:
        extra["preferred_element_type"] = preferred_element_type
    return extra


class Conv(Module):
    """A learned N-dimensional convolution (cross-correlation, as in every deep-learning
    library) over channels-last inputs.

    The spatial rank is ``len(kernel_size)``. Inputs are ``(*batch, *spatial,
    in_features)`` with any number of batch axes (none for a single example); the output
    keeps the batch axes and has ``out_features`` channels.

    Padding modes: ``'SAME'`` (output size ``ceil(n / stride)``), ``'VALID'`` (no
    padding), ``'SAME_LOWER'``, explicit ints or ``(low, high)`` pairs per axis, and
    three modes done by the layer: ``'CIRCULAR'`` (periodic wrap), ``'REFLECT'``
    (mirror without repeating the edge), both padded like ``'SAME'``, and ``'CAUSAL'``
    (1D only: output ``t`` sees inputs ``<= t``).

    State: ``kernel`` (``(*kernel_size, in_features // feature_group_count,
    out_features)``) and ``bias`` (``(out_features,)``, None without ``use_bias``), both
    :class:`~nnxlib.Param`, drawn from the ``params`` stream (kernel first).

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: window size, one int per spatial axis (an int means 1D).
        strides: step of the window, an int or one per axis (None means 1).
        padding: see above (default ``'SAME'``).
        input_dilation: spacing inserted between input entries (a transposed
            convolution when > 1), an int or one per axis.
        kernel_dilation: spacing between kernel taps (atrous convolution).
        feature_group_count: split channels into this many independent groups
            (``in_features`` for a depthwise convolution); must divide both feature sizes.
        use_bias: add a learned per-channel bias.
        mask: optional array of the kernel's shape multiplied into the kernel on every
            call (e.g. masked convolutions of autoregressive models).
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        precision: passed to the convolution.
        kernel_init: initializer of the kernel.
        bias_init: initializer of the bias.
        conv_general_dilated: the convolution function (``lax.conv_general_dilated``'s
            signature), e.g. a quantised one.
        promote_dtype: casting function for ``(inputs, kernel, bias)``.
        preferred_element_type: accumulation/output dtype hint for the convolution.
        rngs: the random streams.
        kernel_metadata: extra metadata of ``kernel`` (e.g. sharding names).
        bias_metadata: extra metadata of ``bias``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> conv = nnx.Conv(1, 1, 3, padding="CAUSAL", use_bias=False,
        ...                 kernel_init=nnx.initializers.ones, rngs=nnx.Rngs(0))
        >>> conv(jnp.arange(5.0)[:, None])[:, 0]   # running sum of 3 (causal)
        Array([0., 1., 3., 6., 9.], dtype=float32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: None | int | Sequence[int] = 1,
        *,
        padding: PaddingLike = "SAME",
        input_dilation: None | int | Sequence[int] = 1,
        kernel_dilation: None | int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        name = layer_text("Conv", in_features, out_features, kernel_size=kernel_size)
        kernel_size = _kernel_size(kernel_size, name)
        rank = len(kernel_size)
        groups = feature_group_count
        if not (isinstance(groups, int) and groups > 0
                and in_features % groups == 0 and out_features % groups == 0):
            raise config_error(
                name, "a feature_group_count that divides both in_features and "
                "out_features", repr(groups),
                f"use a common divisor of {in_features} and {out_features} (1 for a dense "
                "convolution, in_features for a depthwise one).")
        # Validated now (not on the first call), and kept as canonical tuples.
        self._strides = int_tuple(strides, rank, "strides", name)
        self._input_dilation = int_tuple(input_dilation, rank, "input_dilation", name)
        self._kernel_dilation = int_tuple(kernel_dilation, rank, "kernel_dilation", name)
        self._padding = canonicalize_padding(padding, rank, name)
        if self._padding == "CAUSAL" and rank != 1:
            raise config_error(name, "padding='CAUSAL' with a 1D kernel", f"{rank}D kernel "
                               f"{kernel_size}", "causal padding is defined along one "
                               "(time) axis; pad the other axes explicitly instead.")
        kernel_shape = (*kernel_size, in_features // groups, out_features)
        _check_mask(mask, kernel_shape, name)

        self.kernel_shape = kernel_shape
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype),
                            **kernel_metadata)
        self.bias: Param | None = None
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype),
                              **bias_metadata)
        # flax.nnx's public attributes, with the values as given.
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size, self.strides, self.padding = kernel_size, strides, padding
        self.input_dilation, self.kernel_dilation = input_dilation, kernel_dilation
        self.feature_group_count, self.use_bias, self.mask = groups, use_bias, mask
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.conv_general_dilated, self.promote_dtype = conv_general_dilated, promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Convolve ``inputs`` of shape ``(*batch, *spatial, in_features)``.

        ``out_sharding`` is forwarded to the convolution (explicit-sharding meshes).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> conv = nnx.Conv(2, 4, (3,), strides=2, padding="VALID", rngs=nnx.Rngs(0))
            >>> conv(jnp.ones((9, 2))).shape       # unbatched: (length, channels)
            (4, 4)
        """
        rank = len(self.kernel_size)
        name = layer_text("Conv", self.in_features, self.out_features,
                          kernel_size=self.kernel_size)
        # Channels are compared with the kernel as it is (per-device inside shard_map).
        x, batch = _flatten_batch(name, inputs, rank,
                                  self.kernel.shape[-2] * self.feature_group_count)
        padding = self._padding
        if padding in ("CIRCULAR", "REFLECT"):
            # Pad with input values (as 'SAME' would with zeros), then convolve 'VALID'.
            spans = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self._kernel_dilation)]
            pads = [(0, 0)] + [((s - 1) // 2, s // 2) for s in spans] + [(0, 0)]
            x = jnp.pad(x, pads, mode="wrap" if padding == "CIRCULAR" else "reflect")
            padding = "VALID"
        elif padding == "CAUSAL":
            # Zeros on the left only, as part of the convolution itself (no pad op). The
            # input dilation spreads padded entries too, so the pad scales with it.
            left = (self.kernel_size[0] - 1) * self._kernel_dilation[0]
            padding = ((left * self._input_dilation[0], 0),)

        kernel = self.kernel[...]
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = self.conv_general_dilated(
            x, kernel, self._strides, padding,
            lhs_dilation=self._input_dilation, rhs_dilation=self._kernel_dilation,
            dimension_numbers=_dimension_numbers(rank),
            feature_group_count=self.feature_group_count, precision=self.precision,
            **_conv_kwargs(out_sharding, self.preferred_element_type))
        if bias is not None:
            y = y + bias  # broadcasts over the trailing channel axis, no reshape needed
        if batch is not None:
            y = jnp.reshape(y, (*batch, *y.shape[1:]))
        return y


class ConvTranspose(Module):
    """A learned transposed convolution (the gradient of a strided convolution with
    respect to its input): upsamples by ``strides``.

    Behaves as ``lax.conv_transpose`` on channels-last inputs ``(*batch, *spatial,
    in_features)``. With ``padding='SAME'`` the output size is ``n * stride``; with
    ``'VALID'`` it is ``(n - 1) * stride + (k - 1) * dilation + 1``.
    ``'CIRCULAR'`` wraps the output periodically to size ``n * stride`` (the adjoint
    of a circular ``Conv`` for odd kernel sizes, with ``transpose_kernel=True``). ``'CAUSAL'`` (1D, an nnxlib extension: flax rejects it)
    gives size ``n * stride`` where output ``t`` depends only on inputs ``j`` with
    ``j * stride <= t``, which is what autoregressive upsamplers need.

    State: ``kernel`` of shape ``(*kernel_size, in_features, out_features)``
    (``(*kernel_size, out_features, in_features)`` with ``transpose_kernel=True``, so
    that a ``Conv``'s kernel can be reused) and ``bias`` ``(out_features,)``.

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: window size, one int per spatial axis (an int means 1D).
        strides: upsampling factor, an int or one per axis (None means 1).
        padding: ``'SAME'`` (default), ``'VALID'``, ``'CIRCULAR'``, ``'CAUSAL'``,
            or explicit ints/``(low, high)`` pairs (applied as by ``lax.conv_transpose``).
        kernel_dilation: spacing between kernel taps (None means 1).
        use_bias: add a learned per-channel bias.
        mask: optional array of the kernel's shape multiplied into the kernel.
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        precision: passed to the convolution.
        kernel_init: initializer of the kernel.
        bias_init: initializer of the bias.
        transpose_kernel: flip the kernel spatially and swap its feature axes, which
            makes this the exact gradient-transpose of a ``Conv`` with the same kernel.
        promote_dtype: casting function for ``(inputs, kernel, bias)``.
        preferred_element_type: accumulation/output dtype hint.
        rngs: the random streams.
        kernel_metadata: extra metadata of ``kernel``.
        bias_metadata: extra metadata of ``bias``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> up = nnx.ConvTranspose(1, 1, 2, strides=2, use_bias=False,
        ...                        kernel_init=nnx.initializers.ones, rngs=nnx.Rngs(0))
        >>> up(jnp.array([[1.0], [2.0]]))[:, 0]    # each input spread over 2 outputs
        Array([1., 1., 2., 2.], dtype=float32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] | None = None,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        transpose_kernel: bool = False,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        preferred_element_type: DTypeLike | None = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        name = layer_text("ConvTranspose", in_features, out_features, kernel_size=kernel_size)
        kernel_size = _kernel_size(kernel_size, name)
        rank = len(kernel_size)
        self._strides = int_tuple(strides, rank, "strides", name)
        self._kernel_dilation = int_tuple(kernel_dilation, rank, "kernel_dilation", name)
        self._padding = canonicalize_padding(padding, rank, name)
        if self._padding == "REFLECT":
            raise config_error(name, "padding 'SAME', 'VALID', 'CIRCULAR', 'CAUSAL' or "
                               "explicit pairs", "'REFLECT'", "reflection padding is "
                               "defined for Conv only; use 'CIRCULAR' or 'SAME'.")
        if self._padding == "CAUSAL" and rank != 1:
            raise config_error(name, "padding='CAUSAL' with a 1D kernel", f"{rank}D kernel "
                               f"{kernel_size}", "causal padding is defined along one "
                               "(time) axis; pad the other axes explicitly instead.")
        if transpose_kernel:
            kernel_shape = (*kernel_size, out_features, in_features)
        else:
            kernel_shape = (*kernel_size, in_features, out_features)
        _check_mask(mask, kernel_shape, name)

        self.kernel_shape = kernel_shape
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype),
                            **kernel_metadata)
        self.bias: Param | None = None
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype),
                              **bias_metadata)
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size, self.strides, self.padding = kernel_size, strides, padding
        self.kernel_dilation, self.use_bias, self.mask = kernel_dilation, use_bias, mask
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.transpose_kernel, self.promote_dtype = transpose_kernel, promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Apply the transposed convolution to ``(*batch, *spatial, in_features)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> up = nnx.ConvTranspose(4, 2, (3, 3), strides=(2, 1), rngs=nnx.Rngs(0))
            >>> up(jnp.ones((1, 5, 5, 4))).shape
            (1, 10, 5, 2)
        """
        rank = len(self.kernel_size)
        name = layer_text("ConvTranspose", self.in_features, self.out_features,
                          kernel_size=self.kernel_size)
        in_axis = -1 if self.transpose_kernel else -2
        x, batch = _flatten_batch(name, inputs, rank, self.kernel.shape[in_axis])
        spatial_in = x.shape[1:-1]
        padding = self._padding
        if padding == "CIRCULAR":
            padding = "VALID"  # full transposed output, wrapped below
        elif padding == "CAUSAL":
            # Explicit pads act on the stride-dilated input: span - 1 zeros before it
            # makes output t see dilated positions <= t; stride - 1 after gives n * stride.
            span = (self.kernel_size[0] - 1) * self._kernel_dilation[0] + 1
            padding = ((span - 1, self._strides[0] - 1),)

        kernel = self.kernel[...]
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = lax.conv_transpose(
            x, kernel, self._strides, padding, rhs_dilation=self._kernel_dilation,
            dimension_numbers=_dimension_numbers(rank),
            transpose_kernel=self.transpose_kernel, precision=self.precision,
            preferred_element_type=self.preferred_element_type)
        if self._padding == "CIRCULAR":
            y = _wrap_periodic(y, [n * s for n, s in zip(spatial_in, self._strides)],
                               self.transpose_kernel)
        if bias is not None:
            y = y + bias
        if batch is not None:
            y = jnp.reshape(y, (*batch, *y.shape[1:]))
        return y


def _wrap_periodic(y: jax.Array, periods: list[int], right_aligned: bool) -> jax.Array:
    """Fold each spatial axis of ``y`` (batch first, channels last) onto ``period``
    entries by summing entries whose positions agree modulo the period.

    The full (VALID) transposed output is longer than the period by the kernel's
    overhang; folding it around makes the result periodic, the transpose of a
    circular convolution. Where the overhang is split (its odd entry on the left, or on
    the right for ``transpose_kernel``) sets the alignment; it is flax's, which makes
    the layer with ``transpose_kernel=True`` the exact adjoint of
    ``Conv(padding='CIRCULAR')`` for odd kernel sizes (even ones are shifted by one).
    """
    for axis, period in enumerate(periods, start=1):
        size = y.shape[axis]
        # Offset (modulo the period) of entry 0: half the distance from size to the
        # nearest odd multiple of the period at or above it.
        gap = (period - size) % (2 * period)
        offset = gap // 2 if right_aligned else (gap + 1) // 2
        total = -(-(size + offset) // period) * period
        pads = [(0, 0)] * y.ndim
        pads[axis] = (offset, total - size - offset)
        y = jnp.pad(y, pads)
        y = y.reshape(*y.shape[:axis], total // period, period, *y.shape[axis + 1:])
        y = y.sum(axis=axis)
    return y
