"""Containers: ``List`` and ``Dict``, and :func:`track`, the one container conversion.

``List`` and ``Dict`` are real ``list``/``dict`` subclasses that are also graph nodes:
their items are walked by ``split``, and every method that changes them (``append``,
``extend``, ``insert``, ``d[k] = v``, ``setdefault``, ``update``, ``del``, slices, ``+=``,
``sort``, …) records a structural change, so a cached split plan can never go stale.

**Container semantics.** A plain ``list`` or ``dict`` that enters a module graph, by
any route (an attribute assignment, an item stored into a ``List``/``Dict``, an item of
a tuple, a value nested in any of those), is *converted*: the graph holds a ``List`` /
``Dict`` with the same items, not the object that was assigned. Mutate the container
through the graph (``model.layers.append(...)``), not through a reference kept to the
original plain list, which is no longer part of the model. Tuples are immutable and stay
tuples (their list/dict items are converted); an ``nnx.State`` becomes a
:class:`TrackedState` (still a ``State``). :func:`track` is that conversion, and it
is the only one: every insertion path calls it.

Example:
    >>> import nnxlib as nnx
    >>> class Model(nnx.Module):
    ...     def __init__(self):
    ...         self.layers = []                      # becomes an nnx.List
    ...         self.layers.append(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    >>> model = Model()
    >>> type(model.layers).__name__, sorted(nnx.state(model)["layers"][0])
    ('List', ['bias', 'kernel'])
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Iterable

import jax

from nnxlib.graph import NodeImpl, register_graph_node_type
from nnxlib.graph._pytree import register_node_pytree
from nnxlib.state import State, key_order
from nnxlib.variables import _tracking

__all__ = ["List", "Dict", "TrackedState", "track"]


def track(value: Any) -> Any:
    """Convert plain lists and dicts (also inside tuples) to ``List``/``Dict``.

    Called on every value entering a module graph. Values of other types, and tuples
    without list/dict items, come back as they are.

    Example:
        >>> import nnxlib as nnx
        >>> converted = nnx.containers.track(([1], {"a": [2]}))
        >>> type(converted[0]).__name__, type(converted[1]["a"]).__name__
        ('List', 'List')
    """
    typ = type(value)
    if typ is list:
        return List(value)
    if typ is dict:
        return Dict(value)
    if typ is State:
        return TrackedState(value)
    if isinstance(value, tuple) and value:
        items = [track(item) for item in value]
        if any(new is not old for new, old in zip(items, value)):
            return typ(items) if typ is tuple else typ(*items)  # namedtuples too
    return value


def _check_trace(node: Any, what: str) -> None:
    if node._nnx_trace != _tracking.current_trace():
        _tracking.check_trace(node, what)


class _NoDefault:
    """The default of an optional argument the builtin method has no value for."""

    def __repr__(self) -> str:
        return "<no default>"


_NO_DEFAULT = _NoDefault()


def _mutator(base: type, name: str, convert: Any = None, params: tuple = ()) -> Any:
    """``base.name`` with a trace check, ``convert`` applied to the arguments, and the
    structural change recorded (even when the base method raises half-way).

    ``params`` names the arguments (``"value"`` or ``("index", -1)`` with a default), as
    flax.nnx's containers name them, so that they can be passed by keyword too; the
    builtin method gets them positionally. Without ``params`` the arguments go through
    as they are."""
    method = getattr(base, name)
    signature = None
    if params:
        signature = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
            + [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD)
               if isinstance(p, str) else
               inspect.Parameter(p[0], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=p[1]) for p in params])

    def mutate(self: Any, *args: Any, **kwargs: Any) -> Any:
        _check_trace(self, f"call {name}")
        if kwargs and signature is not None:
            bound = signature.bind(self, *args, **kwargs).arguments
            args = tuple(v for v in bound.values() if v is not _NO_DEFAULT)[1:]
            kwargs = {}
        if convert is not None:
            args, kwargs = convert(*args, **kwargs)
        try:
            result = method(self, *args, **kwargs)
        finally:
            _tracking.structure_changed(self)
        return self if name.startswith("__i") else result

    mutate.__name__ = name
    mutate.__qualname__ = f"{base.__name__}.{name}"
    mutate.__doc__ = (f"Like ``{base.__name__}.{name}``; recorded as a structural change"
                      f"{' (plain lists/dicts stored are converted)' if convert else ''}.")
    if signature is not None:
        mutate.__signature__ = signature  # type: ignore[attr-defined]
    return mutate


def _one(x: Any) -> tuple:
    return (track(x),), {}


def _many(items: Iterable) -> tuple:
    return ([track(x) for x in items],), {}


def _list_insert(index: Any, x: Any) -> tuple:
    return (index, track(x)), {}


def _list_setitem(index: Any, value: Any) -> tuple:
    if isinstance(index, slice):
        return (index, [track(x) for x in value]), {}
    return (index, track(value)), {}


def _dict_setitem(key: Any, value: Any) -> tuple:
    return (key, track(value)), {}


def _dict_update(*args: Any, **kwargs: Any) -> tuple:
    return ({k: track(v) for k, v in dict(*args, **kwargs).items()},), {}


class List(list):
    """A ``list`` whose items are part of the module graph.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> params = nnx.List([nnx.Param(jnp.ones(2)), nnx.Param(jnp.zeros(3))])
        >>> [x.shape for x in nnx.state(params).values()]
        [(2,), (3,)]
    """

    __slots__ = ("_nnx_stamp", "_nnx_trace", "_nnx_plan", "_nnx_joint", "__weakref__")

    def __new__(cls, *args: Any, **kwargs: Any) -> "List":
        obj = list.__new__(cls)
        _tracking.init_tracked(obj)
        return obj

    def __init__(self, items: Iterable = ()):
        list.__init__(self, [track(x) for x in items])

    append = _mutator(list, "append", _one, ("value",))
    extend = _mutator(list, "extend", _many, ("values",))
    __iadd__ = _mutator(list, "__iadd__", _many, ("values",))
    insert = _mutator(list, "insert", _list_insert, ("index", "value"))
    __setitem__ = _mutator(list, "__setitem__", _list_setitem, ("index", "value"))
    __delitem__ = _mutator(list, "__delitem__", None, ("index",))
    __imul__ = _mutator(list, "__imul__", None, ("value",))
    pop = _mutator(list, "pop", None, (("index", -1),))
    remove = _mutator(list, "remove", None, ("value",))
    clear = _mutator(list, "clear")
    sort = _mutator(list, "sort")
    reverse = _mutator(list, "reverse")

    def count(self, value: Any) -> int:
        """Like ``list.count`` (``value`` may be passed by keyword, as in flax.nnx).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.List([1, 2, 1]).count(value=1)
            2
        """
        return list.count(self, value)

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """Like ``list.index``; ``stop=None`` searches to the end (flax.nnx's default).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.List(["a", "b", "a"]).index("a", start=1, stop=None)
            2
        """
        return list.index(self, value, start, sys.maxsize if stop is None else stop)

    def __getitem__(self, index: Any) -> Any:
        result = list.__getitem__(self, index)
        return List(result) if isinstance(index, slice) else result

    def __reduce__(self) -> tuple:
        # Items go in after the empty List exists (pickle's/copy's "listitems"), so the
        # List is memoised first and a cycle back to it stays one object.
        return (type(self), (), None, iter(list.__iter__(self)))

    def __repr__(self) -> str:
        return f"List({list.__repr__(self)})"


class Dict(dict):
    """A ``dict`` whose values are part of the module graph; string keys read as attributes.

    Example:
        >>> import nnxlib as nnx
        >>> heads = nnx.Dict(a=nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
        >>> heads.a.kernel.shape, sorted(nnx.state(heads))
        ((2, 1), ['a'])
    """

    __slots__ = ("_nnx_stamp", "_nnx_trace", "_nnx_plan", "_nnx_joint", "__weakref__")

    def __new__(cls, /, *args: Any, **kwargs: Any) -> "Dict":  # `/`: Dict(cls=...) works
        obj = dict.__new__(cls)
        _tracking.init_tracked(obj)
        return obj

    def __init__(self, /, *args: Any, **kwargs: Any):
        dict.__init__(self, {k: track(v) for k, v in dict(*args, **kwargs).items()})

    __setitem__ = _mutator(dict, "__setitem__", _dict_setitem, ("key", "value"))
    update = _mutator(dict, "update", _dict_update)
    __ior__ = _mutator(dict, "__ior__", _dict_update)
    __delitem__ = _mutator(dict, "__delitem__", None, ("key",))
    pop = _mutator(dict, "pop", None, ("key", ("default", _NO_DEFAULT)))
    popitem = _mutator(dict, "popitem")
    clear = _mutator(dict, "clear")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Like ``dict.setdefault``; the stored (converted) value is returned, so
        ``d.setdefault(k, []).append(x)`` changes the graph."""
        if key in self:
            return dict.__getitem__(self, key)
        self[key] = default
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        """Like ``dict.get`` (``key`` and ``default`` may be passed by keyword, as in
        flax.nnx).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Dict(a=1).get(key="b", default=0)
            0
        """
        return dict.get(self, key, default)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"Dict has no key {name!r}; keys are {sorted(map(str, self))}."
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Dict.__slots__:
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __reduce__(self) -> tuple:
        # Items go in after the empty Dict exists ("dictitems"), so cycles survive copies.
        return (type(self), (), None, None, iter(dict.items(self)))

    def __repr__(self) -> str:
        return f"Dict({dict.__repr__(self)})"


def _fill_list(node: List, pairs: list) -> None:
    list.clear(node)
    list.extend(node, [v for _, v in pairs])


def _fill_dict(node: Dict, pairs: list) -> None:
    dict.clear(node)
    dict.update(node, pairs)


def _create_empty(cls: type, trace: Any) -> Any:
    obj = (list if issubclass(cls, list) else dict).__new__(cls)
    _tracking.init_fresh(obj, trace)
    return obj


def _list_children(node: List) -> list:
    return list(enumerate(node))


def _dict_children(node: Dict) -> list:
    return sorted(dict.items(node), key=lambda kv: key_order(kv[0]))


register_graph_node_type(List, NodeImpl(
    children=_list_children, pytree=False,
    create_empty=_create_empty, fill=_fill_list, set_raw=list.__setitem__))
register_graph_node_type(Dict, NodeImpl(
    children=_dict_children, pytree=False, create_empty=_create_empty, fill=_fill_dict,
    set_raw=dict.__setitem__, keyed=True))
register_node_pytree(List, _list_children, _create_empty, _fill_list,
                     jax.tree_util.SequenceKey)
register_node_pytree(Dict, _dict_children, _create_empty, _fill_dict, jax.tree_util.DictKey)


class TrackedState(State):
    """An ``nnx.State`` held by a module (what a ``State`` assigned to an attribute
    becomes): a graph node like ``Dict``, whose changes, also through nested views
    (``m.params["layer"]["w"] = ...``), are recorded as structural changes.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class SGD(nnx.Object):
        ...     def __init__(self, params):
        ...         self.params = nnx.State(params)
        >>> opt = SGD({"w": nnx.Param(jnp.ones(2))})
        >>> isinstance(opt.params, nnx.State), list(nnx.state(opt)["params"])
        (True, ['w'])
        >>> opt.params["b"] = nnx.Param(jnp.zeros(2))
        >>> sorted(nnx.state(opt)["params"])
        ['b', 'w']
    """

    __slots__ = ("_nnx_stamp", "_nnx_trace", "_nnx_plan", "_nnx_joint", "__weakref__")

    def __init__(self, mapping: Any = None, /):
        _tracking.init_tracked(self)
        State.__init__(self)
        nested = State(mapping or {})._nested()
        object.__setattr__(self, "_dict", {k: track(v) for k, v in nested.items()})

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_trace(self, "set an item")
        self._dict[key] = track(dict(value) if isinstance(value, State) else value)
        _tracking.structure_changed(self)

    def __delitem__(self, key: Any) -> None:
        _check_trace(self, "delete an item")
        del self._dict[key]
        _tracking.structure_changed(self)

    def __reduce__(self) -> tuple:
        return (TrackedState, (State._view(self._dict),))


def _state_children(node: TrackedState) -> list:
    return sorted(node._dict.items(), key=lambda kv: key_order(kv[0]))


def _state_create_empty(cls: type, trace: Any) -> TrackedState:
    obj = State.__new__(cls)
    object.__setattr__(obj, "_paths", None)
    object.__setattr__(obj, "_leaves", None)
    object.__setattr__(obj, "_dict", {})
    _tracking.init_fresh(obj, trace)
    return obj


def _state_fill(node: TrackedState, pairs: list) -> None:
    object.__setattr__(node, "_dict", dict(pairs))


def _state_set_raw(node: TrackedState, key: Any, value: Any) -> None:
    node._dict[key] = value


register_graph_node_type(TrackedState, NodeImpl(
    children=_state_children, pytree=False, create_empty=_state_create_empty,
    fill=_state_fill, set_raw=_state_set_raw, keyed=True))
register_node_pytree(TrackedState, _state_children, _state_create_empty, _state_fill,
                     jax.tree_util.DictKey)
