"""Sampling methods of ``Rngs`` and ``RngStream``: ``rngs.normal((2, 3))``,
``rngs.params.uniform(...)``, ``rngs.lecun_normal()((3, 4))``.

Each ``jax.random`` sampler becomes a method that takes the same arguments without the
key and draws the key from the stream (the default stream for ``Rngs``). Initializer
factories (``lecun_normal``, ``glorot_uniform``…) return an initializer that draws
its key when called.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> a, b = nnx.Rngs(0), nnx.Rngs(0)
    >>> bool((a.normal((3,)) == jax.random.normal(b(), (3,))).all())
    True
    >>> init = nnx.Rngs(params=1).params.lecun_normal()
    >>> init((2, 3)).shape
    (2, 3)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax

__all__ = ["RandomSamplers", "SAMPLERS", "INITIALIZERS"]

# jax.random functions whose first argument is the key.
SAMPLERS = (
    "ball", "bernoulli", "beta", "binomial", "bits", "categorical", "cauchy", "chisquare",
    "choice", "dirichlet", "double_sided_maxwell", "exponential", "f", "gamma",
    "generalized_normal", "geometric", "gumbel", "laplace", "loggamma", "logistic",
    "lognormal", "maxwell", "multinomial", "multivariate_normal", "normal", "orthogonal",
    "pareto", "permutation", "poisson", "rademacher", "randint", "rayleigh", "t",
    "triangular", "truncated_normal", "uniform", "wald", "weibull_min",
)
# jax.nn.initializers factories: the method returns an initializer without a key.
INITIALIZERS = (
    "delta_orthogonal", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
    "kaiming_normal", "kaiming_uniform", "lecun_normal", "lecun_uniform",
    "variance_scaling", "xavier_normal", "xavier_uniform",
)


def _without_key(fn: Callable) -> inspect.Signature:
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    return signature.replace(parameters=params[1:])


def _sampler(name: str) -> Callable:
    fn = getattr(jax.random, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> jax.Array:
        return fn(self(), *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (f"``jax.random.{name}`` with the next key of this stream; the "
                      f"arguments are ``jax.random.{name}``'s without the key.")
    sig = _without_key(fn)
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                    *sig.parameters.values()])
    return method


def _initializer(name: str) -> Callable:
    factory = getattr(jax.nn.initializers, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Callable:
        init = factory(*args, **kwargs)

        @functools.wraps(init)
        def keyless(*init_args: Any, **init_kwargs: Any) -> jax.Array:
            return init(self(), *init_args, **init_kwargs)

        return keyless

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (f"``jax.nn.initializers.{name}(...)`` as an initializer that takes "
                      "no key: each call draws the next key of this stream.")
    return method


class RandomSamplers:
    """Mixin giving a key source (``self()`` returns a new key) the sampling methods.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.Rngs(0).uniform((2,), minval=1.0, maxval=2.0).shape
        (2,)
    """

    __slots__ = ()


for _name in SAMPLERS:
    setattr(RandomSamplers, _name, _sampler(_name))
for _name in INITIALIZERS:
    setattr(RandomSamplers, _name, _initializer(_name))
del _name
