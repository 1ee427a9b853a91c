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
from nnxlib.transforms.axes import PARTITION_NAME, Carry, StateAxes
from nnxlib.transforms.checkify import checkify
from nnxlib.transforms.control_flow import cond, fori_loop, switch, while_loop
from nnxlib.transforms.custom_gradient import CustomVjp, custom_vjp
from nnxlib.transforms.eval_shape import eval_shape
from nnxlib.transforms.jit import JitWrapped, StateSharding, jit
from nnxlib.transforms.metadata import transform_metadata
from nnxlib.transforms.partial import CachedPartial, cached_partial, jit_partial
from nnxlib.transforms.remat import checkpoint, remat
from nnxlib.transforms.scan import scan
from nnxlib.transforms.shard_map import shard_map
from nnxlib.transforms.vjp_jvp import jvp, vjp
from nnxlib.transforms.vmap import vmap

__all__ = ["jit", "JitWrapped", "StateSharding", "grad", "value_and_grad", "DiffState",
           "vmap", "scan", "StateAxes", "Carry", "PARTITION_NAME", "transform_metadata",
           "remat", "checkpoint", "cond", "switch", "fori_loop", "while_loop",
           "eval_shape", "shard_map", "checkify", "vjp", "jvp", "custom_vjp", "CustomVjp",
           "cached_partial", "jit_partial", "CachedPartial"]
