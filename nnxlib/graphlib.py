"""``nnx.graphlib``: every graph-level function and class in one namespace, as flax.nnx
0.12 lays it out (nnxlib keeps them in several files, one idea each).

Example:
    >>> import nnxlib as nnx
    >>> nnx.graphlib.split is nnx.split, nnx.graphlib.SplitContext is nnx.SplitContext
    (True, True)
"""

from nnxlib.graph import (
    GraphDef,
    NodeDef,
    NodeRef,
    VariableDef,
    call,
    clone,
    find_duplicates,
    graphdef,
    is_graph_node,
    iter_children,
    iter_graph,
    pop,
    recursive_map,
    register_graph_node_type,
    set_metadata,
    split,
    state,
    update,
)
from nnxlib.graph import map_node as map  # noqa: A001  (flax.nnx's name)
from nnxlib.graph.contexts import (
    MergeContext,
    SplitContext,
    UpdateContext,
    current_update_context,
    merge_context,
    split_context,
    update_context,
)
from nnxlib.graph.flat import as_pure, flatten, pure, unflatten, variables
from nnxlib.graph.graph_state import GraphState, PureState, merge, unpack
from nnxlib.graph.mode import set_graph_mode, set_graph_updates
from nnxlib.module import iter_module_children
from nnxlib.state import FlatState, State, map_state
from nnxlib.transforms.partial import cached_partial
from nnxlib.var_options import vars_as, with_vars
from nnxlib.variables import Variable

__all__ = [
    "GraphDef", "NodeDef", "NodeRef", "VariableDef", "GraphState", "PureState", "FlatState",
    "State", "Variable", "SplitContext", "MergeContext", "UpdateContext", "split", "merge",
    "update", "state", "graphdef", "pop", "clone", "call", "map", "map_state",
    "iter_graph", "iter_children", "iter_module_children", "recursive_map",
    "find_duplicates", "set_metadata", "is_graph_node", "register_graph_node_type",
    "flatten", "unflatten", "variables", "as_pure", "pure", "unpack", "split_context",
    "merge_context", "update_context", "current_update_context", "cached_partial",
    "with_vars", "vars_as", "set_graph_mode", "set_graph_updates",
]
