"""Graph nodes inside pytrees, as plain pytrees: ``to_tree``/``from_tree``, and
``prefix`` (this is ``nnx.extract``; ``NodeStates`` is its pytree of one node).

``to_tree`` replaces every module or variable in a pytree by a :class:`NodeStates`
(its graph definition as static data, its state as children), in one index space, so
that objects shared between entries are shared again after ``from_tree``. The result
passes through any JAX transform.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> shared = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> tree = nnx.to_tree({"a": shared, "b": shared})
    >>> tree = jax.jit(lambda t: t)(tree)            # a plain pytree for JAX
    >>> back = nnx.from_tree(tree)
    >>> back["a"] is back["b"], back["a"] is shared
    (True, False)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from nnxlib.errors import format_path
from nnxlib.filters import to_predicate
from nnxlib.graph import GraphDef, check_mode, is_node_or_variable, iter_graph
from nnxlib.graph.contexts import MergeContext, SplitContext
from nnxlib.graph.mode import resolve_graph
from nnxlib.state import State
from nnxlib.transforms.axes import StateAxes, TreeState
from nnxlib.variables import Variable

__all__ = ["NodeStates", "TreeState", "to_tree", "from_tree", "prefix"]

_MISSING = object()


@jax.tree_util.register_pytree_node_class
class NodeStates:
    """One graph node as a pytree: ``graphdef`` (static), ``states`` (the children)
    and ``metadata`` (static: e.g. the ``StateAxes`` it was split by).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> ns = nnx.to_tree(nnx.Linear(1, 2, rngs=nnx.Rngs(0)))
        >>> isinstance(ns, nnx.NodeStates), [x.shape for x in jax.tree.leaves(ns)]
        (True, [(2,), (1, 2)])
    """

    def __init__(self, graphdef: GraphDef | None, states: tuple, metadata: Any = None):
        self._graphdef = graphdef
        self.states = tuple(states)
        self.metadata = metadata

    @property
    def graphdef(self) -> GraphDef:
        """The node's graph definition.

        Example:
            >>> import nnxlib as nnx
            >>> type(nnx.to_tree(nnx.Param(1.0)).graphdef).__name__
            'GraphDef'
        """
        if self._graphdef is None:
            raise ValueError("This NodeStates has no graph definition.")
        return self._graphdef

    @property
    def state(self) -> Any:
        """The single state (an error if the node was split into several).

        Example:
            >>> import nnxlib as nnx
            >>> sorted(nnx.to_tree(nnx.Linear(1, 2, rngs=nnx.Rngs(0))).state)
            ['bias', 'kernel']
        """
        if len(self.states) != 1:
            raise ValueError(f"This NodeStates holds {len(self.states)} states; use .states.")
        return self.states[0]

    @classmethod
    def from_split(cls, graphdef: GraphDef, state: Any, /, *states: Any,
                   metadata: Any = None) -> "NodeStates":
        """Build from the results of ``nnx.split``.

        Example:
            >>> import nnxlib as nnx
            >>> graphdef, state = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> len(nnx.NodeStates.from_split(graphdef, state).states)
            1
        """
        return cls(graphdef, (state, *states), metadata)

    @classmethod
    def from_states(cls, state: Any, *states: Any) -> "NodeStates":
        """Build from states alone (no graph definition).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.NodeStates.from_states(nnx.State({})).states
            (State({}),)
        """
        return cls(None, (state, *states), None)

    def tree_flatten(self) -> tuple:
        return (self.states,), (self._graphdef, _Hashable(self.metadata))

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> "NodeStates":
        return cls(aux[0], children[0], aux[1].value)

    def __repr__(self) -> str:
        return f"NodeStates(states={self.states!r}, metadata={self.metadata!r})"


class _Hashable:
    """Static aux data compared by identity when the value itself is unhashable."""

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Hashable):
            return False
        try:
            return bool(self.value == other.value)
        except Exception:
            return self.value is other.value

    def __hash__(self) -> int:
        try:
            return hash(self.value)
        except TypeError:
            return id(self.value)


def _is_graph(x: Any) -> bool:
    return is_node_or_variable(x)


def to_tree(tree: Any, /, *, prefix: Any = _MISSING, split_fn: Callable | None = None,
            map_non_graph_nodes: bool = False, ctxtag: Any = None,
            check_aliasing: bool = True) -> Any:
    """Replace each graph node or variable in ``tree`` by a :class:`NodeStates`.

    ``prefix`` is a pytree prefix of ``tree``: where it holds a
    :class:`~nnxlib.StateAxes`, the nodes below are split by its filters (one state
    per filter, the axes kept as metadata). ``split_fn(ctx, path, prefix, node)``
    replaces the default split. With ``check_aliasing`` (the default), an object
    reached under two different prefix entries is an error.

    Example:
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> ns = nnx.to_tree(bn, prefix=nnx.StateAxes({nnx.Param: 0, ...: None}))
        >>> [sorted(s) for s in ns.states]
        [['bias', 'scale'], ['mean', 'var']]
    """
    ctx = SplitContext(ctxtag)
    seen: dict[int, tuple] = {}  # id -> (path, prefix entry) of each object's first use

    def check(path: tuple, pre: Any, node: Any) -> None:
        path = _path_of(path)
        for inner, obj in reversed(list(iter_graph(node, graph=True))):  # root first
            if not is_node_or_variable(obj):
                continue
            first = seen.setdefault(id(obj), (path + inner, pre))
            if first[1] is not pre and first[1] != pre:
                raise ValueError(
                    f"to_tree: the {type(obj).__name__} at {format_path(first[0])} is "
                    f"also at {format_path(path + inner)}, with another prefix entry "
                    f"({first[1]!r}, then {pre!r}) (Inconsistent aliasing detected. The "
                    "following nodes have different prefixes). Hint: give an object the "
                    "same prefix on every path that reaches it."
                )

    def split_node(path: tuple, pre: Any, node: Any) -> Any:
        if check_aliasing and prefix is not _MISSING:
            check(path, pre, node)
        if split_fn is not None:
            return split_fn(ctx, path, pre, node)
        if isinstance(pre, StateAxes):
            graphdef, *states = ctx.split(node, *pre.filters)
            return NodeStates(graphdef, tuple(states), pre)
        graphdef, state = ctx.split(node)
        return NodeStates(graphdef, (state,), None)

    def convert(pre: Any, subtree: Any, base: tuple) -> Any:
        def leaf(path: tuple, x: Any) -> Any:
            if _is_graph(x):
                return split_node(base + tuple(path), pre, x)
            if map_non_graph_nodes:
                return split_fn(ctx, base + tuple(path), pre, x) if split_fn else x
            return x

        return jax.tree_util.tree_map_with_path(leaf, subtree, is_leaf=_is_graph)

    if prefix is _MISSING:
        return convert(None, tree, ())
    structure = jax.tree_util.tree_structure(prefix, is_leaf=_is_prefix_leaf)
    pre_leaves = jax.tree_util.tree_leaves(prefix, is_leaf=_is_prefix_leaf)
    subtrees = structure.flatten_up_to(tree)
    bases = [tuple(path) for path, _ in
             jax.tree_util.tree_flatten_with_path(prefix, is_leaf=_is_prefix_leaf)[0]]
    converted = [convert(p, sub, base) for p, sub, base in zip(pre_leaves, subtrees, bases)]
    return jax.tree_util.tree_unflatten(structure, converted)


def _is_prefix_leaf(x: Any) -> bool:
    return x is None or isinstance(x, StateAxes)


def from_tree(tree: Any, /, *, prefix: Any = _MISSING, merge_fn: Callable | None = None,
              is_node_leaf: Callable[[Any], bool] | None = None,
              is_leaf: Callable[[Any], bool] | None = None, map_non_graph_nodes: bool = False,
              is_inner: bool | None = None, ctxtag: Any = None) -> Any:
    """Rebuild the graph nodes of a tree made by :func:`to_tree` (shared objects
    become one object again). ``merge_fn(ctx, path, prefix, leaf)`` replaces the
    default merge. ``prefix`` is accepted for flax compatibility: the axes a node was
    split by travel in its ``NodeStates.metadata``.

    Example:
        >>> import nnxlib as nnx
        >>> layer = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        >>> back = nnx.from_tree([nnx.to_tree(layer)])[0]
        >>> type(back).__name__, back.kernel is layer.kernel
        ('Linear', True)
    """
    ctx = MergeContext(ctxtag, is_inner)
    node_leaf = is_node_leaf or (lambda x: isinstance(x, NodeStates))

    def leaf(path: tuple, x: Any) -> Any:
        if merge_fn is not None and (node_leaf(x) or map_non_graph_nodes):
            return merge_fn(ctx, tuple(path), None if prefix is _MISSING else prefix, x)
        if isinstance(x, NodeStates):
            return ctx.merge(x.graphdef, *x.states)
        return x

    stop = is_leaf or node_leaf
    return jax.tree_util.tree_map_with_path(leaf, tree, is_leaf=stop)


def prefix(node: Any, filter_map: Mapping | Callable[[tuple, Any], Any], /, *,
           graph: bool | None = None) -> Any:
    """Per-variable prefix entries (axes, shardings, specs) for ``node``, usable as
    ``in_axes``/``out_axes``/``in_shardings`` entries of the transforms.

    ``filter_map`` maps filters to entries (the first match wins) or is a function
    ``(path, variable) -> entry``; a variable that no filter matches is an error. In
    graph mode each graph node (of ``node``, or of a pytree of nodes) becomes a
    :class:`~nnxlib.transforms.axes.TreeState` whose ``state`` holds the entries at the
    variables' paths; in tree mode (``graph=False``) the result is shaped like ``node``,
    with the entries where the variables were, as in flax.nnx.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Pair(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Param(jnp.array(2.0))
        ...         self.b = nnx.BatchStat(jnp.arange(5.0))
        >>> axes = nnx.prefix(Pair(), lambda path, v: 0 if "b" in path else None)
        >>> axes.state["b"], nnx.vmap(lambda p: p.a * p.b, in_axes=(axes,))(Pair())
        (0, Array([0., 2., 4., 6., 8.], dtype=float32))
        >>> nnx.prefix(Pair(), {nnx.Param: None, ...: 0}, graph=False).b
        0
    """
    graph = resolve_graph(graph)
    check_mode(node, graph, "nnx.prefix")
    entry_of = _entry_function(filter_map)
    if not graph:
        return jax.tree_util.tree_map_with_path(
            lambda keypath, v: entry_of(_path_of(keypath), v), node,
            is_leaf=lambda x: isinstance(x, Variable))

    def one(keypath: Any, x: Any) -> Any:
        if is_node_or_variable(x) and not isinstance(x, Variable):
            paths, entries = [], []
            for path, value in iter_graph(x, graph=True):
                if isinstance(value, Variable):
                    paths.append(path)
                    entries.append(entry_of(path, value))
            return TreeState(State._from_flat(tuple(paths), entries))
        return entry_of(_path_of(keypath), x)

    return jax.tree_util.tree_map_with_path(one, node, is_leaf=is_node_or_variable)


def _entry_function(filter_map: Mapping | Callable) -> Callable[[tuple, Any], Any]:
    if not isinstance(filter_map, Mapping):
        return filter_map
    pairs = [(to_predicate(f), entry) for f, entry in filter_map.items()]

    def entry_of(path: tuple, value: Any) -> Any:
        for predicate, entry in pairs:
            if predicate(path, value):
                return entry
        raise ValueError(
            f"nnx.prefix: No filter matched the {type(value).__name__} at "
            f"{format_path(path)!r}; the filters are {list(filter_map)}. Hint: end the "
            "mapping with a catch-all entry, e.g. {nnx.Param: 0, ...: None}.")

    return entry_of


def _path_of(keypath: tuple) -> tuple:
    """A JAX key path as an nnx path (attribute names, indices, dict keys)."""
    out = []
    for k in keypath:
        for attr in ("name", "idx", "key"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
    return tuple(out)
