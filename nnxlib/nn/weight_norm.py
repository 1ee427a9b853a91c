"""Weight reparametrisations that wrap a layer: ``SpectralNorm`` and ``WeightNorm``.

Both wrap another module (``layer_instance``) and, on each call, run it with some of
its weights replaced by normalised versions: divided by their largest singular value
(``SpectralNorm``) or scaled to unit L2 norm per output feature and multiplied by a
learned ``scale`` (``WeightNorm``).

Difference from ``flax.nnx``: flax.nnx writes the normalised weights *into* the wrapped
layer's parameters on every call, so the stored parameters drift (a ``SpectralNorm``
called twice divides by sigma twice) and gradients reach an already normalised
weight. nnxlib substitutes the normalised weights only for the duration of the wrapped
call and puts the raw parameters back, as ``flax.linen`` does: the raw weights are the
trainable parameters, gradients flow through the normalisation, and repeated calls
give the same result. On a freshly built layer the first call's output is the same as
flax.nnx's.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> layer = nnx.WeightNorm(nnx.Linear(2, 1, use_bias=False, rngs=nnx.Rngs(0)),
...                        rngs=nnx.Rngs(0))
>>> layer.layer_instance.kernel[...] = jnp.array([[3.0], [4.0]])
>>> layer(jnp.array([[1.0, 0.0]]))   # the kernel's column (3, 4) has norm 5
Array([[0.6]], dtype=float32)
>>> layer.layer_instance.kernel[...].tolist()   # the raw parameter is kept
[[3.0], [4.0]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from nnxlib import graph as graphlib
from nnxlib.errors import StateMismatchError, format_path
from nnxlib.filters import PathContains, to_predicate
from nnxlib.module import Module, first_from
from nnxlib.nn import dtypes, initializers
from nnxlib.nn.normalization import Axes, _axes
from nnxlib.rngs import Rngs
from nnxlib.state import to_flat_state
from nnxlib.variables import BatchStat, Param, Variable

__all__ = ["SpectralNorm", "WeightNorm"]


def _l2_normalize(x: jax.Array, axes: tuple[int, ...] | None, eps: float) -> jax.Array:
    """``x`` divided by its L2 norm over ``axes`` (all axes for None)."""
    return x * lax.rsqrt(jnp.sum(x * x, axis=axes, keepdims=True) + eps)


@contextlib.contextmanager
def _substituted(replacements: list[tuple[Variable, jax.Array]]) -> Iterator[None]:
    """Give each variable a temporary value; the old values come back afterwards, also
    when the body raises (the wrapped layer is left as it was)."""
    saved = [(variable, variable.value) for variable, _ in replacements]
    try:
        for variable, value in replacements:
            variable.value = value
        yield
    finally:
        for variable, value in saved:
            variable.value = value


def _variables(layer: Module, filter: Any) -> list[tuple[tuple, Variable]]:
    return list(to_flat_state(graphlib.state(layer, filter, graph=True)))


def _where(path: tuple) -> str:
    return format_path(("layer_instance", *path))


class SpectralNorm(Module):
    """Run ``layer_instance`` with each weight matrix divided by its spectral norm.

    The largest singular value ``sigma`` of each parameter with two or more axes
    (higher-rank ones are flattened to ``(-1, last_axis)``) is estimated by
    ``n_steps`` of power iteration, starting from a stored vector ``u``. In training
    mode (``update_stats=True``) the new ``u`` and ``sigma`` are stored, so the estimate
    improves from call to call; in evaluation mode they are read but not changed.
    ``module.train()`` / ``module.eval()`` switch the mode.

    State: ``batch_stats``, a dict with keys ``(*param_path, 'u')`` (shape
    ``(1, last_axis)``) and ``(*param_path, 'sigma')`` (a scalar), both
    :class:`~nnxlib.BatchStat`; the wrapped layer's parameters are unchanged by calls.

    Args:
        layer_instance: the module to wrap.
        n_steps: power-iteration steps per call (0: no normalisation).
        epsilon: added under the square root of each L2 normalisation.
        dtype: dtype the normalised weights are cast to (default: inferred).
        param_dtype: dtype of ``u`` and ``sigma``.
        error_on_non_matrix: raise for parameters with more than two axes instead of
            flattening them.
        update_stats: default mode (the ``__call__`` argument overrides it).
        rngs: random streams; ``rngs.params()`` draws each ``u``'s initial value.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.SpectralNorm(nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(0)),
        ...                          n_steps=10, rngs=nnx.Rngs(0))
        >>> layer.layer_instance.kernel[...] = jnp.array([[3.0, 0.0], [0.0, 1.0]])
        >>> layer(jnp.eye(2)).round(3)           # divided by sigma = 3
        Array([[1.   , 0.   ],
               [0.   , 0.333]], dtype=float32)
        >>> layer.batch_stats[("kernel", "sigma")][...].round(3)
        Array(3., dtype=float32)
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        n_steps: int = 1,
        epsilon: float = 1e-12,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        error_on_non_matrix: bool = False,
        update_stats: bool = True,
        rngs: Rngs,
    ):
        self.layer_instance = layer_instance
        self.n_steps, self.epsilon = n_steps, epsilon
        self.dtype, self.param_dtype = dtype, param_dtype
        self.error_on_non_matrix = error_on_non_matrix
        # Stored as use_running_average (the inverse) so that train()/eval() switch it.
        self.use_running_average = not update_stats
        stats: dict[tuple, BatchStat] = {}
        for path, param in _variables(layer_instance, Param):
            matrix_shape = self._matrix_shape(path, param)
            if matrix_shape is None:
                continue
            key = rngs.params()
            u = initializers.normal()(key, (1, matrix_shape[1]), param_dtype)
            stats[(*path, "u")] = BatchStat(u)
            stats[(*path, "sigma")] = BatchStat(initializers.ones(key, (), param_dtype))
        self.batch_stats = stats

    def _matrix_shape(self, path: tuple, param: Variable) -> tuple[int, int] | None:
        """The 2-D shape the power iteration sees, or None for a skipped parameter."""
        shape = param.shape
        if len(shape) <= 1 or self.n_steps < 1:
            return None
        if len(shape) > 2 and self.error_on_non_matrix:
            raise ValueError(
                f"SpectralNorm: {_where(path)} has shape {shape} ({len(shape)} axes); "
                "with error_on_non_matrix=True only matrices are accepted. Hint: pass "
                "error_on_non_matrix=False to flatten it to (-1, last axis)."
            )
        return (-1, shape[-1])

    def __call__(self, x: Any, update_stats: bool | None = None) -> Any:
        """Call the wrapped layer with spectrally normalised weights.

        Args:
            x: the wrapped layer's input.
            update_stats: store the new ``u`` and ``sigma`` (overrides the mode).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> layer = nnx.SpectralNorm(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
            >>> before = layer.batch_stats[("kernel", "u")][...]
            >>> _ = layer(jnp.ones((1, 3)), update_stats=False)
            >>> bool((layer.batch_stats[("kernel", "u")][...] == before).all())
            True
        """
        update_stats = first_from(
            update_stats, None if self.use_running_average is None
            else not self.use_running_average,
            error_msg=(
                "SpectralNorm: update_stats is unknown (None at construction and in the "
                "call). Hint: pass update_stats=True/False, or call model.train() / "
                "model.eval()."
            ),
        )
        replacements, new_stats = [], []
        for path, param in _variables(self.layer_instance, Param):
            if self._matrix_shape(path, param) is None:
                continue
            u_stat, sigma_stat = self._stats_for(path)
            normalized, u, sigma = self._normalize(param[...], u_stat[...])
            replacements.append((param, normalized))
            new_stats += [(u_stat, u), (sigma_stat, sigma)]
        with _substituted(replacements):
            out = self.layer_instance(x)
        if update_stats:
            for stat, value in new_stats:
                stat[...] = value
        return out

    def _stats_for(self, path: tuple) -> tuple[BatchStat, BatchStat]:
        try:
            return self.batch_stats[(*path, "u")], self.batch_stats[(*path, "sigma")]
        except KeyError:
            raise StateMismatchError(
                f"SpectralNorm: {_where(path)} has no power-iteration state "
                f"(expected batch_stats[{(*path, 'u')!r}] and [{(*path, 'sigma')!r}]; "
                f"found keys {sorted(self.batch_stats, key=str)}). Hint: the wrapped "
                "layer's parameters changed after SpectralNorm was built; build a new "
                "SpectralNorm around the changed layer."
            ) from None

    def _normalize(self, w: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        matrix = w.reshape(-1, w.shape[-1])
        for _ in range(self.n_steps):
            v = _l2_normalize(u @ matrix.T, None, self.epsilon)
            u = _l2_normalize(v @ matrix, None, self.epsilon)
        # The power iteration estimates sigma; gradients flow through W only.
        u, v = lax.stop_gradient(u), lax.stop_gradient(v)
        sigma = (v @ matrix @ u.T)[0, 0]
        normalized = (matrix / jnp.where(sigma != 0, sigma, 1)).reshape(w.shape)
        out_dtype = dtypes.canonicalize_dtype(normalized, u, v, sigma, dtype=self.dtype)
        return jnp.asarray(normalized, out_dtype), u, sigma


class WeightNorm(Module):
    """Run ``layer_instance`` with selected weights L2-normalised and rescaled.

    Each wrapped variable that matches ``variable_filter`` (default: the ones named
    ``kernel``) is replaced, for the call, by ``w / ||w|| * scale``: the norm is taken
    over every axis except ``feature_axes`` (``None``: over all axes), and ``scale``
    (one entry per feature) is learned. The direction and the magnitude of each weight
    are thus trained separately (Salimans & Kingma, 2016).

    State: ``scales``, a dict keyed by the wrapped variable's path (e.g.
    ``('kernel',)``), or None with ``use_scale=False``. Difference from flax.nnx, whose
    scales are plain arrays that ``nnx.grad`` and ``nnx.Optimizer`` skip: here they are
    :class:`~nnxlib.Param` s, trained like any parameter (same paths and values).

    Args:
        layer_instance: the module to wrap.
        feature_axes: axes that keep one norm (and one scale) per entry.
        use_scale: learn the per-feature scale.
        scale_init: initializer of the scales (it receives a key derived from
            ``rngs.params`` without drawing from it, so the parameters of layers built
            afterwards are those flax.nnx gives).
        epsilon: added under the square root of the norm.
        dtype: dtype the normalised weights are cast to (default: inferred).
        param_dtype: dtype of the scales.
        variable_filter: which of the wrapped layer's variables to normalise.
        promote_dtype: casting function applied to ``(weight, scale)`` before the
            normalisation.
        rngs: random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.WeightNorm(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
        >>> sorted(layer.scales), layer.scales[("kernel",)].shape
        ([('kernel',)], (3,))
        >>> layer(jnp.ones((4, 2))).shape
        (4, 3)
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        feature_axes: Axes | None = -1,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones,
        epsilon: float = 1e-12,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        variable_filter: Any = PathContains("kernel", exact=True),
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        rngs: Rngs,
    ):
        self.layer_instance = layer_instance
        self.feature_axes = () if feature_axes is None else feature_axes
        self.use_scale, self.scale_init = use_scale, scale_init
        self.epsilon, self.dtype, self.param_dtype = epsilon, dtype, param_dtype
        self.variable_filter = to_predicate(variable_filter)
        self.promote_dtype = promote_dtype
        self.scales: dict | None = None
        if use_scale:
            # flax.nnx draws no key here; deriving one (instead of drawing) keeps the
            # stream's count, hence every later layer's parameters, equal to flax's.
            stream = rngs.params
            key = jax.random.fold_in(jax.random.fold_in(stream.key[...], stream.count[...]),
                                     0x5CA1E)
            scales = {}
            for path, variable in self._selected():
                shape = tuple(variable.shape[a] for a in self._feature_axes(variable.ndim))
                scales[path] = Param(scale_init(key, shape, param_dtype))
            self.scales = scales

    def _feature_axes(self, ndim: int) -> tuple[int, ...]:
        return _axes(ndim, self.feature_axes)

    def _selected(self) -> list[tuple[tuple, Variable]]:
        return [(p, v) for p, v in _variables(self.layer_instance, Variable)
                if self.variable_filter(p, v)]

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped layer (with any further arguments) on normalised weights.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> layer = nnx.WeightNorm(nnx.Linear(2, 1, use_bias=False, rngs=nnx.Rngs(0)),
            ...                        feature_axes=None, rngs=nnx.Rngs(0))
            >>> layer.layer_instance.kernel[...] = jnp.array([[0.0], [-2.0]])
            >>> layer(jnp.array([[1.0, 1.0]]))
            Array([[-1.]], dtype=float32)
        """
        replacements = []
        for path, variable in self._selected():
            w = variable[...]
            features = self._feature_axes(w.ndim)
            reduce = tuple(i for i in range(w.ndim) if i not in features)
            scale = None
            if self.use_scale:
                scale = self._scale_for(path, variable)[...]
                # One scale per feature entry, broadcast along the reduced axes.
                scale = scale.reshape([w.shape[i] if i in features else 1
                                       for i in range(w.ndim)])
            out_dtype = dtypes.canonicalize_dtype(w, scale, dtype=self.dtype)
            w, scale = self.promote_dtype((w, scale), dtype=None)
            normalized = _l2_normalize(w, reduce, self.epsilon)
            if scale is not None:
                normalized = normalized * scale
            replacements.append((variable, jnp.asarray(normalized, out_dtype)))
        with _substituted(replacements):
            return self.layer_instance(x, *args, **kwargs)

    def _scale_for(self, path: tuple, variable: Variable) -> Param:
        scales = self.scales or {}
        if path not in scales:
            raise StateMismatchError(
                f"WeightNorm: {_where(path)} has no scale (expected scales[{path!r}]; "
                f"found {sorted(scales, key=str)}). Hint: the wrapped layer's variables "
                "changed after WeightNorm was built; build a new WeightNorm around it."
            )
        want = tuple(variable.shape[a] for a in self._feature_axes(variable.ndim))
        if scales[path].shape != want:
            raise StateMismatchError(
                f"WeightNorm: scales[{path!r}] has shape {scales[path].shape}, but "
                f"{_where(path)} of shape {variable.shape} needs {want} (feature axes "
                f"{self.feature_axes}). Hint: the scale holds one entry per feature; "
                "rebuild WeightNorm after changing the wrapped layer."
            )
        return scales[path]
