"""Embedding lookup tables: ``Embed``, with ``attend`` for tied output projections.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> table = nnx.Embed(10, 4, rngs=nnx.Rngs(0))
>>> table(jnp.array([[1, 2, 3]])).shape
(1, 3, 4)
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
from nnxlib.nn._checks import check_last_axis, layer_text
from nnxlib.rngs import Rngs
from nnxlib.variables import Param

__all__ = ["Embed"]

#: Default table initializer: unit variance per entry, scaled by the feature size
#: (variance scaling over axis 1, with the vocabulary as the "output" axis 0).
default_embed_init = initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class Embed(Module):
    """A table of ``num_embeddings`` learned vectors of size ``features``.

    Calling it with an integer array of indices returns their rows: the output shape is
    the input shape with ``features`` appended. Indices outside ``[0, num_embeddings)``
    give NaN rows for inexact tables (``jnp.take``'s fill mode); negative indices count
    from the end. With ``num_embeddings == 1`` the single row is broadcast.

    :meth:`attend` goes the other way: it scores vectors of size ``features`` against
    every row (``query @ embedding.T``), the usual tied output projection of a language
    model.

    State: ``embedding`` (:class:`~nnxlib.Param` of shape ``(num_embeddings,
    features)``), drawn from the ``params`` stream.

    Args:
        num_embeddings: number of rows (vocabulary size).
        features: size of each row.
        dtype: dtype of the looked-up rows and of ``attend``'s computation (default:
            the table's dtype).
        param_dtype: dtype the table is created in.
        embedding_init: initializer of the table.
        promote_dtype: casting function, called with ``(embedding,)`` in ``__call__``
            and ``(query, embedding)`` in ``attend``.
        rngs: the random streams.
        embedding_metadata: extra metadata of ``embedding`` (e.g. sharding names).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> table = nnx.Embed(3, 2, embedding_init=nnx.initializers.ones, rngs=nnx.Rngs(0))
        >>> table(jnp.array([0, 2]))
        Array([[1., 1.],
               [1., 1.]], dtype=float32)
        >>> table.attend(jnp.array([1.0, 2.0]))
        Array([3., 3., 3.], dtype=float32)
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        embedding_init: Callable[..., Any] = default_embed_init,
        promote_dtype: Callable[..., tuple] = dtypes.promote_dtype,
        rngs: Rngs,
        embedding_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.embedding = Param(
            embedding_init(rngs.params(), (num_embeddings, features), param_dtype),
            **embedding_metadata,
        )
        self.num_embeddings, self.features = num_embeddings, features
        # As in flax: without a dtype, lookups and attend run in the table's own dtype.
        self.dtype = dtype or self.embedding.dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype

    def _name(self) -> str:
        return layer_text("Embed", self.num_embeddings, self.features)

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Look up the rows of the integer indices ``inputs``.

        ``out_sharding`` places the result on an explicit-sharding mesh.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Embed(5, 3, rngs=nnx.Rngs(0))(jnp.arange(4).reshape(2, 2)).shape
            (2, 2, 3)
        """
        if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
            raise ValueError(
                f"{self._name()}: expected integer indices, got dtype "
                f"{jnp.result_type(inputs)}. Hint: cast token ids with "
                "inputs.astype(jnp.int32); to project vectors onto the table use "
                "Embed.attend."
            )
        (table,) = self.promote_dtype((self.embedding[...],), dtype=self.dtype, inexact=False)
        if self.num_embeddings == 1:
            # Every index selects the one row: no gather needed.
            row = table if jnp.ndim(inputs) else table[0]
            return jnp.broadcast_to(row, jnp.shape(inputs) + (self.features,))
        if out_sharding is None:
            return jnp.take(table, inputs, axis=0)
        # jnp.take has no out_sharding argument: run it in auto mode and reshard the result.
        take = jax.sharding.auto_axes(lambda t, i: jnp.take(t, i, axis=0),
                                      out_sharding=out_sharding)
        return take(table, inputs)

    def attend(self, query: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Score ``query`` (shape ``(..., features)``) against every row of the table.

        Returns shape ``(..., num_embeddings)``: ``query @ embedding.T``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Embed(7, 3, rngs=nnx.Rngs(0)).attend(jnp.ones((2, 3))).shape
            (2, 7)
        """
        check_last_axis(
            self._name() + ".attend", query, self.embedding.shape[-1],
            "the embedding size, features",
            "attend takes vectors of the embedding size, such as the last hidden state "
            "of a model whose width equals features.")
        query, table = self.promote_dtype((query, self.embedding[...]), dtype=self.dtype)
        extra = {} if out_sharding is None else {"out_sharding": out_sharding}
        return jnp.dot(query, table.T, **extra)
