"""Multi-head attention (``MultiHeadAttention``) and the attention functions it uses.

The functions (``dot_product_attention``, masks) live in
:mod:`nnxlib.nn.attention_functions` and are re-exported here, where flax.nnx has them.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(0))
>>> x = jnp.ones((3, 5, 8))                     # batch 3, length 5, 8 features
>>> attn(x, mask=nnx.make_causal_mask(x[..., 0])).shape
(3, 5, 8)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from nnxlib.errors import CacheNotInitializedError, ShapeMismatchError, format_path
from nnxlib.module import Module, first_from
from nnxlib.nn import dtypes, initializers
from nnxlib.nn.attention_functions import (
    check_mask_shape,
    combine_masks,
    dot_product_attention,
    dot_product_attention_weights,
    make_attention_mask,
    make_causal_mask,
)
from nnxlib.nn.linear import LinearGeneral
from nnxlib.nn.normalization import LayerNorm
from nnxlib.rngs import Rngs, RngStream
from nnxlib.variables import Cache

__all__ = [
    "MultiHeadAttention",
    "combine_masks",
    "dot_product_attention",
    "dot_product_attention_weights",
    "make_attention_mask",
    "make_causal_mask",
]

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
_NAME = "MultiHeadAttention"


def _where(*path: Any) -> str:
    """``MultiHeadAttention.query.kernel``: the layer and the part of it that is meant."""
    return format_path(path, root=_NAME)


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention with learned projections.

    The inputs are projected to ``num_heads`` query heads and ``num_kv_heads`` key and
    value heads of size ``qkv_features // num_heads`` (submodules ``query``, ``key``,
    ``value``: ``LinearGeneral`` maps with kernels ``(in, heads, head_dim)``), combined
    by ``attention_fn`` and projected back to ``out_features`` by ``out`` (kernel
    ``(num_heads, head_dim, out_features)``). Parameter paths, shapes and, for the same
    ``Rngs``, values are those of ``flax.nnx.MultiHeadAttention``.

    Called with one input it is self-attention; ``inputs_k`` (and ``inputs_v``, which
    defaults to ``inputs_k``) make it cross-attention.

    **Decoding.** With ``decode=True`` (constructor or call) the layer keeps the keys
    and values of past positions in ``Cache`` variables ``cached_key``,
    ``cached_value`` (``[batch..., max_length, num_kv_heads, head_dim]``) and
    ``cache_index``, created by :meth:`init_cache`; each call takes one position
    (length 1), stores its key and value at ``cache_index`` and attends to positions
    ``<= cache_index``. Decoding past ``max_length`` positions is not detected under
    ``jit`` (``lax.dynamic_update_slice`` clamps the index); size the cache for the
    whole sequence.

    **Dropout** on the attention weights (``dropout_rate > 0``) needs
    ``deterministic=False`` (constructor, call, or ``model.train()``) and keys: a stream
    forked from ``rngs.dropout`` at construction when ``keep_rngs=True``, or ``rngs``
    passed to the call.

    Differences from flax.nnx: ``decode=None`` in both constructor and call means "not
    decoding" (flax raises); ``attention_fn`` receives ``is_causal`` only when it is
    True, so functions written for ``flax.linen``'s signature work; errors on bad
    shapes name the part of the layer and the expected shape.

    Args:
        num_heads: number of query heads; ``qkv_features`` must be divisible by it.
        in_features: size of the last axis of ``inputs_q``.
        qkv_features: total size of the query/key/value projections (default
            ``in_features``).
        out_features: size of the output's last axis (default ``in_features``).
        num_kv_heads: key/value heads (default ``num_heads``); fewer is grouped-query
            attention and must divide ``num_heads``.
        in_kv_features: last-axis size of ``inputs_k``/``inputs_v`` (default
            ``in_features``).
        dtype: computation dtype (default: inferred from inputs and parameters).
        param_dtype: dtype the parameters are created in.
        broadcast_dropout: share one dropout mask over batch and heads.
        dropout_rate: dropout rate of the attention weights.
        deterministic: default for the call's ``deterministic``.
        precision: ``lax.Precision`` for every matrix product.
        kernel_init, bias_init: initializers of the projections.
        out_kernel_init, out_bias_init: for the output projection (default: the above).
        use_bias: whether the four projections have biases.
        attention_fn: ``dot_product_attention`` or a function with its signature.
        decode: default for the call's ``decode``.
        normalize_qk: apply a ``LayerNorm`` (no bias) to each query and key head
            (submodules ``query_ln``, ``key_ln``).
        qkv_promote_dtype, out_promote_dtype, ln_promote_dtype: dtype promotion of the
            projections and the ``LayerNorm`` s.
        qkv_dot_general, out_dot_general, qkv_dot_general_cls, out_dot_general_cls:
            replacement contraction functions (or factories of them) for the projections.
        rngs: random streams; ``params`` initialises the parameters.
        keep_rngs: store a dropout stream forked from ``rngs`` (when ``dropout_rate >
            0``) so calls need no ``rngs``.
        kernel_metadata, bias_metadata, out_kernel_metadata, out_bias_metadata, query_ln_scale_metadata, key_ln_scale_metadata: variable metadata, e.g.
            sharding names.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> attn = nnx.MultiHeadAttention(4, 16, qkv_features=32, out_features=8,
        ...                               decode=False, rngs=nnx.Rngs(0))
        >>> attn.query.kernel.shape, attn.out.kernel.shape
        ((16, 4, 8), (4, 8, 8))
        >>> q, kv = jnp.ones((2, 3, 16)), jnp.ones((2, 7, 16))
        >>> attn(q, kv).shape                          # cross-attention
        (2, 3, 8)
    """

    def __init__(
        self, num_heads: int, in_features: int,
        # Sizes that default to in_features (num_kv_heads: to num_heads).
        qkv_features: int | None = None, out_features: int | None = None,
        num_kv_heads: int | None = None, in_kv_features: int | None = None,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        broadcast_dropout: bool = True,
        dropout_rate: float = 0.0,
        deterministic: bool | None = None,
        precision: Any = None,
        kernel_init: Callable[..., Any] = initializers.lecun_normal(),
        out_kernel_init: Callable[..., Any] | None = None,
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        out_bias_init: Callable[..., Any] | None = None,
        use_bias: bool = True,
        attention_fn: Callable[..., jax.Array] = dot_product_attention,
        decode: bool | None = None,
        normalize_qk: bool = False,
        qkv_promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        out_promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        ln_promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        qkv_dot_general: Callable[..., jax.Array] | None = None,
        out_dot_general: Callable[..., jax.Array] | None = None,
        qkv_dot_general_cls: Any = None,
        out_dot_general_cls: Any = None,
        rngs: Rngs,
        keep_rngs: bool = True,
        kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        out_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        out_bias_metadata: Mapping[str, Any] = _NO_METADATA,
        query_ln_scale_metadata: Mapping[str, Any] = _NO_METADATA,
        key_ln_scale_metadata: Mapping[str, Any] = _NO_METADATA,
    ):
        self.num_heads = num_heads
        self.in_features = in_features
        self.qkv_features = in_features if qkv_features is None else qkv_features
        self.out_features = in_features if out_features is None else out_features
        self.in_kv_features = in_features if in_kv_features is None else in_kv_features
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.qkv_features % num_heads:
            raise ValueError(
                f"{_NAME}: qkv_features ({self.qkv_features}) must be divisible by "
                f"num_heads ({num_heads}): each head gets qkv_features // num_heads "
                "features. Hint: change qkv_features or num_heads."
            )
        if num_heads % self.num_kv_heads:
            raise ValueError(
                f"{_NAME}: num_heads ({num_heads}) must be divisible by num_kv_heads "
                f"({self.num_kv_heads}) (each key/value head serves a group of query "
                "heads)."
            )
        self.head_dim = self.qkv_features // num_heads
        self.dtype, self.param_dtype = dtype, param_dtype
        self.broadcast_dropout, self.dropout_rate = broadcast_dropout, dropout_rate
        self.deterministic, self.decode = deterministic, decode
        self.precision, self.use_bias = precision, use_bias
        self.attention_fn, self.normalize_qk = attention_fn, normalize_qk
        self.qkv_promote_dtype = qkv_promote_dtype
        self.out_promote_dtype = out_promote_dtype
        self.ln_promote_dtype = ln_promote_dtype
        self.qkv_dot_general, self.out_dot_general = qkv_dot_general, out_dot_general
        self.qkv_dot_general_cls, self.out_dot_general_cls = (
            qkv_dot_general_cls, out_dot_general_cls)

        projection = functools.partial(
            LinearGeneral, dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init,
            bias_init=bias_init, use_bias=use_bias, precision=precision,
            promote_dtype=qkv_promote_dtype, dot_general=qkv_dot_general,
            dot_general_cls=qkv_dot_general_cls, kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata, rngs=rngs,
        )
        # Keys are drawn in this order (query, key, value, [norms], out), as in flax.nnx.
        self.query = projection(in_features, (num_heads, self.head_dim))
        self.key = projection(self.in_kv_features, (self.num_kv_heads, self.head_dim))
        self.value = projection(self.in_kv_features, (self.num_kv_heads, self.head_dim))
        self.query_ln: LayerNorm | None = None
        self.key_ln: LayerNorm | None = None
        if normalize_qk:
            norm = functools.partial(
                LayerNorm, self.head_dim, use_bias=False, dtype=dtype,
                param_dtype=param_dtype, promote_dtype=ln_promote_dtype, rngs=rngs,
            )
            self.query_ln = norm(scale_metadata=query_ln_scale_metadata)
            self.key_ln = norm(scale_metadata=key_ln_scale_metadata)
        self.out = LinearGeneral(
            (num_heads, self.head_dim), self.out_features, axis=(-2, -1),
            kernel_init=out_kernel_init or kernel_init,
            bias_init=out_bias_init or bias_init, use_bias=use_bias, dtype=dtype,
            param_dtype=param_dtype, precision=precision, promote_dtype=out_promote_dtype,
            dot_general=out_dot_general, dot_general_cls=out_dot_general_cls, rngs=rngs,
            kernel_metadata=out_kernel_metadata or kernel_metadata,
            bias_metadata=out_bias_metadata or bias_metadata,
        )
        self.rngs: RngStream | None = (
            rngs.dropout.fork() if keep_rngs and dropout_rate > 0 else None)
        self.cached_key: Cache | None = None
        self.cached_value: Cache | None = None
        self.cache_index: Cache | None = None

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
        rngs: Rngs | RngStream | jax.Array | None = None,
        sow_weights: bool = False,
        decode: bool | None = None,
        is_causal: bool = False,
        out_sharding: Any = None,
        qkv_sharding: Any = None,
    ) -> jax.Array:
        """Attend from ``inputs_q`` ``[batch..., q_length, in_features]`` to ``inputs_k``
        / ``inputs_v`` (default: ``inputs_q``); returns ``[batch..., q_length,
        out_features]``.

        ``mask`` broadcasts to ``[batch..., num_heads, q_length, kv_length]`` (False
        drops a key position); ``is_causal`` adds the causal mask. ``deterministic``,
        ``decode`` and ``rngs`` override what the constructor set. ``sow_weights`` records
        the attention weights as ``nnx.Intermediate`` ``attention_weights``.
        ``qkv_sharding`` / ``out_sharding`` are given to the projections' matmuls.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> attn = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
            >>> x = jnp.ones((1, 3, 4))
            >>> bool(jnp.allclose(attn(x), attn(x, x, x)))
            True
            >>> _ = attn(x, sow_weights=True)
            >>> attn.attention_weights.value[0].shape      # [batch, heads, q, kv]
            (1, 2, 3, 3)
        """
        if inputs_k is None:
            if inputs_v is not None:
                raise ValueError(
                    f"{_NAME}: inputs_v was given without inputs_k. Hint: pass the same "
                    "array as inputs_k and leave inputs_v out to use it for both."
                )
            inputs_k = inputs_q
        if inputs_v is None:
            inputs_v = inputs_k
        self._check_features(inputs_q, inputs_k, inputs_v)
        decode = bool(first_from(decode, self.decode, False, error_msg=""))
        if decode:
            self._check_cache(inputs_q, inputs_k)
        weights_shape = self._weights_shape(inputs_q, inputs_k, decode)
        if mask is not None:
            check_mask_shape(mask, weights_shape, f"{_NAME} (argument mask)")

        query = self.query(inputs_q, out_sharding=qkv_sharding)
        key = self.key(inputs_k, out_sharding=qkv_sharding)
        value = self.value(inputs_v, out_sharding=qkv_sharding)
        if self.normalize_qk:
            query, key = self.query_ln(query), self.key_ln(key)

        new_cache = None
        if decode:
            index = self.cache_index[...]
            zero = jnp.zeros((), index.dtype)
            start = (zero,) * (key.ndim - 3) + (index, zero, zero)
            key = lax.dynamic_update_slice(self.cached_key[...], key.astype(
                self.cached_key.dtype), start)
            value = lax.dynamic_update_slice(self.cached_value[...], value.astype(
                self.cached_value.dtype), start)
            new_cache = (key, value, index + 1)
            # The one query sees the positions written so far, itself included.
            max_length = key.shape[-3]
            seen = jnp.broadcast_to(jnp.arange(max_length) <= index,
                                    (*key.shape[:-3], 1, 1, max_length))
            if mask is not None and jnp.ndim(mask) != seen.ndim:
                mask = jnp.broadcast_to(mask, weights_shape)
            mask = combine_masks(mask, seen)

        dropout_rng, deterministic = self._dropout_key(deterministic, rngs)
        extra = {"is_causal": True} if is_causal else {}
        x = self.attention_fn(
            query, key, value, mask=mask, dropout_rng=dropout_rng,
            dropout_rate=self.dropout_rate, broadcast_dropout=self.broadcast_dropout,
            deterministic=deterministic, dtype=self.dtype, precision=self.precision,
            module=self if sow_weights else None, **extra,
        )
        out = self.out(x, out_sharding=out_sharding)
        if new_cache is not None:
            # Written last: a failing call leaves the cache as it was.
            self.cached_key[...], self.cached_value[...], self.cache_index[...] = new_cache
        return out

    def init_cache(self, input_shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> None:
        """Create (or reset) the decoding cache for inputs of shape ``input_shape``:
        ``[batch..., max_length, features]``, the shape of the whole sequence to decode.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> attn = nnx.MultiHeadAttention(2, 4, decode=True, rngs=nnx.Rngs(0))
            >>> attn.init_cache((1, 10, 4))
            >>> attn.cached_key.shape, int(attn.cache_index[...])
            ((1, 10, 2, 2), 0)
            >>> attn(jnp.ones((1, 1, 4))).shape                  # one position per call
            (1, 1, 4)
            >>> int(attn.cache_index[...])
            1
        """
        shape = (*tuple(input_shape)[:-1], self.num_kv_heads, self.head_dim)
        if len(shape) < 3:
            raise ShapeMismatchError(
                f"{_NAME}.init_cache: expected input_shape [batch..., max_length, "
                f"features], got {tuple(input_shape)}. Hint: pass the shape of the full "
                "sequence, e.g. (batch, max_length, in_features)."
            )
        self.cached_key = Cache(jnp.zeros(shape, dtype))
        self.cached_value = Cache(jnp.zeros(shape, dtype))
        self.cache_index = Cache(jnp.array(0, dtype=jnp.int32))

    def set_view(
        self,
        deterministic: bool | None = None,
        decode: bool | None = None,
        batch_size: int | Sequence[int] | None = None,
        max_length: int | None = None,
    ) -> None:
        """Set the mode attributes; switching to ``decode`` without a cache creates one
        of ``batch_size`` (an int or a shape) by ``max_length`` positions.

        Example:
            >>> import nnxlib as nnx
            >>> attn = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
            >>> attn.set_view(decode=True, batch_size=3, max_length=8)
            >>> attn.decode, attn.cached_value.shape
            (True, (3, 8, 2, 2))
        """
        if deterministic is not None:
            self.deterministic = deterministic
        if decode is None:
            return
        self.decode = decode
        if decode and self.cached_key is None:
            if batch_size is None or max_length is None:
                raise TypeError(
                    f"{_NAME}.set_view(decode=True): the layer has no cache yet, so "
                    "batch_size and max_length are needed to create one."
                )
            batch = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
            dtype = self.dtype if self.dtype is not None else jnp.float32
            self.init_cache((*batch, max_length, self.in_features), dtype)

    # ------------------------------------------------------------------ checks

    def _check_features(self, inputs_q: Any, inputs_k: Any, inputs_v: Any) -> None:
        expected = (("inputs_q", inputs_q, "query", self.in_features),
                    ("inputs_k", inputs_k, "key", self.in_kv_features),
                    ("inputs_v", inputs_v, "value", self.in_kv_features))
        for arg, x, part, size in expected:
            shape = jnp.shape(x)
            if len(shape) < 2 or shape[-1] != size:
                raise ShapeMismatchError(
                    f"{_where(part, 'kernel')}: expected {arg} of shape [batch..., length, "
                    f"{size}] (the projection's input features), got shape {shape}. Hint: "
                    f"set in_features{'' if part == 'query' else ' / in_kv_features'} to "
                    "the inputs' last axis, or fix the previous layer."
                )
        if jnp.shape(inputs_k)[:-1] != jnp.shape(inputs_v)[:-1]:
            raise ShapeMismatchError(
                f"{_NAME}: inputs_k and inputs_v must agree on [batch..., length], got "
                f"shapes {jnp.shape(inputs_k)} and {jnp.shape(inputs_v)}."
            )
        if jnp.shape(inputs_q)[:-2] != jnp.shape(inputs_k)[:-2]:
            raise ShapeMismatchError(
                f"{_NAME}: inputs_q and inputs_k must have the same batch axes, got "
                f"shapes {jnp.shape(inputs_q)} and {jnp.shape(inputs_k)}."
            )

    def _check_cache(self, inputs_q: Any, inputs_k: Any) -> None:
        if self.cached_key is None or self.cached_value is None or self.cache_index is None:
            raise CacheNotInitializedError(
                f"{_where('cached_key')} does not exist: decode=True needs the "
                "autoregressive cache, and init_cache has not been called. Hint: call "
                "layer.init_cache((batch, max_length, in_features)) once before decoding "
                "(for a whole model: for each attention layer, or with "
                "nnx.view/set_view(decode=True, batch_size=..., max_length=...))."
            )
        *batch, _, heads, depth = self.cached_key.shape
        expected = (*batch, 1)
        for arg, x in (("inputs_q", inputs_q), ("inputs_k", inputs_k)):
            if tuple(jnp.shape(x)[:-1]) != expected:
                raise ShapeMismatchError(
                    f"{_where('cached_key')} has shape {self.cached_key.shape}, so decoding "
                    f"takes one position at a time: expected {arg} of shape "
                    f"{(*expected, '...')!r}, got {jnp.shape(x)}. Hint: feed x[..., i:i+1, "
                    ":] per step, or call init_cache with this batch shape."
                )

    def _weights_shape(self, inputs_q: Any, inputs_k: Any, decode: bool) -> tuple[int, ...]:
        *batch, q_length, _ = jnp.shape(inputs_q)
        kv_length = self.cached_key.shape[-3] if decode else jnp.shape(inputs_k)[-2]
        return (*batch, self.num_heads, q_length, kv_length)

    def _dropout_key(self, deterministic: bool | None, rngs: Any) -> tuple[Any, bool]:
        """The dropout key (None when not dropping) and the resolved mode."""
        if self.dropout_rate <= 0.0:
            return None, True
        deterministic = first_from(
            deterministic, self.deterministic,
            error_msg=(
                f"{_NAME}: dropout_rate is {self.dropout_rate} but deterministic is None in "
                "both the constructor and the call. Hint: pass deterministic=True/False, or "
                "call model.train() / model.eval()."
            ),
        )
        if deterministic:
            return None, True
        source = self.rngs if rngs is None else rngs
        if isinstance(source, Rngs):
            return source.dropout(), False
        if isinstance(source, RngStream):
            return source(), False
        if isinstance(source, jax.Array):
            return source, False
        raise ValueError(
            f"{_where('rngs')}: dropout is on (deterministic=False) but no random key is "
            "available: the layer was built with keep_rngs=False (or without a dropout "
            "rate) and the call got no rngs. Hint: call layer(x, rngs=nnx.Rngs(dropout=0)) "
            "or pass deterministic=True."
        )
