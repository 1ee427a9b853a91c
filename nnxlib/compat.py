"""``nnx.compat``: the graph functions and transforms pinned to graph mode.

flax.nnx 0.12 keeps them here so that code written for graph mode keeps working when
the default changes (``nnx.set_graph_mode(False)``): each one here is the function of
the same name called with ``graph=True`` (and, for transforms, ``graph_updates=True``)
unless the caller passes those arguments.

Example:
    >>> import nnxlib as nnx
    >>> shared = nnx.Param(1.0)
    >>> with nnx.set_graph_mode(False):
    ...     len(nnx.compat.state(nnx.Dict(a=shared, b=shared)))   # graph mode: once
    1
"""

import functools
from typing import Any, Callable

from nnxlib.graph import clone as _clone
from nnxlib.graph import graphdef as _graphdef
from nnxlib.graph import iter_graph as _iter_graph
from nnxlib.graph import recursive_map as _recursive_map
from nnxlib.graph import split as _split
from nnxlib.graph import state as _state
from nnxlib.graph.flat import flatten as _flatten
from nnxlib.module import iter_children as _iter_children
from nnxlib.module import iter_modules as _iter_modules
from nnxlib.module import view as _view
from nnxlib.module_tools import view_info as _view_info
from nnxlib.rng_tools import backup_keys as _backup_keys
from nnxlib.rngs import fork_rngs as _fork_rngs
from nnxlib.rngs import reseed as _reseed
from nnxlib.rngs import split_rngs as _split_rngs
from nnxlib.transforms.autodiff import grad as _grad
from nnxlib.transforms.autodiff import value_and_grad as _value_and_grad
from nnxlib.transforms.checkify import checkify as _checkify
from nnxlib.transforms.control_flow import cond as _cond
from nnxlib.transforms.control_flow import fori_loop as _fori_loop
from nnxlib.transforms.control_flow import switch as _switch
from nnxlib.transforms.control_flow import while_loop as _while_loop
from nnxlib.transforms.custom_gradient import custom_vjp as _custom_vjp
from nnxlib.transforms.eval_shape import eval_shape as _eval_shape
from nnxlib.transforms.jit import jit as _jit
from nnxlib.transforms.partial import cached_partial as _cached_partial
from nnxlib.transforms.pmap import pmap as _pmap
from nnxlib.transforms.remat import remat as _remat
from nnxlib.transforms.scan import scan as _scan
from nnxlib.transforms.shard_map import shard_map as _shard_map
from nnxlib.transforms.vjp_jvp import jvp as _jvp
from nnxlib.transforms.vjp_jvp import vjp as _vjp
from nnxlib.transforms.vmap import vmap as _vmap

__all__ = ["split", "state", "clone", "graphdef", "flatten", "iter_graph", "recursive_map",
           "cached_partial", "view", "view_info", "iter_modules", "iter_children",
           "split_rngs", "fork_rngs", "reseed", "backup_keys", "jit", "shard_map", "grad",
           "value_and_grad", "custom_vjp", "vjp", "jvp", "remat", "vmap", "scan", "pmap",
           "while_loop", "fori_loop", "eval_shape", "cond", "switch", "checkify"]


def _pinned(fn: Callable, updates: bool) -> Callable:
    """``fn`` with graph mode (and graph updates) the default instead of the setting."""
    @functools.wraps(fn)
    def in_graph_mode(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("graph", True)
        if updates:
            kwargs.setdefault("graph_updates", True)
        return fn(*args, **kwargs)

    return in_graph_mode


split = _pinned(_split, updates=False)
state = _pinned(_state, updates=False)
clone = _pinned(_clone, updates=False)
graphdef = _pinned(_graphdef, updates=False)
flatten = _pinned(_flatten, updates=False)
iter_graph = _pinned(_iter_graph, updates=False)
recursive_map = _pinned(_recursive_map, updates=False)
cached_partial = _pinned(_cached_partial, updates=True)
view = _pinned(_view, updates=False)
view_info = _pinned(_view_info, updates=False)
iter_modules = _pinned(_iter_modules, updates=False)
iter_children = _pinned(_iter_children, updates=False)
split_rngs = _pinned(_split_rngs, updates=True)
fork_rngs = _pinned(_fork_rngs, updates=True)
reseed = _pinned(_reseed, updates=False)
backup_keys = _pinned(_backup_keys, updates=False)
jit = _pinned(_jit, updates=True)
shard_map = _pinned(_shard_map, updates=True)
grad = _pinned(_grad, updates=True)
value_and_grad = _pinned(_value_and_grad, updates=True)
custom_vjp = _pinned(_custom_vjp, updates=True)
vjp = _pinned(_vjp, updates=True)
jvp = _pinned(_jvp, updates=True)
remat = _pinned(_remat, updates=True)
vmap = _pinned(_vmap, updates=True)
scan = _pinned(_scan, updates=True)
pmap = _pinned(_pmap, updates=True)
while_loop = _pinned(_while_loop, updates=True)
fori_loop = _pinned(_fori_loop, updates=True)
eval_shape = _pinned(_eval_shape, updates=True)
cond = _pinned(_cond, updates=True)
switch = _pinned(_switch, updates=True)
checkify = _pinned(_checkify, updates=True)
