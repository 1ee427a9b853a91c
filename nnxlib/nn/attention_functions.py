"""Scaled dot-product attention as functions, and the helpers that build its masks.

Shapes follow flax: queries ``[batch..., q_length, num_heads, depth]``, keys and values
``[batch..., kv_length, num_kv_heads, depth]``; weights and masks
``[batch..., num_heads, q_length, kv_length]`` (masks broadcast to that). A mask entry
that is False (or 0) removes that key position from that query's softmax.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> q = k = v = jnp.ones((2, 5, 4, 8))          # batch 2, length 5, 4 heads of depth 8
>>> mask = nnx.make_causal_mask(jnp.ones((2, 5)))
>>> mask.shape
(2, 1, 5, 5)
>>> nnx.dot_product_attention(q, k, v, mask=mask).shape
(2, 5, 4, 8)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from nnxlib.errors import ShapeMismatchError
from nnxlib.nn import dtypes
from nnxlib.variables import Intermediate

__all__ = [
    "combine_masks",
    "dot_product_attention",
    "dot_product_attention_weights",
    "make_attention_mask",
    "make_causal_mask",
]


def _check_qkv(query: jax.Array, key: jax.Array, value: jax.Array | None = None) -> None:
    """Same rank, same batch axes, matching depths, heads that group evenly."""
    named = [("query", query), ("key", key)] + ([("value", value)] if value is not None else [])
    shapes = ", ".join(f"{n} {a.shape}" for n, a in named)
    if any(a.ndim != query.ndim for _, a in named) or query.ndim < 3:
        raise ShapeMismatchError(
            f"dot_product_attention: query, key and value must have the same rank (at "
            f"least 3: [batch..., length, heads, depth]), got {shapes}. Hint: add the "
            "heads axis, e.g. x[..., None, :] for one head."
        )
    if any(a.shape[:-3] != query.shape[:-3] for _, a in named):
        raise ShapeMismatchError(
            f"dot_product_attention: the batch axes (all but the last 3) must be equal, "
            f"got {shapes}."
        )
    if query.shape[-1] != key.shape[-1]:
        raise ShapeMismatchError(
            f"dot_product_attention: query and key depths (last axis) must be equal, got "
            f"{shapes}."
        )
    if value is not None and key.shape[-3] != value.shape[-3]:
        raise ShapeMismatchError(
            f"dot_product_attention: key and value lengths (axis -3) must be equal, got "
            f"{shapes}."
        )
    for name, a in named[1:]:
        if query.shape[-2] % a.shape[-2]:
            raise ShapeMismatchError(
                f"dot_product_attention: the query heads ({query.shape[-2]}) must be a "
                f"multiple of the {name} heads ({a.shape[-2]}) (grouped-query attention), "
                f"got {shapes}."
            )


def check_mask_shape(mask: Any, weights_shape: tuple[int, ...], where: str) -> None:
    """Raise a ``ShapeMismatchError`` unless ``mask`` (or a bias) broadcasts to the
    attention weights' shape ``[batch..., heads, q_length, kv_length]``.

    Example:
        >>> check_mask_shape(jnp.ones((1, 1, 3, 3)), (2, 4, 3, 3), "demo")
        >>> try:
        ...     check_mask_shape(jnp.ones((3, 4)), (2, 4, 3, 3), "demo")
        ... except ShapeMismatchError as e:
        ...     print(str(e)[:52])
        demo: expected a mask broadcastable to the attention
    """
    shape = tuple(jnp.shape(mask))
    ok = len(shape) <= len(weights_shape) and all(
        m in (1, w) for m, w in zip(reversed(shape), reversed(weights_shape))
    )
    if not ok:
        raise ShapeMismatchError(
            f"{where}: expected a mask broadcastable to the attention weights' shape "
            f"{weights_shape} ([batch..., num_heads, q_length, kv_length]), got shape "
            f"{shape}. Hint: build masks with nnx.make_attention_mask / "
            "nnx.make_causal_mask, which add the heads axis as size 1."
        )


def dot_product_attention_weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: DTypeLike | None = None,
    precision: Any = None,
    module: Any = None,
    promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
    is_causal: bool = False,
) -> jax.Array:
    """Softmax attention weights ``[batch..., num_heads, q_length, kv_length]``.

    Logits are ``query . key / sqrt(depth)`` plus ``bias``; positions where ``mask`` (or,
    with ``is_causal``, the lower-triangular causal mask) is False get the most negative
    finite value of the dtype before the softmax, so a fully masked row is uniform rather
    than NaN. With ``deterministic=False`` and ``dropout_rate > 0`` the weights are
    dropped with keys from ``dropout_rng`` (one mask shared over batch and heads when
    ``broadcast_dropout``) and rescaled by ``1 / (1 - dropout_rate)``. Given ``module``,
    the weights (before dropout) are recorded with
    ``module.sow(nnx.Intermediate, 'attention_weights', ...)``. Fewer key heads than
    query heads (a divisor) is grouped-query attention: each key head serves
    ``num_heads // num_kv_heads`` consecutive query heads.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> q = k = jnp.ones((3, 1, 2))                 # length 3, 1 head, depth 2
        >>> nnx.dot_product_attention_weights(q, k, is_causal=True)[0]
        Array([[1.        , 0.        , 0.        ],
               [0.5       , 0.5       , 0.        ],
               [0.33333334, 0.33333334, 0.33333334]], dtype=float32)
    """
    query, key = promote_dtype((query, key), dtype=dtype)
    dtype = query.dtype
    _check_qkv(query, key)
    heads, kv_heads = query.shape[-2], key.shape[-2]
    weights_shape = (*query.shape[:-3], heads, query.shape[-3], key.shape[-3])
    if mask is not None:
        check_mask_shape(mask, weights_shape, "dot_product_attention_weights")
    if bias is not None:
        check_mask_shape(bias, weights_shape, "dot_product_attention_weights (bias)")
    # Scaling the queries (length x depth) is cheaper than scaling the logits.
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    if heads == kv_heads:
        logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    else:
        group = heads // kv_heads
        grouped = query.reshape(*query.shape[:-2], kv_heads, group, query.shape[-1])
        logits = jnp.einsum("...qhgd,...khd->...hgqk", grouped, key, precision=precision)
        logits = logits.reshape(weights_shape)
    if bias is not None:
        logits = logits + bias
    if is_causal:
        causal = jnp.tril(jnp.ones(weights_shape[-2:], jnp.bool_))
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(logits).astype(dtype)
    if module is not None:
        module.sow(Intermediate, "attention_weights", weights)
    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError(
                "dot_product_attention_weights: dropout is on (deterministic=False, "
                f"dropout_rate={dropout_rate}) but dropout_rng is None. Hint: pass "
                "dropout_rng=jax.random.key(...) or deterministic=True."
            )
        keep_prob = 1.0 - dropout_rate
        if broadcast_dropout:
            # One mask for every batch entry and head: [1..., q_length, kv_length].
            drop_shape = (1,) * (len(weights_shape) - 2) + weights_shape[-2:]
        else:
            drop_shape = weights_shape
        keep = jax.random.bernoulli(dropout_rng, keep_prob, drop_shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return weights


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: DTypeLike | None = None,
    precision: Any = None,
    module: Any = None,
    promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
    is_causal: bool = False,
) -> jax.Array:
    """Attention output ``[batch..., q_length, num_heads, v_depth]``: the values averaged
    with :func:`dot_product_attention_weights` (see there for every argument).

    The arrays need no batch axes: ``[length, heads, depth]`` works.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> q = k = jnp.zeros((2, 1, 4))                  # equal logits: a plain mean
        >>> v = jnp.array([[[1.0]], [[3.0]]])             # length 2, 1 head, depth 1
        >>> nnx.dot_product_attention(q, k, v)[:, 0, 0]
        Array([2., 2.], dtype=float32)
    """
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    _check_qkv(query, key, value)
    weights = dot_product_attention_weights(
        query, key, bias, mask, broadcast_dropout, dropout_rng, dropout_rate,
        deterministic, query.dtype, precision, module, promote_dtype, is_causal,
    )
    heads, v_heads = query.shape[-2], value.shape[-2]
    if heads == v_heads:
        return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)
    group = heads // v_heads
    grouped = weights.reshape(*weights.shape[:-3], v_heads, group, *weights.shape[-2:])
    out = jnp.einsum("...hgqk,...khd->...qhgd", grouped, value, precision=precision)
    return out.reshape(*out.shape[:-3], heads, out.shape[-1])


def make_attention_mask(
    query_input: jax.Array,
    key_input: jax.Array,
    pairwise_fn: Callable[..., Any] = jnp.multiply,
    extra_batch_dims: int = 0,
    dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """A mask ``[batch..., 1, q_length, kv_length]`` from per-position query and key
    values: entry ``(i, j)`` is ``pairwise_fn(query_input[..., i], key_input[..., j])``.

    The default ``jnp.multiply`` on 0/1 padding indicators keeps the pairs where both
    positions are real tokens. ``extra_batch_dims`` leading size-1 axes are prepended.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> not_padding = jnp.array([1, 1, 0])
        >>> nnx.make_attention_mask(not_padding, not_padding)[0]
        Array([[1., 1., 0.],
               [1., 1., 0.],
               [0., 0., 0.]], dtype=float32)
    """
    pairs = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
    pairs = jnp.expand_dims(pairs, -3)  # the heads axis, size 1
    pairs = jnp.reshape(pairs, (1,) * extra_batch_dims + pairs.shape)
    return pairs.astype(dtype)


def make_causal_mask(
    x: jax.Array, extra_batch_dims: int = 0, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """The causal mask ``[batch..., 1, length, length]`` for inputs ``x`` of shape
    ``[batch..., length]``: query ``i`` may attend to keys ``j <= i``.

    Only the shape of ``x`` is used.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.make_causal_mask(jnp.zeros(3), dtype=jnp.int32)
        Array([[[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]]], dtype=int32)
    """
    positions = jnp.broadcast_to(jnp.arange(jnp.shape(x)[-1], dtype=jnp.int32), jnp.shape(x))
    return make_attention_mask(positions, positions, jnp.greater_equal, extra_batch_dims,
                               dtype)


def combine_masks(*masks: jax.Array | None, dtype: DTypeLike = jnp.float32) -> jax.Array | None:
    """The logical AND of the given masks (None entries are skipped), as ``dtype``.

    Returns None when every mask is None. The masks must have the same rank.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> causal = nnx.make_causal_mask(jnp.zeros(3))
        >>> padding = nnx.make_attention_mask(jnp.array([1, 1, 0]), jnp.array([1, 1, 0]))
        >>> nnx.combine_masks(causal, None, padding)[0]
        Array([[1., 0., 0.],
               [1., 1., 0.],
               [0., 0., 0.]], dtype=float32)
        >>> nnx.combine_masks(None) is None
        True
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    ranks = tuple(jnp.ndim(m) for m in present)
    if len(set(ranks)) > 1:
        raise ShapeMismatchError(
            f"combine_masks: the masks must have the same rank, got ranks {ranks} (shapes "
            f"{tuple(jnp.shape(m) for m in present)}). Hint: give every mask the "
            "[batch..., heads, q_length, kv_length] layout, using size-1 axes to broadcast."
        )
    combined = present[0]
    for m in present[1:]:
        combined = jnp.logical_and(combined, m)
    return jnp.asarray(combined).astype(dtype)
