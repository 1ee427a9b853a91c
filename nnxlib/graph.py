"""Graph operations: split an object graph into a static ``GraphDef`` plus ``State``.

A module graph is made of *nodes* (modules, ``List``/``Dict`` containers, tuples, …),
*variables* and *static* values. ``split`` walks it once and produces:

* a :class:`GraphDef`: the structure (node types, attribute names, static values,
  variable kinds and metadata, and which objects are shared), immutable and hashable;
* a :class:`~nnxlib.state.State`: the leaves (the live ``Variable`` objects and raw
  arrays) keyed by their first path.

``merge`` inverts it. Shared references are recorded once and re-linked on the way back,
so a variable or submodule reachable by two paths is one object again after a round trip.

The walk result is cached on the root object as a *plan*: the ``GraphDef`` plus the
ordered list of leaf owners. While the graph's structure is unchanged (see
``nnxlib._tracking``) ``split`` reuses the plan and does O(number of leaves) list work.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Block(nnx.Module):
    ...     def __init__(self):
    ...         self.w = nnx.Param(jnp.ones((2, 2)))
    ...         self.mean = nnx.BatchStat(jnp.zeros(2))
    >>> block = Block()
    >>> graphdef, params, stats = nnx.split(block, nnx.Param, nnx.BatchStat)
    >>> list(params), list(stats)
    (['w'], ['mean'])
    >>> nnx.merge(graphdef, params, stats).w is block.w   # variables are reused
    True
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np

from nnxlib import _tracking
from nnxlib._frozen import Unhashable, freeze
from nnxlib.state import State, key_order, partition_indices
from nnxlib.variables import Variable, _new_variable, freeze_metadata, thaw_metadata

__all__ = [
    "GraphDef",
    "register_graph_node_type",
    "is_graph_node",
    "is_node_or_variable",
    "split",
    "merge",
    "update",
    "state",
    "graphdef",
    "pop",
    "clone",
    "iter_graph",
    "iter_children",
    "recursive_map",
    "find_duplicates",
    "call",
]


# ------------------------------------------------------------------ node registry
class NodeImpl(NamedTuple):
    """How the graph walker reads and rebuilds one kind of node.

    ``children(node)`` lists ``(key, value)`` pairs in a stable order. Mutable nodes
    (``pytree=False``) have identity: ``create_empty(type, trace)`` makes a blank
    instance belonging to JAX trace ``trace`` and
    ``fill(node, pairs)`` sets its children without counting as a user mutation, which
    lets cycles and shared references be rebuilt; ``keyed`` says the order of the pairs
    given to ``fill`` does not matter. Immutable pytree-like nodes (``pytree=True``,
    e.g. tuples) are rebuilt by ``build(type, keys, values)``.
    """

    children: Callable[[Any], list]
    pytree: bool
    create_empty: Callable[[type, Any], Any] | None = None
    fill: Callable[[Any, list], None] | None = None
    build: Callable[[type, tuple, list], Any] | None = None
    set_raw: Callable[[Any, Any, Any], None] | None = None
    keyed: bool = False


_IMPLS: dict[type, NodeImpl | None] = {}


def register_graph_node_type(typ: type, impl: NodeImpl) -> None:
    """Teach the graph walker a new node type (subclasses inherit it).

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.graph import NodeImpl, register_graph_node_type
        >>> class Pair:
        ...     def __init__(self, a, b):
        ...         self.a, self.b = a, b
        >>> register_graph_node_type(Pair, NodeImpl(
        ...     children=lambda p: [("a", p.a), ("b", p.b)], pytree=True,
        ...     build=lambda t, keys, values: Pair(*values)))
        >>> graphdef, state = nnx.split(Pair(nnx.Param(1.0), 2))
        >>> list(state)
        ['a']
    """
    _IMPLS.clear()  # subclasses may have cached a different answer
    _REGISTERED[typ] = impl


_REGISTERED: dict[type, NodeImpl] = {}


def node_impl(typ: type) -> NodeImpl | None:
    """The :class:`NodeImpl` for ``typ`` (searching its bases), or None for non-nodes."""
    try:
        return _IMPLS[typ]
    except KeyError:
        pass
    impl = None
    for base in typ.__mro__:
        if base in _REGISTERED:
            impl = _REGISTERED[base]
            break
    _IMPLS[typ] = impl
    return impl


def is_graph_node(x: Any) -> bool:
    """True for modules, containers and other registered graph nodes (not variables).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.graph.is_graph_node(nnx.List([1])), nnx.graph.is_graph_node(1)
        (True, False)
    """
    impl = node_impl(type(x))
    return impl is not None and not impl.pytree


def is_node_or_variable(x: Any) -> bool:
    """True for mutable graph nodes and variables (the objects with identity)."""
    return isinstance(x, Variable) or is_graph_node(x)


def _sorted_items(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: key_order(kv[0]))


register_graph_node_type(tuple, NodeImpl(
    children=lambda t: list(enumerate(t)), pytree=True,
    build=lambda typ, keys, values: typ(values) if typ is tuple else typ(*values)))
register_graph_node_type(list, NodeImpl(
    children=lambda t: list(enumerate(t)), pytree=True,
    build=lambda typ, keys, values: list(values)))
register_graph_node_type(dict, NodeImpl(
    children=_sorted_items, pytree=True,
    build=lambda typ, keys, values: dict(zip(keys, values))))


def is_array(x: Any) -> bool:
    """True for values that are state when held directly by a module attribute."""
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


# --------------------------------------------------------------- graph definition
class NodeDef(NamedTuple):
    """A mutable node: its type, identity index and attribute definitions."""

    type: type
    index: int
    attributes: tuple
    kind: str = "node"


class PytreeDef(NamedTuple):
    """An immutable container (tuple, plain list/dict inside a pytree root)."""

    type: type
    attributes: tuple
    kind: str = "pytree"


class VariableDef(NamedTuple):
    """A variable: its kind, identity index and (frozen) metadata; consumes one leaf."""

    type: type
    index: int
    metadata: tuple
    kind: str = "variable"


class NodeRef(NamedTuple):
    """A second path to an object already defined at ``index`` (a shared reference)."""

    index: int
    kind: str = "ref"


class ArrayLeaf(NamedTuple):
    """A raw array held directly by an attribute; consumes one leaf."""

    kind: str = "array"


class Static(NamedTuple):
    """A static (non-array) attribute value, part of the structure."""

    value: Any
    kind: str = "static"


class GraphDef:
    """The static structure of a graph: immutable, hashable, compares by value.

    Example:
        >>> import nnxlib as nnx
        >>> a = nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> b = nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(1)))
        >>> a == b, hash(a) == hash(b)
        (True, True)
    """

    __slots__ = ("root", "paths", "num_leaves", "_hash", "_builder")

    def __init__(self, root: Any, paths: tuple):
        set_ = object.__setattr__
        set_(self, "root", root)
        set_(self, "paths", paths)  # leaf paths in leaf order (derived; not in equality)
        set_(self, "num_leaves", len(paths))
        set_(self, "_hash", hash(root))
        set_(self, "_builder", None)  # compiled lazily by build_fresh (a cache)

    def build_fresh(self, leaves: list, objects: dict | None = None) -> Any:
        """Build new objects from ``leaves`` (Variables are reused, raw values boxed).

        Uses a builder compiled from the definition once, so repeated merges of the
        same structure skip the interpretation work.
        """
        builder = self._builder
        if builder is None:
            builder = _compile(self.root)
            object.__setattr__(self, "_builder", builder)
        return builder(iter(leaves), {} if objects is None else objects,
                       _tracking.current_trace())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"GraphDef is immutable: cannot set {name!r}.")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"GraphDef is immutable: cannot delete {name!r}.")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, GraphDef) and self._hash == other._hash
            and self.root == other.root
        )

    def __repr__(self) -> str:
        return f"GraphDef({_def_repr(self.root, 0)})"

    def __reduce__(self) -> tuple:
        return (GraphDef, (self.root, self.paths))

    def apply(self, state: Any, *states: Any) -> "_CallProxy":
        """Functional call helper: ``graphdef.apply(state).method(...)``.

        Returns ``(output, (graphdef, state))`` like :func:`call`.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> graphdef, state = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
            >>> y, _ = graphdef.apply(state)(jnp.ones((1, 2)))
            >>> y.shape
            (1, 3)
        """
        return call((self, merge_state_args(state, *states)))


# A GraphDef is static data: as a pytree it has no leaves and travels as auxiliary data,
# so ``jax.jit(f)(graphdef, state)`` and ``jax.tree.map`` over ``(graphdef, state)`` work.
jax.tree_util.register_static(GraphDef)


def merge_state_args(state: Any, *states: Any) -> Any:
    from nnxlib.state import merge_state

    return merge_state(state, *states) if states else state


def _def_repr(d: Any, depth: int) -> str:
    pad = "  " * (depth + 1)
    if isinstance(d, NodeDef) or isinstance(d, PytreeDef):
        inner = ",\n".join(f"{pad}{k!r}: {_def_repr(v, depth + 1)}" for k, v in d.attributes)
        index = f", index={d.index}" if isinstance(d, NodeDef) else ""
        body = f"\n{inner}\n{'  ' * depth}" if inner else ""
        return f"{d.type.__name__}({index.lstrip(', ')}){{{body}}}"
    if isinstance(d, VariableDef):
        meta = ", ".join(f"{k}={e!r}" for k, e in d.metadata)
        return f"{d.type.__name__}(index={d.index}{', ' if meta else ''}{meta})"
    if isinstance(d, NodeRef):
        return f"<ref {d.index}>"
    if isinstance(d, ArrayLeaf):
        return "<array>"
    return repr(d.value)


# ------------------------------------------------------------------ flatten/build
class _Flattener:
    """One walk over a graph; collects definitions, leaves and the objects seen."""

    __slots__ = ("index_of", "objects", "paths", "leaves", "slots", "stamped", "_next")

    def __init__(self, seed: dict[int, int] | None = None, first_index: int = 0):
        self.index_of: dict[int, int] = dict(seed) if seed else {}
        self.objects: dict[int, Any] = {}  # index -> object (nodes and variables)
        self.paths: list = []
        self.leaves: list = []
        self.slots: list = []  # (leaf position, owner, key, set_raw) for raw arrays
        self.stamped: list = []  # every mutable object covered (for plan validation)
        self._next = max(first_index, len(self.index_of))

    def new_index(self, obj: Any) -> tuple[int, bool]:
        key = id(obj)
        index = self.index_of.get(key)
        if index is not None:
            if index not in self.objects:  # seeded (known from outside), first visit
                self.objects[index] = obj
                return index, True
            return index, False
        index = self._next
        self._next += 1
        self.index_of[key] = index
        self.objects[index] = obj
        return index, True

    def flatten(self, value: Any, path: tuple, owner: Any = None, key: Any = None,
                set_raw: Any = None) -> Any:
        if isinstance(value, Variable):
            index, first = self.new_index(value)
            if not first:
                return NodeRef(index)
            self.stamped.append(value)
            self.paths.append(path)
            self.leaves.append(value)
            return VariableDef(type(value), index, freeze_metadata(value._metadata))
        impl = node_impl(type(value))
        if impl is not None:
            if impl.pytree:
                attrs = tuple((k, self.flatten(v, path + (k,), value, k, None))
                              for k, v in impl.children(value))
                return PytreeDef(type(value), attrs)
            index, first = self.new_index(value)
            if not first:
                return NodeRef(index)
            self.stamped.append(value)
            attrs = tuple((k, self.flatten(v, path + (k,), value, k, impl.set_raw))
                          for k, v in impl.children(value))
            return NodeDef(type(value), index, attrs)
        if is_array(value):
            if set_raw is not None:
                self.slots.append((len(self.leaves), owner, key, set_raw))
            self.paths.append(path)
            self.leaves.append(value)
            return ArrayLeaf()
        return Static(freeze(value))


def build(d: Any, leaves: Iterator, objects: dict[int, Any],
          existing: dict[int, Any] | None = None) -> Any:
    """Rebuild the object for definition ``d``, consuming ``leaves`` in order.

    ``objects`` collects index -> object (for shared references). With ``existing``,
    objects whose index is a key there are updated in place instead of created, which
    is how a structural change made inside a transform reaches the caller's objects.
    """
    kind = d.kind
    if kind == "variable":
        leaf = next(leaves)
        old = existing.get(d.index) if existing else None
        if old is not None:
            object.__setattr__(old, "_raw_value",
                               leaf._raw_value if isinstance(leaf, Variable) else leaf)
            metadata = thaw_metadata(d.metadata)
            if metadata != old._metadata:
                object.__setattr__(old, "_metadata", metadata)
                object.__setattr__(old, "_nnx_stamp", _tracking.bump())
            var = old
        elif isinstance(leaf, Variable):
            var = leaf
        else:
            var = _new_variable(d.type, leaf, thaw_metadata(d.metadata),
                                _tracking.current_trace())
        objects[d.index] = var
        return var
    if kind == "node":
        impl = node_impl(d.type)
        old = existing.get(d.index) if existing else None
        node = old if old is not None else impl.create_empty(d.type, _tracking.current_trace())
        objects[d.index] = node
        pairs = [(k, build(v, leaves, objects, existing)) for k, v in d.attributes]
        impl.fill(node, pairs)
        if old is not None:
            object.__setattr__(node, "_nnx_stamp", _tracking.bump())
        return node
    if kind == "ref":
        try:
            return objects[d.index]
        except KeyError:
            return existing[d.index]  # type: ignore[index]
    if kind == "array":
        leaf = next(leaves)
        return leaf._raw_value if isinstance(leaf, Variable) else leaf
    if kind == "pytree":
        keys = tuple(k for k, _ in d.attributes)
        values = [build(v, leaves, objects, existing) for _, v in d.attributes]
        return node_impl(d.type).build(d.type, keys, values)
    value = d.value
    return value.value if isinstance(value, Unhashable) else value


def _compile(d: Any) -> Callable[[Iterator, dict, Any], Any]:
    """Turn a definition into a closure ``(leaves, objects, trace) -> object``.

    Equivalent to :func:`build` without ``existing``; the dispatch on definition kinds
    and the lookups of node implementations happen once here instead of per merge.
    """
    kind = d.kind
    if kind == "variable":
        var_type, index, frozen = d.type, d.index, d.metadata

        def build_variable(leaves: Iterator, objects: dict, trace: Any) -> Any:
            leaf = next(leaves)
            if not isinstance(leaf, Variable):
                leaf = _new_variable(var_type, leaf, thaw_metadata(frozen), trace)
            objects[index] = leaf
            return leaf

        return build_variable
    if kind == "node":
        node_type, index = d.type, d.index
        impl = node_impl(node_type)
        create, fill = impl.create_empty, impl.fill
        statics = [(k, _static_value(v)) for k, v in d.attributes if v.kind == "static"]
        if impl.keyed:
            dynamic = tuple((k, _compile(v)) for k, v in d.attributes if v.kind != "static")
        else:  # order matters (lists): compile everything, statics included
            statics = []
            dynamic = tuple((k, _compile(v)) for k, v in d.attributes)

        def build_node(leaves: Iterator, objects: dict, trace: Any) -> Any:
            node = create(node_type, trace)
            objects[index] = node
            pairs = [(k, b(leaves, objects, trace)) for k, b in dynamic]
            if statics:
                pairs += statics
            fill(node, pairs)
            return node

        return build_node
    if kind == "ref":
        ref_index = d.index
        return lambda leaves, objects, trace: objects[ref_index]
    if kind == "array":
        def build_array(leaves: Iterator, objects: dict, trace: Any) -> Any:
            leaf = next(leaves)
            return leaf._raw_value if isinstance(leaf, Variable) else leaf

        return build_array
    if kind == "pytree":
        pytree_type = d.type
        make = node_impl(pytree_type).build
        keys = tuple(k for k, _ in d.attributes)
        children = tuple(_compile(v) for _, v in d.attributes)
        return lambda leaves, objects, trace: make(
            pytree_type, keys, [b(leaves, objects, trace) for b in children])
    value = _static_value(d)
    return lambda leaves, objects, trace: value


def _static_value(d: Static) -> Any:
    value = d.value
    return value.value if isinstance(value, Unhashable) else value


# -------------------------------------------------------------------- split plans
class Plan:
    """A cached walk of one root: its GraphDef and how to read its current leaves."""

    __slots__ = ("epoch", "graphdef", "template", "slots", "stamped", "objects",
                 "partitions", "path_index", "others", "writers", "__weakref__")

    def __init__(self, graphdef: GraphDef, flat: _Flattener, others: tuple = ()):
        self.epoch = _tracking.EPOCH[0]
        self.graphdef = graphdef
        self.template = flat.leaves  # Variables stay; raw-array positions are refreshed
        self.slots = flat.slots
        self.stamped = flat.stamped
        self.objects = flat.objects
        self.partitions: dict = {}
        self.path_index: dict | None = None
        self.others = others  # weak references to extra roots (multi-root plans)
        self.writers: tuple | None = None  # transforms' write-back cache (see _lift)

    def is_valid(self) -> bool:
        epoch = _tracking.EPOCH[0]
        if self.epoch == epoch:
            return True
        limit = self.epoch
        for obj in self.stamped:
            if obj._nnx_stamp > limit:
                return False
        self.epoch = epoch
        return True

    def leaves(self) -> list:
        """Current leaves: the live variables, plus fresh reads of raw-array slots."""
        leaves = list(self.template)
        for position, owner, key, _ in self.slots:
            leaves[position] = _read_child(owner, key)
        return leaves

    def partition(self, filters: tuple, leaves: list) -> list:
        try:
            return self.partitions[filters]
        except (KeyError, TypeError):
            pass
        paths = self.graphdef.paths
        groups = partition_indices(paths, leaves, filters)
        result = [(tuple(paths[i] for i in idx), idx) for idx in groups]
        try:
            self.partitions[filters] = result
        except TypeError:  # unhashable filter: just don't cache
            pass
        return result


def _read_child(owner: Any, key: Any) -> Any:
    d = getattr(owner, "__dict__", None)
    if d is not None and isinstance(key, str) and key in d:
        return d[key]
    return owner[key]


def plan_for(node: Any) -> Plan:
    """Return the (cached) :class:`Plan` for a root node, re-walking only if needed."""
    plan = getattr(node, "_nnx_plan", None)
    if plan is not None and plan.is_valid():
        return plan
    plan = _walk((node,))
    if is_graph_node(node):
        object.__setattr__(node, "_nnx_plan", plan)
    return plan


def plan_for_many(nodes: tuple) -> Plan:
    """A joint plan over several roots (shared references across them are kept).

    The GraphDef's root is a ``PytreeDef`` tuple of the roots, leaf paths start with
    the root's position. Cached on the first root (apart from its single-root plan).
    """
    first = nodes[0]
    plan = getattr(first, "_nnx_joint", None)
    if (plan is not None and len(plan.others) == len(nodes) - 1
            and all(ref() is n for ref, n in zip(plan.others, nodes[1:]))
            and plan.is_valid()):
        return plan
    plan = _walk(nodes, tuple(weakref.ref(n) for n in nodes[1:]), joint=True)
    object.__setattr__(first, "_nnx_joint", plan)
    return plan


def _walk(nodes: tuple, others: tuple = (), joint: bool = False) -> Plan:
    flat = _Flattener()
    if not joint:
        root = flat.flatten(nodes[0], ())
    else:
        root = PytreeDef(tuple, tuple((i, flat.flatten(n, (i,))) for i, n in enumerate(nodes)))
    return Plan(GraphDef(root, tuple(flat.paths)), flat, others)


def flatten(node: Any, seed: dict[int, int] | None = None
            ) -> tuple[GraphDef, list, _Flattener]:
    """Uncached walk: ``(graphdef, leaves, flattener)``; ``seed`` fixes known indices."""
    flat = _Flattener(seed)
    root = flat.flatten(node, ())
    return GraphDef(root, tuple(flat.paths)), flat.leaves, flat


def unflatten(graphdef: GraphDef, leaves: list, existing: dict[int, Any] | None = None
              ) -> Any:
    """Rebuild from a definition and leaves (raw values become fresh variables)."""
    if len(leaves) != graphdef.num_leaves:
        raise ValueError(
            f"unflatten: expected {graphdef.num_leaves} leaves, got {len(leaves)}."
        )
    return build(graphdef.root, iter(leaves), {}, existing)


# ------------------------------------------------------------------ public API
def split(node: Any, *filters: Any) -> tuple:
    """Split a graph into its :class:`GraphDef` and one :class:`State` per filter.

    Without filters returns ``(graphdef, state)``. With filters, each leaf goes to the
    first filter that matches; every leaf must match one (end with ``...``).

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> graphdef, state = nnx.split(model)
        >>> sorted(state)
        ['bias', 'kernel']
    """
    plan = plan_for(node)
    leaves = plan.leaves()
    graphdef = plan.graphdef
    if not filters:
        return graphdef, _state_of(graphdef.paths, leaves)
    groups = plan.partition(filters, leaves)
    return (graphdef, *(_state_of(paths, [leaves[i] for i in idx]) for paths, idx in groups))


def _state_of(paths: tuple, leaves: list) -> Any:
    """The state of a split: a :class:`State`, or, when the root itself is a Variable
    (its one path is ``()``), that Variable, as ``flax.nnx`` returns it."""
    if paths == _ROOT_PATHS:
        return leaves[0]
    return State._from_flat(paths, leaves)


def _flat_of(state: Any) -> tuple:
    """``(paths, leaves)`` of a state given to merge/update (a Variable counts as root)."""
    if isinstance(state, Variable):
        return _ROOT_PATHS, (state,)
    return (state if isinstance(state, State) else State(state))._flat()


_ROOT_PATHS = ((),)


def graphdef(node: Any) -> GraphDef:
    """Return only the :class:`GraphDef` of a graph (cached).

    Example:
        >>> import nnxlib as nnx
        >>> isinstance(nnx.graphdef(nnx.Linear(1, 1, rngs=nnx.Rngs(0))), nnx.GraphDef)
        True
    """
    return plan_for(node).graphdef


def state(node: Any, *filters: Any) -> Any:
    """Return the graph's :class:`State`, or the part matching each filter.

    Unlike :func:`split`, leaves matching no filter are simply left out.

    Example:
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
        >>> sorted(nnx.state(bn, nnx.BatchStat))
        ['mean', 'var']
    """
    plan = plan_for(node)
    leaves = plan.leaves()
    paths = plan.graphdef.paths
    if not filters:
        return _state_of(paths, leaves)
    from nnxlib.state import filter_state

    return filter_state(State._from_flat(paths, leaves), *filters)


def _leaves_for(graphdef: GraphDef, states: tuple, where: str) -> list:
    """Order the leaves of ``states`` as ``graphdef`` expects, or explain the mismatch."""
    if len(states) == 1 and isinstance(states[0], State) and states[0]._paths is not None:
        paths, leaves = states[0]._paths, states[0]._leaves
        if paths is graphdef.paths or paths == graphdef.paths:
            return leaves
    by_path: dict = {}
    for s in states:
        by_path.update(zip(*_flat_of(s)))
    missing = [p for p in graphdef.paths if p not in by_path]
    extra = set(by_path) - set(graphdef.paths)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing paths {[_fmt(p) for p in missing[:5]]}")
        if extra:
            parts.append(f"unexpected paths {sorted(_fmt(p) for p in extra)[:5]}")
        raise ValueError(
            f"{where}: the state does not match the graph definition: "
            f"{'; '.join(parts)}. Expected {len(graphdef.paths)} leaves, got "
            f"{len(by_path)}. Hint: pass every state returned by split (e.g. "
            "merge(graphdef, params, rest)) and do not add or drop entries."
        )
    return [by_path[p] for p in graphdef.paths]


def _fmt(path: tuple) -> str:
    return "/".join(map(str, path))


def merge(graphdef: GraphDef, state: Any, /, *states: Any) -> Any:
    """Rebuild the object graph from a :class:`GraphDef` and its state(s).

    Variables in the state are used as they are (not copied), as in ``flax.nnx``.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> graphdef, params = nnx.split(model)
        >>> copy = nnx.merge(graphdef, params)
        >>> type(copy).__name__, copy.kernel is model.kernel
        ('Linear', True)
    """
    if not isinstance(graphdef, GraphDef):
        raise TypeError(
            f"merge: expected a GraphDef as first argument, got {type(graphdef).__name__}."
            " Hint: use the graphdef returned by nnx.split."
        )
    leaves = _leaves_for(graphdef, (state, *states), "merge")
    return graphdef.build_fresh(leaves)


def update(node: Any, state: Any, /, *states: Any) -> None:
    """Write the values of ``state`` (and ``states``) into the existing graph.

    Every path must exist in the graph, and shapes and dtypes must match; on any
    mismatch nothing is written.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> doubled = jax.tree.map(lambda x: 2 * x, nnx.state(model))
        >>> old = model.kernel[...]
        >>> nnx.update(model, doubled)
        >>> bool((model.kernel[...] == 2 * old).all())
        True
    """
    plan = plan_for(node)
    if plan.path_index is None:
        plan.path_index = {p: i for i, p in enumerate(plan.graphdef.paths)}
    index = plan.path_index
    current = plan.leaves()
    writes = []
    for s in (state, *states):
        for path, new in zip(*_flat_of(s)):
            i = index.get(path)
            if i is None:
                raise ValueError(
                    f"update: path {_fmt(path)!r} is not in the "
                    f"{type(node).__name__}; known paths include "
                    f"{[_fmt(p) for p in plan.graphdef.paths[:5]]}. Hint: update with a "
                    "state taken from this model (nnx.state(model)) or its filtered part."
                )
            _check_compatible(path, current[i], new, "update")
            writes.append((i, new))
    slot_at = {position: (owner, key, set_raw) for position, owner, key, set_raw in plan.slots}
    for i, new in writes:
        target = current[i]
        value = new._raw_value if isinstance(new, Variable) else new
        if isinstance(target, Variable):
            object.__setattr__(target, "_raw_value", value)
            if isinstance(new, Variable) and new is not target and new._metadata != target._metadata:
                target.set_metadata(new._metadata)
        else:
            if not is_array(value):  # a numpy scalar (0-d array + 1) or a Python number:
                # keep the position an array, or it would silently turn into a static
                value = np.asarray(value, dtype=getattr(target, "dtype", None))
            if i in slot_at:
                owner, key, set_raw = slot_at[i]
                set_raw(owner, key, value)
            else:  # a raw array inside an immutable container (e.g. a tuple attribute)
                _write_into_pytree(node, plan.graphdef.paths[i], value)


def _write_into_pytree(root: Any, path: tuple, value: Any) -> None:
    """Rebuild the immutable container holding ``path``'s array and re-attach it.

    Replacing a container changes no structure, but the cached plan of ``root`` holds
    the old array for this position, so the owner is stamped to make it re-read.
    """
    owner, owner_key, rest, obj = None, None, path, root
    for depth, key in enumerate(path):
        if is_graph_node(obj):
            owner, owner_key, rest = obj, key, path[depth + 1:]
        obj = dict(node_impl(type(obj)).children(obj))[key]
    impl = node_impl(type(owner))
    if impl.set_raw is None:
        raise TypeError(
            f"update: cannot write the array at {_fmt(path)!r}: its owner "
            f"{type(owner).__name__} has no set_raw in its NodeImpl."
        )

    def rebuild(tree: Any, keys: tuple) -> Any:
        if not keys:
            return value
        tree_impl = node_impl(type(tree))
        children = tree_impl.children(tree)
        values = [rebuild(v, keys[1:]) if k == keys[0] else v for k, v in children]
        return tree_impl.build(type(tree), tuple(k for k, _ in children), values)

    container = dict(impl.children(owner))[owner_key]
    impl.set_raw(owner, owner_key, rebuild(container, rest))
    object.__setattr__(owner, "_nnx_stamp", _tracking.bump())


def _check_compatible(path: tuple, old: Any, new: Any, where: str) -> None:
    old_value = old._raw_value if isinstance(old, Variable) else old
    new_value = new._raw_value if isinstance(new, Variable) else new
    try:
        if old_value.shape == new_value.shape and old_value.dtype == new_value.dtype:
            return
    except AttributeError:  # not arrays (python scalars, tuples from sow): no check
        return
    if tuple(old_value.shape) != tuple(new_value.shape):
        raise ValueError(
            f"{where}: shape mismatch at {_fmt(path)!r}: expected "
            f"{tuple(old_value.shape)}, got {tuple(new_value.shape)}. Hint: the state must "
            "come from a model with the same layer sizes."
        )
    raise ValueError(
        f"{where}: dtype mismatch at {_fmt(path)!r}: expected {old_value.dtype}, got "
        f"{new_value.dtype}. Hint: cast the state first (jax.tree.map(lambda x: "
        f"x.astype({old_value.dtype}), state)), or set variable.value to change the dtype "
        "on purpose."
    )


def pop(node: Any, *filters: Any) -> Any:
    """Remove the variables matching ``filters`` from the graph and return them.

    Returns one State per filter. Every reference to a removed variable is removed.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Model(nnx.Module):
        ...     def __call__(self, x):
        ...         self.sow(nnx.Intermediate, "y", x * 2)
        ...         return x
        >>> model = Model()
        >>> _ = model(jnp.ones(2))
        >>> intermediates = nnx.pop(model, nnx.Intermediate)
        >>> list(intermediates), hasattr(model, "y")
        (['y'], False)
    """
    if not filters:
        raise TypeError("pop: expected at least one filter, e.g. pop(model, nnx.Intermediate).")
    selected = state(node, *filters)
    chosen = {id(v) for s in (selected if len(filters) > 1 else (selected,))
              for v in s._flat()[1] if isinstance(v, Variable)}
    edges = [(owner, key) for owner, key, value in _edges(node) if id(value) in chosen]
    for owner, key in reversed(edges):  # reversed keeps list indices valid
        if isinstance(owner, list):
            del owner[key]
        elif isinstance(owner, dict):
            del owner[key]
        else:
            delattr(owner, key)
    return selected


def _edges(node: Any) -> Iterator[tuple[Any, Any, Any]]:
    """Every (owner, key, child) edge between mutable nodes and their children, once."""
    seen: set[int] = set()

    def visit(obj: Any) -> Iterator[tuple[Any, Any, Any]]:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        impl = node_impl(type(obj))
        for key, child in impl.children(obj):
            yield obj, key, child
            child_impl = node_impl(type(child))
            if child_impl is not None and not child_impl.pytree:
                yield from visit(child)

    yield from visit(node)


def clone(node: Any) -> Any:
    """Deep-copy a graph: new nodes and variables, same structure and sharing.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> twin = nnx.clone(model)
        >>> twin.kernel is model.kernel, bool((twin.kernel[...] == model.kernel[...]).all())
        (False, True)
    """
    plan = plan_for(node)
    leaves = [v.copy() if isinstance(v, Variable) else v for v in plan.leaves()]
    return plan.graphdef.build_fresh(leaves)


def iter_graph(node: Any) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every node and leaf once, children before parents.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> [path for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
        [('bias',), ('kernel',)]
    """
    seen: set[int] = set()

    def visit(path: tuple, value: Any) -> Iterator[tuple[tuple, Any]]:
        impl = node_impl(type(value))
        if impl is not None or isinstance(value, Variable):
            if id(value) in seen:
                return
            seen.add(id(value))
        if impl is not None:
            for key, child in impl.children(value):
                yield from visit(path + (key,), child)
        yield path, value

    yield from visit((), node)


def iter_children(node: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``(key, child)`` for the direct children of a node that are graph nodes.

    Example:
        >>> import nnxlib as nnx
        >>> seq = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> [key for key, _ in nnx.iter_children(seq)]
        ['layers']
    """
    for key, child in node_impl(type(node)).children(node):
        if is_graph_node(child):
            yield key, child


def recursive_map(f: Callable[[tuple, Any], Any], node: Any) -> Any:
    """Rebuild a graph bottom-up, replacing each node and leaf by ``f(path, value)``.

    Shared objects are mapped once and stay shared.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> def to_zeros(path, x):
        ...     return nnx.Param(jnp.zeros_like(x[...])) if isinstance(x, nnx.Param) else x
        >>> float(nnx.recursive_map(to_zeros, model).kernel[...].sum())
        0.0
    """
    memo: dict[int, Any] = {}

    def visit(path: tuple, value: Any) -> Any:
        key = id(value)
        if key in memo:
            return memo[key]
        impl = node_impl(type(value))
        if impl is not None and impl.pytree:
            children = impl.children(value)
            values = [visit(path + (k,), v) for k, v in children]
            return f(path, impl.build(type(value), tuple(k for k, _ in children), values))
        if impl is not None:
            memo[key] = value  # cycles see the original until the mapped node exists
            new_children = [(k, visit(path + (k,), v)) for k, v in impl.children(value)]
            impl.fill(value, new_children)
            object.__setattr__(value, "_nnx_stamp", _tracking.bump())
            result = f(path, value)
        else:
            result = f(path, value)
        if impl is not None or isinstance(value, Variable):
            memo[key] = result
        return result

    return visit((), node)


def find_duplicates(node: Any, /, *, only: Any = ...) -> list[list[tuple]]:
    """List groups of paths that reach the same object (shared references).

    Example:
        >>> import nnxlib as nnx
        >>> class Tied(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        ...         self.b = self.a
        >>> nnx.find_duplicates(Tied())
        [[('a',), ('b',)]]
    """
    from nnxlib.filters import to_predicate

    predicate = to_predicate(only)
    paths_of: dict[int, list] = {}
    seen: set[int] = set()

    def visit(path: tuple, value: Any) -> None:
        impl = node_impl(type(value))
        has_identity = isinstance(value, Variable) or (impl is not None and not impl.pytree)
        if has_identity:
            if predicate(path, value):
                paths_of.setdefault(id(value), []).append(path)
            if id(value) in seen:
                return
            seen.add(id(value))
        if impl is not None:
            for key, child in impl.children(value):
                visit(path + (key,), child)

    visit((), node)
    return [paths for paths in paths_of.values() if len(paths) > 1]


class _CallProxy:
    """Attribute path + call on a merged copy, returning ``(out, (graphdef, state))``."""

    def __init__(self, graphdef_state: tuple, names: tuple = ()):
        self._graphdef_state = graphdef_state
        self._names = names

    def __getattr__(self, name: str) -> "_CallProxy":
        return _CallProxy(self._graphdef_state, self._names + (name,))

    def __call__(self, *args: Any, **kwargs: Any) -> tuple:
        graphdef, state_ = self._graphdef_state
        node = merge(graphdef, clone_state(state_))
        target = node
        for name in self._names:
            target = getattr(target, name)
        out = target(*args, **kwargs)
        return out, split(node)


def clone_state(state_: Any) -> State:
    """A state whose variables are copies (so a functional call cannot mutate inputs)."""
    import jax as _jax

    return _jax.tree.map(lambda x: x, state_)


def call(graphdef_state: tuple) -> _CallProxy:
    """Call a method functionally: ``call((graphdef, state)).method(*args)``.

    Returns ``(output, (graphdef, new_state))``; the input state is not mutated.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> graphdef, state = nnx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> y, (graphdef, state) = nnx.call((graphdef, state))(jnp.ones((4, 2)))
        >>> y.shape
        (4, 2)
    """
    return _CallProxy(graphdef_state)
