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

from nnxlib.filters import PathIn
from nnxlib.graph import GraphDef, check_mode, is_node_or_variable, iter_graph
from nnxlib.graph_contexts import MergeContext, SplitContext
from nnxlib.transforms.axes import StateAxes
from nnxlib.variables import Variable

__all__ = ["NodeStates", "to_tree", "from_tree", "prefix"]

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
    replaces the default split. ``check_aliasing`` is accepted for flax compatibility.

    Example:
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> ns = nnx.to_tree(bn, prefix=nnx.StateAxes({nnx.Param: 0, ...: None}))
        >>> [sorted(s) for s in ns.states]
        [['bias', 'scale'], ['mean', 'var']]
    """
    ctx = SplitContext(ctxtag)

    def split_node(path: tuple, pre: Any, node: Any) -> Any:
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
    converted = [convert(p, sub, ()) for p, sub in zip(pre_leaves, subtrees)]
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
           graph: bool | None = None) -> StateAxes:
    """Per-variable axes for ``node`` as a :class:`~nnxlib.StateAxes`, usable as an
    ``in_axes``/``out_axes`` entry of ``nnx.vmap``/``nnx.scan``.

    ``filter_map`` is a mapping from filters to axes (the first match wins, as in
    ``StateAxes``) or a function ``(path, variable) -> axis``. flax.nnx returns a
    pytree of axes shaped like the node; nnxlib's transforms take ``StateAxes``, so
    the per-variable answers are grouped into one (a tuple or list of nodes gives one
    per node). The values may also be shardings or ``PartitionSpec`` s, for ``jit``'s
    ``in_shardings``/``out_shardings`` and ``shard_map``'s ``in_specs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Pair(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Param(jnp.array(2.0))
        ...         self.b = nnx.BatchStat(jnp.arange(5.0))
        >>> axes = nnx.prefix(Pair(), lambda path, v: 0 if "b" in path else None)
        >>> nnx.vmap(lambda p: p.a * p.b, in_axes=(axes,))(Pair())
        Array([0., 2., 4., 6., 8.], dtype=float32)
    """
    if type(node) in (tuple, list):  # one prefix per node, as flax gives for a tuple
        return type(node)(prefix(n, filter_map, graph=graph) for n in node)
    check_mode(node, graph, "nnx.prefix")
    if isinstance(filter_map, Mapping):
        return StateAxes(filter_map)
    groups: dict[Any, list] = {}
    for path, value in iter_graph(node, graph=True):
        if isinstance(value, Variable):
            groups.setdefault(filter_map(path, value), []).append(path)
    items = [(PathIn(*paths), axis) for axis, paths in groups.items()]
    return StateAxes(items + [(..., None)])

