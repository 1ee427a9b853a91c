"""Containers: ``List``, ``Dict`` and ``Sequential``.

``List`` and ``Dict`` are real ``list``/``dict`` subclasses that are also graph nodes:
their items are walked by ``split`` and every in-place change (``append``, ``del``,
``d[k] = v``, …) is recorded as a structural change, so cached split plans never go
stale. Plain lists and dicts assigned to module attributes are converted to them.

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

from typing import Any, Iterable

import jax

from nnxlib import _tracking
from nnxlib._pytree import register_node_pytree
from nnxlib.graph import NodeImpl, register_graph_node_type
from nnxlib.module import Module, _init_fresh, _init_internal, _track_containers
from nnxlib.state import key_order

__all__ = ["List", "Dict", "Sequential"]


def _mutation(name: str, base: type):
    """Wrap ``base.name`` so that it checks the trace and records a structural change."""
    method = getattr(base, name)

    def mutate(self, *args: Any, **kwargs: Any) -> Any:
        if self._nnx_trace != _tracking.current_trace():
            _tracking.check_trace(self, f"call {name}")
        result = method(self, *args, **kwargs)
        object.__setattr__(self, "_nnx_stamp", _tracking.bump())
        return self if name.startswith("__i") else result

    mutate.__name__ = name
    mutate.__doc__ = f"Like ``{base.__name__}.{name}``; recorded as a structural change."
    return mutate


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
        _init_internal(obj)
        return obj

    def __init__(self, items: Iterable = ()):
        list.__init__(self, (_track_containers(x) for x in items))

    for _name in ("append", "extend", "insert", "pop", "remove", "clear", "sort",
                  "reverse", "__setitem__", "__delitem__", "__iadd__", "__imul__"):
        locals()[_name] = _mutation(_name, list)
    del _name

    def append(self, item: Any) -> None:  # type: ignore[no-redef]
        """Append ``item`` (plain lists/dicts inside are tracked too)."""
        _LIST_APPEND(self, _track_containers(item))

    def __getitem__(self, index: Any) -> Any:
        result = list.__getitem__(self, index)
        return List(result) if isinstance(index, slice) else result

    def __reduce__(self) -> tuple:
        # Items go in after the empty List exists (pickle's/copy's "listitems"), so the
        # List is memoised first and a cycle back to it stays one object.
        return (type(self), (), None, iter(list.__iter__(self)))

    def __repr__(self) -> str:
        return f"List({list.__repr__(self)})"


_LIST_APPEND = _mutation("append", list)


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
        _init_internal(obj)
        return obj

    def __init__(self, /, *args: Any, **kwargs: Any):
        dict.__init__(self, {k: _track_containers(v) for k, v in dict(*args, **kwargs).items()})

    for _name in ("__setitem__", "__delitem__", "pop", "popitem", "clear", "update",
                  "setdefault", "__ior__"):
        locals()[_name] = _mutation(_name, dict)
    del _name

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
            self[name] = _track_containers(value)

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
    _init_fresh(obj, trace)
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


class Sequential(Module):
    """Apply layers (any callables) one after another.

    The first layer receives all arguments; a tuple output is unpacked into the next
    layer's arguments.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)), jax.nn.relu,
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> model(jnp.ones((3, 2))).shape
        (3, 1)
    """

    def __init__(self, *fns: Any):
        self.layers = List(fns)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.layers:
            raise ValueError("Sequential has no layers. Hint: Sequential(layer1, layer2).")
        out = self.layers[0](*args, **kwargs)
        for layer in self.layers[1:]:
            out = layer(*out) if isinstance(out, tuple) else layer(out)
        return out
