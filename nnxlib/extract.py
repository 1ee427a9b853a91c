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

from nnxlib._graphdef import key_of_entry
from nnxlib.errors import format_path
from nnxlib.filters import PathIn, to_predicate
from nnxlib.graph import GraphDef, check_mode, is_node_or_variable, iter_graph
from nnxlib.graph_contexts import MergeContext, SplitContext
from nnxlib.graph_mode import resolve_graph
from nnxlib.transforms.axes import StateAxes
from nnxlib.variables import Variable, _new_variable

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
        path = tuple(key_of_entry(k) for k in path)
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
    bases = [tuple(key_of_entry(k) for k in path) for path, _ in
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
    """Per-variable prefixes (axes, shardings, ...) for ``node``, from ``filter_map``:
    a mapping from filters to prefixes (the first match wins) or a function
    ``(path, variable) -> prefix``.

    In tree mode (``graph=False``) the result is shaped like ``node``: a copy whose
    variables hold their prefix (``result.kernel == 0``), so it is a JAX prefix of
    ``node`` and works as ``in_axes`` of ``jax.vmap`` too. In graph mode each module in
    ``node`` (a module, or a pytree of them: one result each) gets a
    :class:`~nnxlib.StateAxes`, what ``nnx.vmap``/``nnx.scan`` take for a module in
    graph mode. A variable outside modules gets its entry itself, in both modes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Pair(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Param(jnp.array(2.0))
        ...         self.b = nnx.BatchStat(jnp.arange(5.0))
        >>> axes = nnx.prefix(Pair(), lambda path, v: 0 if "b" in path else None)
        >>> nnx.vmap(lambda p: p.a * p.b, in_axes=(axes,))(Pair())
        Array([0., 2., 4., 6., 8.], dtype=float32)
        >>> tree_axes = nnx.prefix(Pair(), {nnx.BatchStat: 0, ...: None}, graph=False)
        >>> tree_axes.b[...], tree_axes.a[...] is None
        (0, True)
        >>> jax.vmap(lambda p: p.a * p.b, in_axes=(tree_axes,))(Pair())
        Array([0., 2., 4., 6., 8.], dtype=float32)
    """
    prefix_fn = _prefix_function(filter_map)
    if not resolve_graph(graph):
        check_mode(node, False, "nnx.prefix")

        def in_module(outer: tuple, jax_path: tuple, leaf: Any) -> Any:
            value = prefix_fn(outer + tuple(key_of_entry(k) for k in jax_path), leaf)
            if isinstance(leaf, Variable):  # a variable holding its prefix: the module
                return _new_variable(type(leaf), value, dict(leaf._metadata))  # keeps its treedef
            return value

        def top(jax_path: tuple, leaf: Any) -> Any:
            path = tuple(key_of_entry(k) for k in jax_path)
            if is_node_or_variable(leaf) and not isinstance(leaf, Variable):
                return jax.tree_util.tree_map_with_path(
                    lambda p, x: in_module(path, p, x), leaf,
                    is_leaf=lambda x: isinstance(x, Variable))
            return prefix_fn(path, leaf)  # a variable (or array) outside modules: the entry

        return jax.tree_util.tree_map_with_path(top, node, is_leaf=is_node_or_variable)

    def axes_of(obj: Any) -> Any:
        if isinstance(obj, Variable):  # one leaf: its entry itself
            return prefix_fn((), obj)
        if not is_node_or_variable(obj):
            return obj
        check_mode(obj, True, "nnx.prefix")
        if isinstance(filter_map, Mapping):
            return StateAxes(filter_map)
        groups: dict[Any, list] = {}
        for path, value in iter_graph(obj, graph=True):
            if isinstance(value, Variable):
                groups.setdefault(prefix_fn(path, value), []).append(path)
        items = [(PathIn(*paths), axis) for axis, paths in groups.items()]
        return StateAxes(items + [(..., None)])

    return jax.tree_util.tree_map(axes_of, node, is_leaf=is_node_or_variable)


def _prefix_function(filter_map: Any) -> Callable[[tuple, Any], Any]:
    """``filter_map`` as a function ``(path, leaf) -> prefix``."""
    if not isinstance(filter_map, Mapping):
        return filter_map
    predicates = [(to_predicate(f), value) for f, value in filter_map.items()]

    def first_match(path: tuple, leaf: Any) -> Any:
        for predicate, value in predicates:
            if predicate(path, leaf):
                return value
        raise ValueError(
            f"nnx.prefix: the {type(leaf).__name__} at {format_path(path)!r} matches none "
            f"of the filters {list(filter_map)} (No filter matched leaf at path "
            f"{path!r}). Hint: add `...: <prefix>` as the last entry to catch the rest."
        )

    return first_match
