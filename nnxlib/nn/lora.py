"""Low-rank adapters: ``LoRA``, ``LoRALinear`` and their variable kind ``LoRAParam``.

A LoRA adapter adds ``x @ a @ b`` to a layer's output, with ``a`` of shape ``(in,
rank)`` and ``b`` ``(rank, out)`` for a small ``rank``. ``b`` starts at zero, so a fresh
adapter leaves the layer unchanged; training only the adapter means filtering on
:class:`LoRAParam`.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> layer = nnx.LoRALinear(4, 3, lora_rank=2, rngs=nnx.Rngs(0))
>>> x = jnp.ones((1, 4))
>>> bool(jnp.allclose(layer(x), x @ layer.kernel[...] + layer.bias[...]))  # b = 0 at start
True
>>> sorted(nnx.state(layer, nnx.LoRAParam)["lora"])
['lora_a', 'lora_b']
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from nnxlib.module import Module
from nnxlib.nn import dtypes, initializers
from nnxlib.nn._checks import check_last_axis, config_error, layer_text
from nnxlib.nn.linear import Linear
from nnxlib.rngs import Rngs
from nnxlib.variables import A, Param, Variable

__all__ = ["LoRA", "LoRALinear", "LoRAParam"]

#: ``a`` starts He-uniform, ``b`` at zero: the adapter's output starts at zero.
default_a_initializer = initializers.he_uniform()
default_b_initializer = initializers.zeros

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class LoRAParam(Param[A]):
    """The variable kind of LoRA adapter matrices: a :class:`~nnxlib.Param`, so optimisers
    see it as a parameter, but filterable on its own (``nnx.state(model, nnx.LoRAParam)``,
    ``nnx.DiffState(0, nnx.LoRAParam)``) to train only the adapters.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> isinstance(nnx.LoRAParam(jnp.zeros(2)), nnx.Param)
        True
    """


class LoRA(Module):
    """A low-rank update ``x @ lora_a @ lora_b``, alone or added to a ``base_module``.

    With ``base_module`` set, the call returns ``base_module(x, **kwargs) + x @ lora_a @
    lora_b`` (``x`` after dtype promotion), wrapping an existing layer without touching it.

    State: ``lora_a`` ``(in_features, lora_rank)`` and ``lora_b`` ``(lora_rank,
    out_features)``, of kind ``lora_param_type`` (``a`` drawn first from ``params``).

    Args:
        in_features: size of the input's last axis.
        lora_rank: inner rank of the update.
        out_features: size of the output's last axis.
        base_module: optional callable module whose output the update is added to.
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype of ``lora_a`` and ``lora_b``.
        a_initializer: initializer of ``lora_a``.
        b_initializer: initializer of ``lora_b`` (zeros by default).
        lora_param_type: the variable class of both matrices.
        promote_dtype: casting function for ``(x, lora_a, lora_b)``.
        rngs: the random streams.
        a_metadata: extra metadata of ``lora_a``.
        b_metadata: extra metadata of ``lora_b``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> base = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> adapted = nnx.LoRA(3, 2, 4, base_module=base, rngs=nnx.Rngs(1))
        >>> x = jnp.ones((5, 3))
        >>> bool(jnp.allclose(adapted(x), base(x)))   # lora_b starts at zero
        True
    """

    def __init__(
        self,
        in_features: int,
        lora_rank: int,
        out_features: int,
        *,
        base_module: Module | None = None,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        a_initializer: Callable[..., Any] = default_a_initializer,
        b_initializer: Callable[..., Any] = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = _NO_METADATA,
        b_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        if base_module is not None and not callable(base_module):
            raise config_error(
                layer_text("LoRA", in_features, lora_rank, out_features),
                "a callable base_module (a layer)", f"a {type(base_module).__name__}",
                "pass the layer to adapt, e.g. base_module=nnx.Linear(...), or None.")
        self.in_features, self.out_features = in_features, out_features
        self.dtype, self.param_dtype = dtype, param_dtype
        self.lora_param_type, self.promote_dtype = lora_param_type, promote_dtype
        self.base_module = base_module
        self.lora_a = lora_param_type(
            a_initializer(rngs.params(), (in_features, lora_rank), param_dtype), **a_metadata)
        self.lora_b = lora_param_type(
            b_initializer(rngs.params(), (lora_rank, out_features), param_dtype), **b_metadata)

    def __call__(self, x: jax.Array, **kwargs: Any) -> jax.Array:
        """The update (plus the base module's output); ``kwargs`` go to the base module.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> lora = nnx.LoRA(3, 1, 2, b_initializer=nnx.initializers.ones,
            ...                 a_initializer=nnx.initializers.ones, rngs=nnx.Rngs(0))
            >>> lora(jnp.array([1.0, 2.0, 3.0]))
            Array([6., 6.], dtype=float32)
        """
        check_last_axis(
            layer_text("LoRA", self.in_features, self.lora_a.shape[-1], self.out_features),
            x, self.lora_a.shape[0], "lora_a's first axis, in_features",
            "the adapter takes the same inputs as the layer it adapts.")
        x, a, b = self.promote_dtype((x, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        out = x @ a @ b
        if self.base_module is not None:
            out = out + self.base_module(x, **kwargs)
        return out


class LoRALinear(Linear):
    """A :class:`~nnxlib.Linear` with a :class:`LoRA` adapter added to its output.

    Its state is ``Linear``'s (``kernel``, ``bias``) plus ``lora.lora_a`` and
    ``lora.lora_b``, so a ``Linear`` checkpoint loads into it for the shared paths.
    Parameters are drawn in that order from the ``params`` stream.

    Args:
        in_features: size of the input's last axis.
        out_features: size of the output's last axis.
        lora_rank: inner rank of the adapter.
        lora_dtype: computation dtype of the adapter.
        lora_param_dtype: dtype of the adapter's matrices.
        a_initializer: initializer of ``lora.lora_a``.
        b_initializer: initializer of ``lora.lora_b`` (zeros by default).
        lora_param_type: the variable class of the adapter's matrices.
        lora_promote_dtype: casting function of the adapter.
        rngs: the random streams.
        a_metadata: extra metadata of ``lora.lora_a``.
        b_metadata: extra metadata of ``lora.lora_b``.
        **kwargs: any other :class:`~nnxlib.Linear` argument (``use_bias``, ``dtype``,
            ``kernel_init``, ...).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.LoRALinear(3, 4, lora_rank=2, rngs=nnx.Rngs(0))
        >>> layer.kernel.shape, layer.lora.lora_a.shape, layer(jnp.ones((2, 3))).shape
        ((3, 4), (3, 2), (2, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        lora_rank: int,
        lora_dtype: DTypeLike | None = None,
        lora_param_dtype: DTypeLike = jnp.float32,
        a_initializer: Callable[..., Any] = default_a_initializer,
        b_initializer: Callable[..., Any] = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        lora_promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = _NO_METADATA,
        b_metadata: Mapping[str, Any] = _NO_METADATA,
        **kwargs: Any,
    ):
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)
        self.lora = LoRA(
            in_features, lora_rank, out_features, dtype=lora_dtype,
            param_dtype=lora_param_dtype, a_initializer=a_initializer,
            b_initializer=b_initializer, lora_param_type=lora_param_type,
            promote_dtype=lora_promote_dtype, rngs=rngs, a_metadata=a_metadata,
            b_metadata=b_metadata)

    def __call__(self, x: jax.Array, out_sharding: Any = None) -> jax.Array:
        """``Linear``'s output plus the adapter's.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.LoRALinear(2, 5, lora_rank=1, rngs=nnx.Rngs(0))(jnp.ones(2)).shape
            (5,)
        """
        return super().__call__(x, out_sharding=out_sharding) + self.lora(x)
