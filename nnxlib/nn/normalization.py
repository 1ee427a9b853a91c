"""Normalization layers: ``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` and
``InstanceNorm`` (the weight wrappers ``SpectralNorm`` and ``WeightNorm`` live in
``weight_norm.py``).

All of them compute statistics in at least ``float32`` (half-precision means and variances
lose too much), optionally average them over a named mapped axis (``axis_name``, for
``vmap``/``pmap``/``shard_map`` data parallelism), normalise, then apply a learned
per-feature ``scale`` and ``bias``.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> x = jnp.arange(6.0).reshape(3, 2)
>>> nnx.LayerNorm(2, rngs=nnx.Rngs(0))(x)
Array([[-0.99..., 0.99...],
       [-0.99..., 0.99...],
       [-0.99..., 0.99...]], dtype=float32)
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

from nnxlib.errors import ShapeMismatchError
from nnxlib.module import Module, first_from
from nnxlib.nn import dtypes, initializers
from nnxlib.rngs import Rngs
from nnxlib.variables import BatchStat, Param
from nnxlib.variables._raw import is_ref_mode

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

Axes = int | Sequence[int]
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _axes(ndim: int, axes: Axes) -> tuple[int, ...]:
    """Non-negative, sorted, de-duplicated axes."""
    if not isinstance(axes, Iterable):
        axes = (axes,)
    return tuple(sorted({a + ndim if a < 0 else a for a in axes}))


def _sq_abs(x: jax.Array) -> jax.Array:
    # |x|^2 stays real for complex inputs.
    if jnp.iscomplexobj(x):
        return lax.square(lax.real(x)) + lax.square(lax.imag(x))
    return lax.square(x)


def _statistics(
    x: jax.Array,
    axes: Axes,
    dtype: DTypeLike | None,
    axis_name: str | None,
    axis_index_groups: Any,
    *,
    use_mean: bool = True,
    use_fast_variance: bool = True,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of ``x`` over ``axes`` (and over ``axis_name`` when given)."""
    stat_dtype = jnp.promote_types(jnp.result_type(x) if dtype is None else dtype, jnp.float32)
    x = jnp.asarray(x, stat_dtype)
    axes = _axes(x.ndim, axes)

    def mean(*values: jax.Array) -> list[jax.Array]:
        means = [v.mean(axes, where=mask) for v in values]
        if axis_name is None:
            return means
        # One collective for all moments: cross-device latency dominates its cost.
        stacked = jnp.stack(means)
        if axis_index_groups is None:
            return list(lax.pmean(stacked, axis_name))
        return list(_group_mean(stacked, axis_name, axis_index_groups))

    if not use_mean:
        (var,) = mean(_sq_abs(x))
        return jnp.zeros_like(var), var
    if use_fast_variance:
        mu, mu2 = mean(x, _sq_abs(x))
        # E[x^2] - E[x]^2 can dip below zero by rounding; a negative variance gives NaN.
        var = jnp.maximum(0.0, mu2 - _sq_abs(mu))
    else:
        (mu,) = mean(x)
        (var,) = mean(_sq_abs(x - jnp.expand_dims(mu, axes)))
    return mu, var


def _group_mean(x: jax.Array, axis_name: str, groups: Any) -> jax.Array:
    """Mean of ``x`` over the members of this member's group of ``axis_name``.

    ``lax.pmean(..., axis_index_groups=...)`` works under ``pmap`` only; gathering the
    values and averaging with a (member x member) weight matrix works under ``vmap``
    and ``shard_map`` too."""
    size = lax.psum(1, axis_name)
    groups = [list(g) for g in groups]
    members = sorted(i for g in groups for i in g)
    if members != list(range(size)):
        raise ValueError(
            f"axis_index_groups={groups} must list every index of axis {axis_name!r} "
            f"(0..{size - 1}) exactly once; got {members}. Hint: e.g. [[0, 1], [2, 3]] "
            "for an axis of size 4."
        )
    weights = [[0.0] * size for _ in range(size)]
    for group in groups:
        for i in group:
            for j in group:
                weights[i][j] = 1.0 / len(group)
    row = jnp.asarray(weights, x.dtype)[lax.axis_index(axis_name)]
    gathered = lax.all_gather(x, axis_name)
    return jnp.tensordot(row, gathered, axes=1)


def _normalize(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    reduction_axes: Axes,
    feature_axes: Axes,
    dtype: DTypeLike | None,
    epsilon: float,
) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias``, cast to the output dtype."""
    reduction_axes = _axes(x.ndim, reduction_axes)
    feature_axes = _axes(x.ndim, feature_axes)
    stat_shape = [1 if i in reduction_axes else n for i, n in enumerate(x.shape)]
    feature_shape = [n if i in feature_axes else 1 for i, n in enumerate(x.shape)]
    factor = lax.rsqrt(_broadcastable(var, stat_shape) + epsilon)
    if scale is not None:
        factor = factor * _broadcastable(scale, feature_shape)
    y = (x - _broadcastable(mean, stat_shape)) * factor
    if bias is not None:
        y = y + _broadcastable(bias, feature_shape)
    out_dtype = dtypes.canonicalize_dtype(x, scale, bias, dtype=dtype)
    return jnp.asarray(y, out_dtype)


def _broadcastable(a: jax.Array, shape: list[int]) -> jax.Array:
    """``a`` reshaped to ``shape``, or ``a`` itself where numpy broadcasting already lines
    it up (``shape`` is ``a.shape`` with leading ones): the common ``(..., features)``
    case then costs no reshape in the compiled program."""
    trailing = list(shape)
    while trailing and trailing[0] == 1 and len(trailing) > a.ndim:
        trailing.pop(0)
    return a if list(a.shape) == trailing else a.reshape(shape)


def _check_features(layer: Module, x: jax.Array, feature_axes: Axes, stat: Any) -> None:
    """``x``'s feature axes must hold as many entries as ``stat`` (a per-feature
    parameter or statistic, as it is: per-device inside ``shard_map``); say so instead
    of failing inside a reshape."""
    want = math.prod(stat.shape)
    axes = _axes(jnp.ndim(x), feature_axes)
    if any(not 0 <= a < jnp.ndim(x) for a in axes):
        got = f"inputs of shape {jnp.shape(x)} have no axis {feature_axes}"
    else:
        size = math.prod(jnp.shape(x)[a] for a in axes)
        if size == want:
            return
        got = f"got {size} (inputs of shape {jnp.shape(x)}, feature axes {axes})"
    raise ShapeMismatchError(
        f"{type(layer).__name__}(num_features={layer.num_features}): the feature axes must "
        f"hold {want} entries; {got}. Hint: build the layer with the input's "
        "feature size, or set its feature axis (axis= / feature_axes=) to the right axis."
    )


def _make_param(enabled: bool, init: Callable[..., Any], rngs: Rngs, shape: tuple,
                dtype: DTypeLike, metadata: Mapping[str, Any]) -> Param | None:
    return Param(init(rngs.params(), shape, dtype), **metadata) if enabled else None


class BatchNorm(Module):
    """Batch normalization with running averages of the batch statistics.

    In training mode (``use_running_average=False``) the input is normalised with the
    statistics of the current batch (all axes except ``axis``), and the running averages
    are updated as ``ra = momentum * ra + (1 - momentum) * batch_stat``. In evaluation
    mode the stored averages are used and nothing is updated. ``module.train()`` and
    ``module.eval()`` switch the mode of every ``BatchNorm`` in a model.

    State: ``mean`` and ``var`` (:class:`~nnxlib.BatchStat`, float32, starting at 0 and 1)
    and the parameters ``scale`` and ``bias`` (:class:`~nnxlib.Param`, None when
    disabled).

    Args:
        num_features: size of the feature axis.
        use_running_average: default mode; the ``__call__`` argument overrides it.
        axis: the feature axis; statistics are taken over every other axis.
        momentum: decay of the running averages.
        epsilon: added to the variance before the square root.
        dtype: output dtype (default: inferred from inputs and parameters).
        param_dtype: dtype of ``scale`` and ``bias``.
        use_bias: learn a per-feature offset.
        use_scale: learn a per-feature scale.
        bias_init: initializer of ``bias``.
        scale_init: initializer of ``scale``.
        axis_name: a mapped axis (``vmap``/``pmap``/``shard_map``) over which batch
            statistics are averaged, so that all members see the same statistics.
        axis_index_groups: subgroups of ``axis_name`` to average within.
        use_fast_variance: compute ``E[x^2] - E[x]^2`` in one pass (faster, less exact)
            instead of ``E[(x - E[x])^2]``.
        promote_dtype: casting function for ``(x, mean, var, scale, bias)``.
        rngs: random streams; ``rngs.params()`` is called for each parameter.
        bias_metadata: extra metadata of ``bias``.
        scale_metadata: extra metadata of ``scale``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(2, momentum=0.9, rngs=nnx.Rngs(0))
        >>> bn(jnp.array([[0.0, 2.0], [2.0, 6.0]])).round(3)
        Array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
        >>> bn.mean[...]          # 0.9 * 0 + 0.1 * batch mean
        Array([0.1, 0.4], dtype=float32)
        >>> bn.eval()
        >>> bn(jnp.array([[0.1, 0.4]])).round(3)
        Array([[0., 0.]], dtype=float32)
    """

    def __init__(
        self,
        num_features: int,
        *,
        rngs: Rngs,
        # running statistics
        use_running_average: bool | None = False,
        momentum: float = 0.99,
        axis: int = -1,
        epsilon: float = 1e-5,
        use_fast_variance: bool = True,
        # learned affine transform
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones_init(),
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        use_bias: bool = True,
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        # dtypes
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        # cross-device statistics (inside vmap/shard_map with a named axis)
        axis_name: str | None = None,
        axis_index_groups: Any = None,
    ):
        shape = (num_features,)
        self.mean = BatchStat(jnp.zeros(shape, jnp.float32))
        self.var = BatchStat(jnp.ones(shape, jnp.float32))
        self.scale = _make_param(use_scale, scale_init, rngs, shape, param_dtype, scale_metadata)
        self.bias = _make_param(use_bias, bias_init, rngs, shape, param_dtype, bias_metadata)
        self.num_features, self.axis = num_features, axis
        self.use_running_average, self.momentum = use_running_average, momentum
        self.epsilon, self.use_fast_variance = epsilon, use_fast_variance
        self.use_scale, self.use_bias = use_scale, use_bias
        self.dtype, self.param_dtype, self.promote_dtype = dtype, param_dtype, promote_dtype
        self.axis_name, self.axis_index_groups = axis_name, axis_index_groups

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
                 mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x``; in training mode also update the running statistics.

        Args:
            x: input whose ``axis`` has ``num_features`` entries.
            use_running_average: overrides the mode set at construction.
            mask: boolean array broadcastable to ``x``; only True entries count towards
                the batch statistics.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> bn = nnx.BatchNorm(1, rngs=nnx.Rngs(0))
            >>> bn(jnp.ones((4, 1)), use_running_average=True)  # mean 0, var 1: unchanged
            Array([[0.99...],
                   [0.99...],
                   [0.99...],
                   [0.99...]], dtype=float32)
        """
        use_running_average = first_from(
            use_running_average, self.use_running_average,
            error_msg=(
                "BatchNorm: use_running_average is None in both the constructor and the "
                "call, so the mode is unknown. Hint: pass use_running_average=True/False "
                "to BatchNorm(...) or to the call, or call model.train() / model.eval()."
            ),
        )
        _check_features(self, x, self.axis, self.mean)
        feature_axes = _axes(x.ndim, self.axis)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        x, mean, var, scale, bias = self.promote_dtype(
            (x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype
        )
        if not use_running_average:
            mean, var = _statistics(
                x, reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
                use_fast_variance=self.use_fast_variance, mask=mask,
            )
            m = self.momentum
            new_mean = m * self.mean[...] + (1 - m) * mean
            new_var = m * self.var[...] + (1 - m) * var
            if isinstance(new_mean, jax.core.Tracer) and is_ref_mode(self.mean._metadata):
                # a jax.Ref takes no differentiated value
                new_mean, new_var = jax.lax.stop_gradient((new_mean, new_var))
            self.mean[...] = new_mean
            self.var[...] = new_var
        return _normalize(x, mean, var, scale, bias, reduction_axes, feature_axes,
                          self.dtype, self.epsilon)


class LayerNorm(Module):
    """Layer normalization: normalise each example over its ``reduction_axes``.

    Args:
        num_features: size of the feature axis (shape of ``scale`` and ``bias``).
        epsilon: added to the variance before the square root.
        dtype: output dtype (default: inferred from inputs and parameters).
        param_dtype: dtype of ``scale`` and ``bias``.
        use_bias: learn a per-feature offset (``bias``; None when disabled).
        use_scale: learn a per-feature scale (``scale``; None when disabled).
        bias_init: initializer of ``bias``.
        scale_init: initializer of ``scale``.
        reduction_axes: axes the statistics are taken over.
        feature_axes: axes that ``scale`` and ``bias`` vary along.
        axis_name: mapped axis to average the statistics over (model-parallel features).
        axis_index_groups: subgroups of ``axis_name``.
        use_fast_variance: one-pass ``E[x^2] - E[x]^2`` variance.
        promote_dtype: casting function for ``(x, scale, bias)``.
        rngs: random streams; ``rngs.params()`` is called for each parameter.
        bias_metadata: extra metadata of ``bias``.
        scale_metadata: extra metadata of ``scale``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> ln = nnx.LayerNorm(3, use_bias=False, rngs=nnx.Rngs(0))
        >>> ln(jnp.array([1.0, 2.0, 3.0])).round(3)
        Array([-1.225,  0.   ,  1.225], dtype=float32)
        >>> ln.bias is None
        True
    """

    def __init__(
        self,
        num_features: int,
        *,
        rngs: Rngs,
        # statistics
        reduction_axes: Axes = -1,
        epsilon: float = 1e-6,
        use_fast_variance: bool = True,
        # learned affine transform
        feature_axes: Axes = -1,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones_init(),
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        use_bias: bool = True,
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        # dtypes
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        # cross-device statistics
        axis_name: str | None = None,
        axis_index_groups: Any = None,
    ):
        shape = (num_features,)
        self.scale = _make_param(use_scale, scale_init, rngs, shape, param_dtype, scale_metadata)
        self.bias = _make_param(use_bias, bias_init, rngs, shape, param_dtype, bias_metadata)
        self.num_features = num_features
        self.reduction_axes, self.feature_axes = reduction_axes, feature_axes
        self.epsilon, self.use_fast_variance = epsilon, use_fast_variance
        self.use_scale, self.use_bias = use_scale, use_bias
        self.dtype, self.param_dtype, self.promote_dtype = dtype, param_dtype, promote_dtype
        self.axis_name, self.axis_index_groups = axis_name, axis_index_groups

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x`` (``mask`` selects the entries that count towards statistics).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.LayerNorm(2, rngs=nnx.Rngs(0))(jnp.array([[1.0, 3.0]])).round(3)
            Array([[-1.,  1.]], dtype=float32)
        """
        if self.scale is not None or self.bias is not None:
            _check_features(self, x, self.feature_axes,
                            self.scale if self.scale is not None else self.bias)
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        mean, var = _statistics(
            x, self.reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_fast_variance=self.use_fast_variance, mask=mask,
        )
        return _normalize(x, mean, var, scale, bias, self.reduction_axes,
                          self.feature_axes, self.dtype, self.epsilon)


class RMSNorm(Module):
    """Root-mean-square normalization: ``x / sqrt(mean(x^2) + eps) * scale``, no centring.

    Arguments are those of :class:`LayerNorm` without the bias ones.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> rms = nnx.RMSNorm(2, epsilon=0.0, rngs=nnx.Rngs(0))
        >>> rms(jnp.array([3.0, 4.0])).tolist()   # rms of (3, 4) is sqrt(12.5)
        [0.849..., 1.131...]
    """

    def __init__(
        self,
        num_features: int,
        *,
        rngs: Rngs,
        # statistics
        reduction_axes: Axes = -1,
        epsilon: float = 1e-6,
        use_fast_variance: bool = True,
        # learned scale (no bias: RMSNorm does not centre)
        feature_axes: Axes = -1,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones,
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        # dtypes
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        # cross-device statistics
        axis_name: str | None = None,
        axis_index_groups: Any = None,
    ):
        shape = (num_features,)
        self.scale = _make_param(use_scale, scale_init, rngs, shape, param_dtype, scale_metadata)
        self.num_features, self.use_scale = num_features, use_scale
        self.reduction_axes, self.feature_axes = reduction_axes, feature_axes
        self.epsilon, self.use_fast_variance = epsilon, use_fast_variance
        self.dtype, self.param_dtype, self.promote_dtype = dtype, param_dtype, promote_dtype
        self.axis_name, self.axis_index_groups = axis_name, axis_index_groups

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x`` by its root mean square over ``reduction_axes``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.RMSNorm(1, epsilon=0.0, rngs=nnx.Rngs(0))(jnp.array([[-2.0]]))
            Array([[-1.]], dtype=float32)
        """
        if self.scale is not None:
            _check_features(self, x, self.feature_axes, self.scale)
        scale = None if self.scale is None else self.scale[...]
        x, scale = self.promote_dtype((x, scale), dtype=self.dtype)
        mean, var = _statistics(
            x, self.reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_mean=False, use_fast_variance=self.use_fast_variance, mask=mask,
        )
        return _normalize(x, mean, var, scale, None, self.reduction_axes,
                          self.feature_axes, self.dtype, self.epsilon)


class GroupNorm(Module):
    """Group normalization: statistics per example over groups of channels.

    The last axis holds ``num_features`` channels, split into ``num_groups`` groups of
    ``group_size`` consecutive channels. Each example is normalised with the mean and
    variance of each group, taken over the group's channels and the ``reduction_axes``
    (by default every axis between the batch axis and the channel axis). No running
    statistics are kept, so training and evaluation behave alike. ``num_groups=1`` is a
    :class:`LayerNorm` over all non-batch axes; ``num_groups=num_features`` is an
    :class:`InstanceNorm`.

    Give exactly one of ``num_groups`` and ``group_size`` (pass ``num_groups=None``
    to use ``group_size``).

    Args:
        num_features: number of channels (the last axis).
        num_groups: number of channel groups (default 32).
        group_size: channels per group, instead of ``num_groups``.
        epsilon: added to the variance before the square root.
        dtype: output dtype (default: inferred from inputs and parameters).
        param_dtype: dtype of ``scale`` and ``bias``.
        use_bias: learn a per-channel offset (``bias``; None when disabled).
        use_scale: learn a per-channel scale (``scale``; None when disabled).
        bias_init: initializer of ``bias``.
        scale_init: initializer of ``scale``.
        reduction_axes: axes the statistics are taken over; must include the last one.
            Default: all axes but the first.
        axis_name: mapped axis to average the statistics over.
        axis_index_groups: subgroups of ``axis_name``.
        use_fast_variance: one-pass ``E[x^2] - E[x]^2`` variance.
        promote_dtype: casting function for ``(x, scale, bias)``.
        rngs: random streams; ``rngs.params()`` is called for each parameter.
        bias_metadata: extra metadata of ``bias``.
        scale_metadata: extra metadata of ``scale``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> gn = nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0))
        >>> gn(jnp.array([[1.0, 3.0, 10.0, 30.0]])).round(3)   # groups (1, 3), (10, 30)
        Array([[-1.,  1., -1.,  1.]], dtype=float32)
        >>> gn.group_size
        2
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        rngs: Rngs,
        epsilon: float = 1e-6,
        reduction_axes: Axes | None = None,
        use_fast_variance: bool = True,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones_init(),
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        use_bias: bool = True,
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
    ):
        if (num_groups is None) == (group_size is None):
            raise ValueError(
                f"GroupNorm(num_features={num_features}): give exactly one of num_groups "
                f"and group_size; got num_groups={num_groups}, group_size={group_size}. "
                "Hint: num_groups defaults to 32, so pass num_groups=None together with "
                "group_size=..."
            )
        if group_size is not None:
            if not isinstance(group_size, int) or group_size <= 0 or num_features % group_size:
                raise ValueError(
                    f"GroupNorm(num_features={num_features}): group_size must be a positive "
                    f"divisor of num_features; got group_size={group_size}. Hint: choose "
                    "a group size that divides the number of channels."
                )
            num_groups = num_features // group_size
        elif not isinstance(num_groups, int) or num_groups <= 0 or num_features % num_groups:
            raise ValueError(
                f"GroupNorm(num_features={num_features}): num_groups must be a positive "
                f"divisor of num_features; got num_groups={num_groups}. Hint: choose a "
                "number of groups that divides the number of channels (the default is 32)."
            )
        shape = (num_features,)
        self.scale = _make_param(use_scale, scale_init, rngs, shape, param_dtype, scale_metadata)
        self.bias = _make_param(use_bias, bias_init, rngs, shape, param_dtype, bias_metadata)
        self.num_features, self.feature_axis = num_features, -1
        self.num_groups, self.group_size = num_groups, num_features // num_groups
        self.reduction_axes = reduction_axes
        self.epsilon, self.use_fast_variance = epsilon, use_fast_variance
        self.use_scale, self.use_bias = use_scale, use_bias
        self.dtype, self.param_dtype, self.promote_dtype = dtype, param_dtype, promote_dtype
        self.axis_name, self.axis_index_groups = axis_name, axis_index_groups

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x`` (channels last) group by group.

        Args:
            x: input of shape ``(batch, ..., num_features)``.
            mask: boolean array broadcastable to ``x``; only True entries count towards
                the statistics.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> gn = nnx.GroupNorm(2, num_groups=None, group_size=1, rngs=nnx.Rngs(0))
            >>> gn(jnp.array([[[0.0, 5.0], [2.0, 5.0]]])).round(3)  # per example, channel
            Array([[[-1.,  0.],
                    [ 1.,  0.]]], dtype=float32)
        """
        _check_features(self, x, -1, _features_of(self))
        if self.reduction_axes is None:
            reduction_axes = tuple(range(1, x.ndim))
        else:
            reduction_axes = _axes(x.ndim, self.reduction_axes)
            if reduction_axes[-1:] != (x.ndim - 1,):
                raise ValueError(
                    f"GroupNorm(num_features={self.num_features}): reduction_axes must "
                    f"include the channel axis (the last one, {x.ndim - 1}); got "
                    f"{self.reduction_axes} for inputs of shape {x.shape}. Hint: add -1."
                )
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        # Split the channels into (groups, group_size); statistics reduce the group's
        # channels and the other reduction axes, keeping one value per (example, group).
        grouped_shape = x.shape[:-1] + (self.num_groups, self.group_size)
        grouped = x.reshape(grouped_shape)
        if mask is not None:
            mask = jnp.broadcast_to(mask, x.shape).reshape(grouped_shape)
        stat_axes = reduction_axes[:-1] + (x.ndim,)
        mean, var = _statistics(
            grouped, stat_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_fast_variance=self.use_fast_variance, mask=mask,
        )
        # Normalise in the grouped layout, then apply the per-channel affine transform.
        y = _normalize(grouped, mean, var, None, None, stat_axes, (), None, self.epsilon)
        y = y.reshape(x.shape)
        if scale is not None:
            y = y * scale
        if bias is not None:
            y = y + bias
        return jnp.asarray(y, dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype))


class InstanceNorm(Module):
    """Instance normalization: each example and each channel normalised on its own.

    Statistics are taken over every axis except the first (the batch axis) and the
    ``feature_axes``; ``scale`` and ``bias`` vary along the feature axes. No running
    statistics are kept.

    Args:
        num_features: size of the feature axis.
        epsilon: added to the variance before the square root.
        dtype: output dtype (default: inferred from inputs and parameters).
        param_dtype: dtype of ``scale`` and ``bias``.
        use_bias: learn a per-feature offset (``bias``; None when disabled).
        use_scale: learn a per-feature scale (``scale``; None when disabled).
        bias_init: initializer of ``bias``.
        scale_init: initializer of ``scale``.
        feature_axes: the feature (channel) axes; may not include axis 0.
        axis_name: mapped axis to average the statistics over.
        axis_index_groups: subgroups of ``axis_name``.
        use_fast_variance: one-pass ``E[x^2] - E[x]^2`` variance.
        promote_dtype: casting function for ``(x, scale, bias)``.
        rngs: random streams; ``rngs.params()`` is called for each parameter.
        bias_metadata: extra metadata of ``bias``.
        scale_metadata: extra metadata of ``scale``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> norm = nnx.InstanceNorm(2, rngs=nnx.Rngs(0))
        >>> x = jnp.array([[[1.0, 0.0], [3.0, 10.0]]])   # (batch, length, channels)
        >>> norm(x).round(3)
        Array([[[-1., -1.],
                [ 1.,  1.]]], dtype=float32)
    """

    def __init__(
        self,
        num_features: int,
        *,
        rngs: Rngs,
        epsilon: float = 1e-6,
        use_fast_variance: bool = True,
        feature_axes: Axes = -1,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones,
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        use_bias: bool = True,
        bias_init: Callable[..., Any] = initializers.zeros,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
    ):
        shape = (num_features,)
        self.scale = _make_param(use_scale, scale_init, rngs, shape, param_dtype, scale_metadata)
        self.bias = _make_param(use_bias, bias_init, rngs, shape, param_dtype, bias_metadata)
        self.num_features, self.feature_axes = num_features, feature_axes
        self.epsilon, self.use_fast_variance = epsilon, use_fast_variance
        self.use_scale, self.use_bias = use_scale, use_bias
        self.dtype, self.param_dtype, self.promote_dtype = dtype, param_dtype, promote_dtype
        self.axis_name, self.axis_index_groups = axis_name, axis_index_groups

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise each example and feature of ``x`` over the remaining axes.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.InstanceNorm(1, rngs=nnx.Rngs(0))(jnp.array([[[2.0], [4.0]]])).round(3)
            Array([[[-1.],
                    [ 1.]]], dtype=float32)
        """
        _check_features(self, x, self.feature_axes, _features_of(self))
        feature_axes = _axes(x.ndim, self.feature_axes)
        if 0 in feature_axes:
            raise ValueError(
                f"InstanceNorm(num_features={self.num_features}): feature_axes "
                f"{self.feature_axes} include axis 0, the batch axis (inputs of shape "
                f"{x.shape}). Hint: axis 0 is always the batch; use e.g. feature_axes=-1."
            )
        reduction_axes = tuple(i for i in range(1, x.ndim) if i not in feature_axes)
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        mean, var = _statistics(
            x, reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_fast_variance=self.use_fast_variance, mask=mask,
        )
        return _normalize(x, mean, var, scale, bias, reduction_axes, feature_axes,
                          self.dtype, self.epsilon)


def _features_of(layer: Module) -> Any:
    """Something shaped like one entry per feature, for :func:`_check_features`: the
    scale or bias parameter, or (both disabled) a stand-in of ``num_features`` entries."""
    for param in (layer.scale, layer.bias):
        if param is not None:
            return param
    return jax.ShapeDtypeStruct((layer.num_features,), jnp.float32)
