"""nnxlib: stateful graph-object modules for JAX, API-compatible with ``flax.nnx``.

``import nnxlib as nnx`` and write modules as plain Python objects; split them into a
static ``GraphDef`` and a ``State`` of arrays to run under JAX transforms, or use the
``nnx.jit``/``nnx.grad``/… transforms that do that for you at raw-JAX speed.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> graphdef, state = nnx.split(model)
    >>> nnx.merge(graphdef, state)(jnp.ones((1, 2))).shape
    (1, 3)
"""

from nnxlib import display as _display_module
from nnxlib import errors, filters, graph
from nnxlib.containers import Dict, List
from nnxlib.errors import TraceContextError
from nnxlib.filters import (
    All,
    Any,
    Everything,
    Not,
    Nothing,
    OfType,
    PathContains,
    WithTag,
)
from nnxlib.graph import (
    GraphDef,
    call,
    clone,
    find_duplicates,
    graphdef,
    iter_graph,
    merge,
    pop,
    recursive_map,
    set_metadata,
    split,
    state,
    update,
)
from nnxlib.graph import map_node as map  # noqa: A001  (flax.nnx's name)
from nnxlib.module import (
    Module,
    Object,
    Pytree,
    Sequential,
    data,
    iter_children,
    iter_module_children,
    iter_modules,
    static,
    view,
)
from nnxlib.rngs import (
    RngCount,
    RngKey,
    Rngs,
    RngState,
    RngStream,
    fork_rngs,
    reseed,
    restore_rngs,
    split_rngs,
)
from nnxlib.spmd import (
    get_named_sharding,
    get_partition_spec,
    logical_axis_rules,
    logical_to_mesh_axes,
    use_eager_sharding,
    using_eager_sharding,
    with_sharding_constraint,
)
from nnxlib.state import (
    FlatState,
    State,
    filter_state,
    from_flat_state,
    map_state,
    merge_state,
    replace_by_pure_dict,
    split_state,
    to_flat_state,
    to_pure_dict,
)
from nnxlib.variables import (
    BatchStat,
    Cache,
    Intermediate,
    Param,
    Perturbation,
    Variable,
    VariableMetadata,
    register_variable_name,
    variable_name_from_type,
    variable_type_from_name,
    with_metadata,
    with_partitioning,
)


class _Display:
    """``nnx.display(x)`` shows values; the display module's helpers are attributes.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.display(nnx.Param(1.0))
        Param(
          value=1.0,
        )
    """

    def __call__(self, *values):
        _display_module.display(*values)

    def __getattr__(self, name):
        return getattr(_display_module, name)


display = _Display()

from nnxlib import nn  # noqa: E402
from nnxlib.nn import *  # noqa: E402,F401,F403
from nnxlib.nn import initializers  # noqa: E402,F401
from nnxlib.training import *  # noqa: F401,F403
from nnxlib.transforms import *  # noqa: F401,F403
from nnxlib.transforms.abstract import (  # noqa: E402
    abstract_with_sharding,
    as_abstract,
    get_abstract_model,
)

# flax.nnx 0.12 names (nnx.graphlib, contexts, pytree markers, pure/flat views, ...).
__version__ = "0.1.0"
import sys as _sys  # noqa: E402
from typing import TypeVar as _TypeVar  # noqa: E402

from nnxlib import (  # noqa: E402  # noqa: E402
    compat,
    deprecations,
    extract,
    graphlib,
    helpers,
    proxy_caller,
    pytreelib,
    tracers,
    traversals,
)
from nnxlib.extract import NodeStates, from_tree, prefix, to_tree  # noqa: E402
from nnxlib.graph.contexts import (  # noqa: E402
    MergeContext,
    SplitContext,
    UpdateContext,
    current_update_context,
    merge_context,
    split_context,
    update_context,
)
from nnxlib.graph.flat import as_pure, flatten, pure, unflatten  # noqa: E402
from nnxlib.graph.graph_state import GraphState, PureState, merge, unpack  # noqa: E402,F811
from nnxlib.graph.mode import set_graph_mode, set_graph_updates  # noqa: E402
from nnxlib.graph.state_tools import restore_int_paths  # noqa: E402
from nnxlib.module_tools import capture, view_info, with_attributes  # noqa: E402
from nnxlib.nn.initializers import Initializer  # noqa: E402
from nnxlib.pytreelib import (  # noqa: E402
    Data,
    Static,
    check_pytree,
    dataclass,
    has_data,
    is_data,
    register_data_type,
)
from nnxlib.rng_tools import with_rngs  # noqa: E402
from nnxlib.transforms.make_jaxpr import make_jaxpr  # noqa: E402
from nnxlib.transforms.pmap import pmap  # noqa: E402
from nnxlib.var_options import VarDefaults, var_defaults, vars_as, with_vars  # noqa: E402
from nnxlib.variables import A  # noqa: E402  (flax.nnx's generic type variable, for annotations)

M = _TypeVar("M", bound=Module)
from nnxlib import _module_paths  # noqa: E402

_module_paths.install(_sys.modules[__name__])
variables = _module_paths.variables  # the callable module: nnx.variables(model, nnx.Param)

def __getattr__(name: str):
    # ``nnxlib.bridge`` (the top-level ``bridge`` package) is imported on first use only:
    # it imports flax, which ``import nnxlib`` must never do. ``nnxlib.wrappers`` is
    # flax.nnx's other path to the Linen wrappers: the same package.
    if name in ("bridge", "wrappers"):
        import importlib

        module = importlib.import_module("bridge")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'nnxlib' has no attribute {name!r}")
