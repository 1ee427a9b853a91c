"""The node registry: which values the graph walker treats as nodes, and how.

A registered type has a :class:`NodeImpl` (subclasses inherit it): mutable graph nodes
(modules, ``List``/``Dict``) with identity, and immutable containers (tuples, plain lists
and dicts). A JAX pytree nnxlib has no implementation for (a registered dataclass, a
``flax.struct.dataclass``) is read through JAX (:func:`pytree_impl`). Arrays (and types
given to ``nnx.register_data_type``) are state leaves (:func:`is_array`).

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.graph._node_types import is_graph_node, node_impl
    >>> is_graph_node(nnx.List([])), node_impl(tuple).pytree
    (True, True)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from nnxlib.state import State, key_order
from nnxlib.variables import Variable


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
    _IS_OBJECT.clear()
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
    """True for mutable graph nodes and variables (the objects with identity).

    Called for every pytree node of a transform's arguments on each call, so the
    answer is cached per type.

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.graph import is_node_or_variable
        >>> is_node_or_variable(nnx.Param(1.0)), is_node_or_variable((1, 2))
        (True, False)
    """
    typ = type(x)
    try:
        return _IS_OBJECT[typ]
    except KeyError:
        answer = _IS_OBJECT[typ] = issubclass(typ, Variable) or is_graph_node(x)
        return answer


_IS_OBJECT: dict[type, bool] = {}


def _sorted_items(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: key_order(kv[0]))


def _tuple_children(t: tuple) -> list:
    fields = getattr(type(t), "_fields", None)
    if fields is None:
        return list(enumerate(t))
    # a namedtuple: its field names are the keys (as in JAX's key paths), in order
    return sorted(zip(fields, t), key=lambda kv: key_order(kv[0]))


def _tuple_build(typ: type, keys: tuple, values: list) -> tuple:
    if typ is tuple:
        return tuple(values)
    if getattr(typ, "_fields", None) is not None:
        return typ(**dict(zip(keys, values)))
    return typ(*values)


register_graph_node_type(tuple, NodeImpl(
    children=_tuple_children, pytree=True, build=_tuple_build))
register_graph_node_type(list, NodeImpl(
    children=lambda t: list(enumerate(t)), pytree=True,
    build=lambda typ, keys, values: list(values)))
register_graph_node_type(dict, NodeImpl(
    children=_sorted_items, pytree=True,
    build=lambda typ, keys, values: dict(zip(keys, values))))
# A State is walked like the nested dict it stands for (clone copies its variables).
register_graph_node_type(State, NodeImpl(
    children=lambda s: _sorted_items(s._nested()), pytree=True,
    build=lambda typ, keys, values: typ(dict(zip(keys, values)))))


# ------------------------------------------------------------ other JAX pytrees
class JaxPytreeType:
    """The "type" of a :class:`PytreeDef` for a pytree JAX knows and nnxlib does not
    (``jax.tree_util.register_dataclass``, ``flax.struct.dataclass``, ...): its JAX tree
    definition one level deep and the children's keys in JAX's order. Hashable and
    compared by value, like the rest of a ``GraphDef``.

    Example:
        >>> import dataclasses, jax
        >>> import nnxlib as nnx
        >>> @jax.tree_util.register_dataclass
        ... @dataclasses.dataclass
        ... class Pair:
        ...     b: object
        ...     a: object
        >>> graphdef, state = nnx.split(Pair(nnx.Param(1.0), nnx.Param(2.0)))
        >>> list(state), type(nnx.merge(graphdef, state)).__name__
        (['a', 'b'], 'Pair')
    """

    __slots__ = ("treedef", "keys", "_hash")

    def __init__(self, treedef: Any, keys: tuple):
        self.treedef, self.keys = treedef, keys
        self._hash = hash((treedef, keys))

    @property
    def __name__(self) -> str:  # as a class's, for messages and reprs
        return f"pytree {self.treedef}"

    def build(self, keys: tuple, values: list) -> Any:
        by_key = dict(zip(keys, values))
        return self.treedef.unflatten([by_key[k] for k in self.keys])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, JaxPytreeType) and self._hash == other._hash
                and self.treedef == other.treedef and self.keys == other.keys)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return self.__name__


_JAX_NODE_TYPE: dict[type, bool] = {}  # type -> is a JAX pytree node (not a leaf)


def key_of_entry(entry: Any) -> Any:
    """The graph key of one JAX key-path entry (``GetAttrKey('w')`` -> ``'w'``).

    Example:
        >>> import jax
        >>> key_of_entry(jax.tree_util.GetAttrKey("w")), key_of_entry(jax.tree_util.SequenceKey(2))
        ('w', 2)
    """
    for name in ("key", "name", "idx"):  # DictKey/FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(entry, name):
            return getattr(entry, name)
    return entry


def jax_children(value: Any) -> tuple[list, JaxPytreeType] | None:
    """``(sorted (key, child) pairs, type)`` of a JAX pytree node nnxlib has no
    :class:`NodeImpl` for, or None for a JAX leaf (and for ``None``)."""
    typ = type(value)
    known = _JAX_NODE_TYPE.get(typ)
    if known is False or value is None or isinstance(value, Variable):
        return None
    keyed, treedef = jax.tree_util.tree_flatten_with_path(
        value, is_leaf=lambda x: x is not value)
    if known is None:
        known = _JAX_NODE_TYPE[typ] = not (len(keyed) == 1 and keyed[0][1] is value
                                           and not keyed[0][0])
        if not known:
            return None
    keys = tuple(key_of_entry(path[0]) for path, _ in keyed)
    pairs = sorted(zip(keys, (child for _, child in keyed)), key=lambda kv: key_order(kv[0]))
    return pairs, JaxPytreeType(treedef, keys)


def pytree_impl(value: Any) -> NodeImpl | None:
    """The :class:`NodeImpl` for ``value``: its type's, or for a JAX pytree nnxlib has
    no implementation for, an immutable one read from JAX (keys from its key paths).

    Example:
        >>> import collections
        >>> Point = collections.namedtuple("Point", ["y", "x"])
        >>> pytree_impl(Point(1, 2)).children(Point(1, 2))
        [('x', 2), ('y', 1)]
        >>> print(pytree_impl(3))
        None
    """
    impl = node_impl(type(value))
    if impl is not None:
        return impl
    found = jax_children(value)
    if found is None:
        return None
    pairs, spec = found
    return NodeImpl(children=lambda _: pairs, pytree=True,
                    build=lambda typ, keys, values: spec.build(keys, values))


def _pytree_builder(typ: Any) -> Callable[[tuple, list], Any]:
    """``build(keys, values)`` for the type of a :class:`PytreeDef`."""
    if isinstance(typ, JaxPytreeType):
        return typ.build
    make = node_impl(typ).build
    return lambda keys, values: make(typ, keys, values)


# Leaf types that are state when held by a module attribute; nnx.register_data_type
# (nnxlib.pytreelib) appends user types.
DATA_TYPES: tuple = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


def is_array(x: Any) -> bool:
    """True for values that are state when held directly by a module attribute."""
    return isinstance(x, DATA_TYPES)
