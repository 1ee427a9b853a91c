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
``nnxlib.variables._tracking``) ``split`` reuses the plan and does O(number of leaves) list work.

The ``nnxlib.graph`` package (the graph layer) holds the walk and everything that
reads it; it imports the layers below it (errors, variables, filters, state, spmd)
and never a layer above. A call goes down this list, never back up:

* this module: the public graph functions (``split``, ``merge``, ``update``, ``state``,
  ``pop``, ``clone``, ``iter_graph``, ...);
* ``_checks``: how a state given to ``merge``/``update`` meets a graph;
* ``_graphdef``: ``GraphDef``, the walk and its cached ``Plan`` (the structure cache);
* ``_tree_check``: tree mode's check that a definition is a tree (next to the walk);
* ``_node_types``: which values are nodes and how they are flattened;
* ``mode``: graph mode vs tree mode (``set_graph_mode``, ``set_graph_updates``).

Built on the public functions: ``flat`` (``flatten``/``unflatten``, pure dicts),
``graph_state`` (``GraphState``), ``contexts`` (split/merge contexts), ``state_tools``
(``diff``, ``restore_int_paths``) and ``_pytree`` (modules as JAX pytrees).

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

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from nnxlib.errors import GraphStructureError, StateMismatchError, format_path
from nnxlib.filters import to_predicate
from nnxlib.graph._checks import (  # noqa: F401  (used by graph_contexts and _lift)
    _check_avals,
    _check_compatible,
    _check_writable,
    _edges,
    _flat_of,
    _leaves_for,
    _put_raw,
    _state_of,
    _static_slot,
    _write_into_pytree,
)
from nnxlib.graph._graphdef import (  # noqa: F401  (re-exported: the graph layer's vocabulary)
    ArrayLeaf,
    GraphDef,
    NodeDef,
    NodeImpl,
    NodeRef,
    Plan,
    PytreeDef,
    Static,
    VariableDef,
    build,
    flatten,
    is_array,
    is_graph_node,
    is_node_or_variable,
    node_impl,
    plan_for,
    plan_for_many,
    pytree_impl,
    register_graph_node_type,
    unflatten,
)
from nnxlib.graph._tree_check import check_tree
from nnxlib.graph.mode import resolve_graph
from nnxlib.state import State, filter_state, map_state, merge_state
from nnxlib.variables import Variable, _tracking, put_raw

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
    "map_node",
    "set_metadata",
]


def _graphdef_apply(self: GraphDef, state: Any, *states: Any,
                    graph: bool | None = None) -> Any:
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
    if not resolve_graph(graph):
        check_tree(self, "GraphDef.apply")
    return call((self, merge_state_args(state, *states)))


# Defined at this layer (it needs merge and split) and attached to the class, so that
# _graphdef.py, below this module, never imports it.
GraphDef.apply = _graphdef_apply  # type: ignore[attr-defined]


def merge_state_args(state: Any, *states: Any) -> Any:
    """One state from ``merge``-style arguments (``state, *states``)."""
    return merge_state(state, *states) if states else state


# ------------------------------------------------------------------ public API
def check_mode(node: Any, graph: bool | None, where: str, root: str = "") -> None:
    """Tree mode's rule for a graph function called on ``node``.

    With ``graph=False`` (or ``graph=None`` under ``set_graph_mode(False)``) ``node`` must
    be a tree: an object reachable by two paths raises
    :class:`~nnxlib.errors.SharedReferenceError`. One cached check per structure.

    Example:
        >>> import nnxlib as nnx
        >>> shared = nnx.Param(1.0)
        >>> check_mode(nnx.List([shared, shared]), True, "nnx.state")   # graph mode
        >>> try:
        ...     check_mode(nnx.List([shared, shared]), False, "nnx.state")
        ... except nnx.errors.SharedReferenceError as error:
        ...     print(str(error).splitlines()[0])
        nnx.state(graph=False): `[0]` and `[1]` are the same Param; tree mode needs every object at one path (Duplicate Param found at paths `[0]` and `[1]`).
    """
    if not resolve_graph(graph):
        graphdef = plan_for(node).graphdef
        check_tree(graphdef, where, root=root)
        opaque = graphdef.first_non_pytree()
        if opaque is not None:
            typ, path = opaque
            found = f"Found at path: `{format_path(path, root)}`. " if path else ""
            raise GraphStructureError(
                f"{where}(graph=False): a {typ.__name__} instance has pytree=False "
                f"(its class opted out of being a JAX pytree), so tree mode cannot walk "
                f"it. {found}Expected: pytree nodes only in tree mode. Hint: pass "
                f"graph=True ({where}(..., graph=True)), or drop pytree=False from "
                f"class {typ.__name__}."
            )


def split(node: Any, *filters: Any, graph: bool | None = None) -> tuple:
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
    check_mode(node, graph, "nnx.split")
    plan = plan_for(node)
    leaves = plan.leaves()
    graphdef = plan.graphdef
    if not filters:
        return graphdef, _state_of(graphdef.paths, leaves)
    groups = plan.partition(filters, leaves)
    return (graphdef, *(_state_of(paths, [leaves[i] for i in idx]) for paths, idx in groups))


def graphdef(node: Any, /, *, graph: bool | None = None) -> GraphDef:
    """Return only the :class:`GraphDef` of a graph (cached).

    Example:
        >>> import nnxlib as nnx
        >>> isinstance(nnx.graphdef(nnx.Linear(1, 1, rngs=nnx.Rngs(0))), nnx.GraphDef)
        True
    """
    check_mode(node, graph, "nnx.graphdef")
    return plan_for(node).graphdef


def state(node: Any, *filters: Any, graph: bool | None = None) -> Any:
    """Return the graph's :class:`State`, or the part matching each filter.

    Unlike :func:`split`, leaves matching no filter are simply left out.

    Example:
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
        >>> sorted(nnx.state(bn, nnx.BatchStat))
        ['mean', 'var']
    """
    check_mode(node, graph, "nnx.state")
    plan = plan_for(node)
    leaves = plan.leaves()
    paths = plan.graphdef.paths
    if not filters:
        return _state_of(paths, leaves)
    return filter_state(State._from_flat(paths, leaves), *filters)


def merge(graphdef: GraphDef, state: Any, /, *states: Any, copy: bool = False,
          recreate_variables: bool = True) -> Any:
    """Rebuild the object graph from a :class:`GraphDef` and its state(s).

    Variables in the state are used as they are (not copied), as in ``flax.nnx``;
    with ``copy=True`` the graph gets copies of them (sharing inside it is kept).
    ``recreate_variables`` (flax.nnx's switch between its two variable implementations)
    is accepted; nnxlib has one, and both values give flax's result for plain variables.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> graphdef, params = nnx.split(model)
        >>> same = nnx.merge(graphdef, params)
        >>> type(same).__name__, same.kernel is model.kernel
        ('Linear', True)
        >>> nnx.merge(graphdef, params, copy=True).kernel is model.kernel
        False
    """
    if not isinstance(graphdef, GraphDef):
        raise TypeError(
            f"merge: expected a GraphDef as first argument, got {type(graphdef).__name__}."
            " Hint: use the graphdef returned by nnx.split."
        )
    leaves = _leaves_for(graphdef, (state, *states), "merge")
    _check_avals(graphdef, leaves)
    if copy:
        leaves = [v.copy() if isinstance(v, Variable) else v for v in leaves]
    return graphdef.build_fresh(leaves)


def update(node: Any, state: Any, /, *states: Any) -> None:
    """Write the values of ``state`` (and ``states``) into the existing graph.

    Every path must exist in the graph, and shapes and dtypes must match; on any
    mismatch nothing is written. A path that holds a static value (a Python number, a
    string, ...) in a module or container gets the new value, as in flax.nnx.

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
    static_writes = []
    for s in (state, *states):
        for path, new in zip(*_flat_of(s)):
            i = index.get(path)
            if i is None and not isinstance(new, Variable):
                slot = _static_slot(node, path)
                if slot is not None:  # replaces a static value (a structural change)
                    static_writes.append((*slot, new))
                    continue
            if i is None:
                raise StateMismatchError(
                    f"update: path {format_path(path)!r} is not in the "
                    f"{type(node).__name__}; known paths include "
                    f"{[format_path(p) for p in plan.graphdef.paths[:5]]}. Hint: update with a "
                    "state taken from this model (nnx.state(model)) or its filtered part."
                )
            _check_compatible(path, current[i], new, "update")
            _check_writable(path, current[i], new, node)
            writes.append((i, new))
    for owner, key, new in static_writes:
        if isinstance(owner, (list, dict)):
            owner[key] = new
        else:
            setattr(owner, key, new)
    slot_at = {position: (owner, key, set_raw) for position, owner, key, set_raw in plan.slots}
    for i, new in writes:
        target = current[i]
        value = new._raw_value if isinstance(new, Variable) else new
        if isinstance(target, Variable):
            put_raw(target, value)
            if isinstance(new, Variable) and new is not target and new._metadata != target._metadata:
                target.set_metadata(**new._metadata)
        else:
            if not is_array(value):  # a numpy scalar (0-d array + 1) or a Python number:
                # keep the position an array, or it would silently turn into a static
                value = np.asarray(value, dtype=getattr(target, "dtype", None))
            if i in slot_at:
                owner, key, set_raw = slot_at[i]
                set_raw(owner, key, value)
            else:  # a raw array inside an immutable container (e.g. a tuple attribute)
                _write_into_pytree(node, plan.graphdef.paths[i], value)


def pop(node: Any, *filters: Any) -> Any:
    """Remove the state matching ``filters`` from the graph and return it.

    Returns one State per filter. A removed variable is removed at every path that
    reaches it; raw arrays matching a filter are removed too (from modules, ``List`` /
    ``Dict`` containers and plain lists and dicts).

    Example:
        >>> import jax
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
        >>> tree = {"w": nnx.Param(1.0), "step": jnp.array(3)}
        >>> sorted(nnx.pop(tree, nnx.Param, jax.Array)[1]), sorted(tree)
        (['step'], [])
    """
    if not filters:
        raise TypeError("pop: expected at least one filter, e.g. pop(model, nnx.Intermediate).")
    selected = state(node, *filters, graph=True)
    parts = selected if len(filters) > 1 else (selected,)
    variables: set[int] = set()
    arrays: set[tuple] = set()
    for part in parts:
        for path, leaf in zip(*_flat_of(part)):
            if isinstance(leaf, Variable):
                variables.add(id(leaf))
            else:
                arrays.add(path)
    edges = [(owner, key) for owner, key, child, path in _edges(node)
             if (id(child) in variables if isinstance(child, Variable) else path in arrays)]
    for owner, _ in edges:
        if isinstance(owner, tuple):
            raise TypeError(
                f"pop: cannot remove an item of a {type(owner).__name__} (tuples are "
                "immutable); nothing was removed. Hint: hold the value in a list, dict "
                "or module attribute, or select it with a filter that skips it."
            )
    for owner, key in reversed(edges):  # reversed keeps list indices valid
        if isinstance(owner, (list, dict)):
            del owner[key]
        else:
            delattr(owner, key)
    return selected


def clone(node: Any, variables: bool = True, *, arrays: bool = False,
          graph: bool | None = None) -> Any:
    """Copy a graph: new nodes, same structure and sharing.

    ``variables=True`` (default) gives the copy its own ``Variable`` objects (holding
    the same, immutable arrays); ``variables=False`` shares the variables with the
    original. ``arrays=True`` also copies the array buffers, so the copy survives the
    original's buffers being donated (``jit(donate_argnums=...)``).

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> twin = nnx.clone(model)
        >>> twin.kernel is model.kernel, bool((twin.kernel[...] == model.kernel[...]).all())
        (False, True)
        >>> nnx.clone(model, variables=False).kernel is model.kernel
        True
    """
    if arrays and not variables:
        raise ValueError(
            "clone: arrays=True copies the arrays held by variables, so it needs "
            "variables=True. Hint: drop variables=False, or arrays=True."
        )
    check_mode(node, graph, "nnx.clone")
    plan = plan_for(node)
    leaves = plan.leaves()
    if variables:
        leaves = [_copy_leaf(v, arrays) for v in leaves]
    return plan.graphdef.build_fresh(leaves)


def _copy_leaf(leaf: Any, arrays: bool) -> Any:
    if isinstance(leaf, Variable):
        copy = leaf.copy()
        if arrays and is_array(leaf.value):
            copy.set_value(jnp.array(leaf.value, copy=True))
        return copy
    return jnp.array(leaf, copy=True) if arrays and is_array(leaf) else leaf


def iter_graph(node: Any, /, *, graph: bool | None = None) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every node and leaf once, children before parents.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> [path for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
        [('bias',), ('kernel',)]
    """
    check_mode(node, graph, "nnx.iter_graph")
    seen: set[int] = set()

    def visit(path: tuple, value: Any) -> Iterator[tuple[tuple, Any]]:
        impl = pytree_impl(value)
        if impl is not None or isinstance(value, Variable):
            if id(value) in seen:
                return
            seen.add(id(value))
        if impl is not None:
            for key, child in impl.children(value):
                yield from visit(path + (key,), child)
        yield path, value

    yield from visit((), node)


def iter_children(node: Any, /, *, graph: bool | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(key, child)`` for the direct children of a node that are graph nodes.

    Example:
        >>> import nnxlib as nnx
        >>> seq = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> [key for key, _ in nnx.iter_children(seq)]
        ['layers']
    """
    check_mode(node, graph, "nnx.iter_children")
    for key, child in pytree_impl(node).children(node):
        if is_graph_node(child):
            yield key, child


def recursive_map(f: Callable[[tuple, Any], Any], node: Any, /, *,
                  graph: bool | None = None) -> Any:
    """Rebuild a graph bottom-up, replacing each node and leaf by ``f(path, value)``.

    ``f`` works on a copy of the graph's nodes holding the same variables, so ``node``
    itself is not changed. Shared objects are mapped once and stay shared.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> def to_zeros(path, x):
        ...     return nnx.Param(jnp.zeros_like(x[...])) if isinstance(x, nnx.Param) else x
        >>> float(nnx.recursive_map(to_zeros, model).kernel[...].sum())
        0.0
    """
    check_mode(node, graph, "nnx.recursive_map")
    if is_graph_node(node) or pytree_impl(node) is not None:
        node = clone(node, variables=False, graph=True)  # ``node`` itself is not changed
    memo: dict[int, Any] = {}

    def visit(path: tuple, value: Any) -> Any:
        key = id(value)
        if key in memo:
            return memo[key]
        impl = pytree_impl(value)
        if impl is not None and impl.pytree:
            children = impl.children(value)
            values = [visit(path + (k,), v) for k, v in children]
            return f(path, impl.build(type(value), tuple(k for k, _ in children), values))
        if impl is not None:
            memo[key] = value  # cycles see the original until the mapped node exists
            new_children = [(k, visit(path + (k,), v)) for k, v in impl.children(value)]
            impl.fill(value, new_children)
            _tracking.structure_changed(value)
            result = f(path, value)
        else:
            result = f(path, value)
        if impl is not None or isinstance(value, Variable):
            memo[key] = result
        return result

    return visit((), node)


def map_node(f: Callable[[tuple, Any], Any], node: Any, /, *,
             graph: bool | None = None, recreate_variables: bool = True) -> Any:
    """A new graph like ``node`` with ``f(path, variable)`` as each state leaf
    (``nnx.map``). ``f`` returns a Variable (e.g. ``v.replace(new_value)``) or a raw
    value, which is boxed in the same kind of Variable; ``node`` is not changed.

    With ``recreate_variables=False`` a raw value returned by ``f`` is kept raw: the new
    graph holds it where the variable was.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> zeros = nnx.map(lambda path, v: v.replace(jnp.zeros_like(v)), model)
        >>> float(zeros.kernel[...].sum()), float(model.kernel[...].sum()) != 0.0
        (0.0, True)
        >>> nnx.map(lambda path, v: 0, model, recreate_variables=False).kernel
        0
    """
    graphdef_, state_ = split(node, graph=graph)
    mapped = map_state(f, state_)
    new = merge(graphdef_, mapped)
    if not recreate_variables:
        for path, leaf in zip(*mapped._flat()):
            if not isinstance(leaf, Variable):
                new = _put_raw(new, path, leaf)
    return new


def set_metadata(node: Any, /, *, only: Any = Variable, **metadata: Any) -> None:
    """Set ``metadata`` on every Variable of ``node`` matching ``only``, in place.

    Example:
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> nnx.set_metadata(bn, only=nnx.BatchStat, frozen=True)
        >>> bn.mean.get_metadata()["frozen"], "frozen" in bn.scale.get_metadata()
        (True, False)
    """
    predicate = to_predicate(only)
    targets = [v for path, v in iter_graph(node, graph=True)
               if isinstance(v, Variable) and predicate(path, v)]
    for var in targets:
        var.set_metadata(**metadata)


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
    predicate = to_predicate(only)
    paths_of: dict[int, list] = {}
    seen: set[int] = set()

    def visit(path: tuple, value: Any) -> None:
        impl = pytree_impl(value)
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
    """Attribute/item path + call on a merged copy, returning ``(out, (graphdef, state))``."""

    def __init__(self, graphdef_state: tuple, steps: tuple = ()):
        self._graphdef_state = graphdef_state
        self._steps = steps  # ((is_item, name or key), ...)

    def __getattr__(self, name: str) -> "_CallProxy":
        return _CallProxy(self._graphdef_state, self._steps + ((False, name),))

    def __getitem__(self, key: Any) -> "_CallProxy":
        return _CallProxy(self._graphdef_state, self._steps + ((True, key),))

    def __call__(self, *args: Any, **kwargs: Any) -> tuple:
        graphdef, state_ = self._graphdef_state
        node = merge(graphdef, clone_state(state_))
        target = node
        for is_item, step in self._steps:
            target = target[step] if is_item else getattr(target, step)
        out = target(*args, **kwargs)
        return out, split(node, graph=True)


def clone_state(state_: Any) -> State:
    """A state whose variables are copies (so a functional call cannot mutate inputs)."""
    return jax.tree.map(lambda x: x, state_)


def call(graphdef_state: tuple) -> _CallProxy:
    """Call a method functionally: ``call((graphdef, state)).method(*args)``.

    Returns ``(output, (graphdef, new_state))``; the input state is not mutated. Items
    reach into containers: ``call((graphdef, state))["head"].method(x)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> graphdef, state = nnx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> y, (graphdef, state) = nnx.call((graphdef, state))(jnp.ones((4, 2)))
        >>> y.shape
        (4, 2)
    """
    return _CallProxy(graphdef_state)
