"""Stochastic layers: ``Dropout``.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
>>> y = drop(jnp.ones(1000))
>>> sorted(set(y.tolist()))          # dropped entries are 0, kept ones scaled by 1/(1-rate)
[0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnxlib.errors import InvalidArgumentError
from nnxlib.module import Module, first_from
from nnxlib.rngs import Rngs, RngStream

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each input entry with probability ``rate`` and scale the rest by ``1/(1-rate)``.

    The expected output equals the input. With ``deterministic=True`` (or
    ``module.eval()``), or ``rate == 0``, the input is returned unchanged; ``rate == 1``
    returns zeros.

    Keys come from, in order of precedence: the ``rngs`` call argument (an ``Rngs``, an
    ``RngStream`` or a key), or the stream stored at construction. Given an ``Rngs`` at
    construction, the layer stores its own stream forked from ``rngs[rng_collection]``
    (``rngs.dropout`` falls back to the default stream), so the layer's randomness is part
    of its state and advances with every call.

    Args:
        rate: probability of dropping an entry (not the keep rate).
        broadcast_dims: axes along which one mask is shared (e.g. the time axis).
        deterministic: default mode; the call argument overrides it.
        rng_collection: name of the stream keys are drawn from.
        rngs: an ``Rngs`` or ``RngStream`` to fork the layer's stream from, or None.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> drop = nnx.Dropout(0.5, deterministic=True)
        >>> drop(jnp.ones(3))
        Array([1., 1., 1.], dtype=float32)
        >>> y = drop(jnp.ones(3), deterministic=False, rngs=nnx.Rngs(0))
        >>> y.shape
        (3,)
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: Rngs | RngStream | None = None,
    ):
        self.rate = _check_rate(rate, "Dropout(rate)")
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs: RngStream | None
        if isinstance(rngs, Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = None
        else:
            raise TypeError(
                f"Dropout: rngs must be an nnx.Rngs, an nnx.RngStream or None, got "
                f"{type(rngs).__name__}. Hint: Dropout(rate, rngs=nnx.Rngs(dropout=0))."
            )

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: Rngs | RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Apply dropout to ``inputs``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> drop = nnx.Dropout(0.25)
            >>> drop(jnp.ones(4), rngs=jax.random.key(0)).shape   # a raw key works too
            (4,)
        """
        deterministic = first_from(
            deterministic, self.deterministic,
            error_msg=(
                "Dropout: deterministic is None in both the constructor and the call, so "
                "the mode is unknown. Hint: pass deterministic=True/False to Dropout(...) "
                "or to the call, or call model.train() / model.eval()."
            ),
        )
        # The attribute may have been reassigned since construction.
        _check_rate(self.rate, "Dropout.rate")
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            # Avoids 0/0 from the 1/(1-rate) rescaling.
            return jnp.zeros_like(inputs)
        key = self._key(rngs)
        keep = 1.0 - self.rate
        mask_shape = list(jnp.shape(inputs))
        for dim in self.broadcast_dims:
            mask_shape[dim] = 1
        # Under Explicit mesh axes the mask must be sharded like the inputs for select;
        # broadcast dimensions (size 1 in the mask) are unsharded until broadcast.
        sharding = jax.typeof(inputs).sharding
        mask = jax.random.bernoulli(key, p=keep, shape=tuple(mask_shape),
                                    out_sharding=_unshard(sharding, self.broadcast_dims))
        mask = jnp.broadcast_to(mask, jnp.shape(inputs), out_sharding=sharding)
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))

    def _key(self, rngs: Any) -> jax.Array:
        source = rngs if rngs is not None else self.rngs
        if source is None:
            raise ValueError(
                "`deterministic` is False, but no `rngs` argument was provided to Dropout "
                "(none was given at construction either), so no random key is available. "
                "Hint: build it with nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0)), call it "
                "with layer(x, rngs=rngs), or switch it off with deterministic=True / "
                "model.eval()."
            )
        if isinstance(source, Rngs):
            return source[self.rng_collection]()
        if isinstance(source, RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        raise TypeError(
            f"Dropout: rngs must be an nnx.Rngs, an nnx.RngStream or a jax key, got "
            f"{type(source).__name__}."
        )


def _check_rate(rate: Any, where: str) -> Any:
    """``rate`` unchanged if it is a number in [0, 1]; raise otherwise."""
    try:
        if isinstance(rate, (str, bytes)):  # float("0.1") would accept it
            raise TypeError
        value = float(rate)
    except jax.errors.ConcretizationTypeError:
        raise  # a traced rate: JAX's own message says what to do
    except (TypeError, ValueError):
        raise TypeError(
            f"{where} must be a number in [0, 1] (the probability of dropping an entry), "
            f"got {rate!r} of type {type(rate).__name__}. Hint: e.g. nnx.Dropout(0.1)."
        ) from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(
            f"{where} must be in [0, 1] (the probability of dropping an entry), got "
            f"{rate!r}. Hint: pass the drop probability, not a percentage or the keep "
            "probability: nnx.Dropout(0.1) drops 10% of the entries."
        )
    return rate


def _unshard(sharding: Any, dims: Sequence[int]) -> Any:
    """``sharding`` with the dimensions ``dims`` replicated."""
    spec = list(sharding.spec)
    for dim in dims:
        if -len(spec) <= dim < len(spec):
            spec[dim] = None
    return sharding.update(spec=jax.sharding.PartitionSpec(*spec))
