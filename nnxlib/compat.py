"""``nnx.compat``: the graph-mode versions of the graph functions and transforms.

flax.nnx 0.12 keeps them here with ``graph=True`` as the default. nnxlib always works
in graph mode (shared references, in-place updates) on its cached fast path, so these
are nnxlib's ordinary functions.

Example:
    >>> import nnxlib as nnx
    >>> nnx.compat.jit is nnx.jit, nnx.compat.split is nnx.split
    (True, True)
"""

from nnxlib.graph import clone, graphdef, iter_graph, recursive_map, split, state
from nnxlib.graph_flat import flatten
from nnxlib.module import iter_children, iter_modules, view
from nnxlib.module_tools import view_info
from nnxlib.rng_tools import backup_keys
from nnxlib.rngs import fork_rngs, reseed, split_rngs
from nnxlib.transforms.autodiff import grad, value_and_grad
from nnxlib.transforms.checkify import checkify
from nnxlib.transforms.control_flow import cond, fori_loop, switch, while_loop
from nnxlib.transforms.custom_gradient import custom_vjp
from nnxlib.transforms.eval_shape import eval_shape
from nnxlib.transforms.jit import jit
from nnxlib.transforms.partial import cached_partial
from nnxlib.transforms.pmap import pmap
from nnxlib.transforms.remat import remat
from nnxlib.transforms.scan import scan
from nnxlib.transforms.shard_map import shard_map
from nnxlib.transforms.vjp_jvp import jvp, vjp
from nnxlib.transforms.vmap import vmap

__all__ = ["split", "state", "clone", "graphdef", "flatten", "iter_graph", "recursive_map",
           "cached_partial", "view", "view_info", "iter_modules", "iter_children",
           "split_rngs", "fork_rngs", "reseed", "backup_keys", "jit", "shard_map", "grad",
           "value_and_grad", "custom_vjp", "vjp", "jvp", "remat", "vmap", "scan", "pmap",
           "while_loop", "fori_loop", "eval_shape", "cond", "switch", "checkify"]
