"""Transforms of stateful functions: ``jit``, ``grad``, ``vmap``, ``scan`` and friends.

Each accepts functions whose arguments hold modules and variables, and keeps eager
semantics: state changed inside is changed outside afterwards.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> grads = nnx.jit(nnx.grad(lambda m, x: m(x).sum()))(model, jnp.ones((1, 2)))
    >>> sorted(grads)
    ['bias', 'kernel']
"""

from nnxlib.transforms.autodiff import DiffState, grad, value_and_grad
from nnxlib.transforms.jit import JitWrapped, StateSharding, jit

__all__ = ["jit", "JitWrapped", "StateSharding", "grad", "value_and_grad", "DiffState"]
