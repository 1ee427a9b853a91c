"""``Object`` and ``Module``: plain Python objects that form a graph of state.

A module is written like a PyTorch module: ``__init__`` creates parameters and
submodules as attributes, ``__call__`` computes. The attribute rules:

* ``Variable`` values (``Param``, ``BatchStat``, …) are state;
* submodules, ``List``/``Dict`` containers and tuples are graph nodes, walked by
  ``split``; plain ``list``/``dict`` values are converted to ``List``/``Dict`` on
  assignment so that in-place changes to them are tracked;
* arrays (``jax.Array``, ``np.ndarray``) are state too, without a variable box;
* anything else is static and becomes part of the ``GraphDef``.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class MLP(nnx.Module):
    ...     def __init__(self, sizes, rngs):
    ...         self.layers = [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])]
    ...     def __call__(self, x):
    ...         for layer in self.layers:
    ...             x = jnp.tanh(layer(x))
    ...         return x
    >>> model = MLP([2, 8, 1], nnx.Rngs(0))
    >>> model(jnp.ones((3, 2))).shape
    (3, 1)
    >>> sorted(nnx.state(model)["layers"][0])
    ['bias', 'kernel']
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
import operator
import types
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from nnxlib import _markers
from nnxlib import graph as graphlib
from nnxlib.containers import List, track
from nnxlib.display import render_object
from nnxlib.filters import to_predicate
from nnxlib.graph import NodeImpl, is_array, register_graph_node_type
from nnxlib.graph._pytree import PLAIN_STATIC, holds_state, is_state_like, register_node_pytree
from nnxlib.state import key_order
from nnxlib.variables import Perturbation, Variable, _tracking, variable_type_from_name
from nnxlib.variables._arrays import same_aval

__all__ = ["Object", "Pytree", "Module", "Sequential", "view", "iter_module_children", "iter_modules",
           "iter_children", "first_from", "data", "static"]

_INTERNAL = ("_nnx_stamp", "_nnx_trace", "_nnx_plan", "_nnx_joint")


class Object:
    """Base class of every mutable graph node with attributes (modules, ``Rngs``).

    Tracks structural changes (for split caching) and guards against mutation from a
    foreign trace. Subclasses need not call ``super().__init__()``. Subclasses are JAX
    pytrees too (``class Foo(nnx.Object, pytree=False)`` opts out). ``nnx.Pytree`` is
    the same class under flax.nnx 0.12's name.

    Example:
        >>> import nnxlib as nnx
        >>> class Counter(nnx.Object):
        ...     def __init__(self):
        ...         self.count = nnx.Variable(0)
        >>> sorted(nnx.state(Counter()))
        ['count']
    """

    __slots__ = ("__dict__", "__weakref__", "_nnx_stamp", "_nnx_trace", "_nnx_plan",
                 "_nnx_joint")
    # Attributes marked ``nnx.Data[...]``/``nnx.Static[...]`` or ``= nnx.data()`` in the
    # class body: name -> "data"/"static" (see nnxlib._markers).
    _nnx_markers: dict = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> "Object":
        obj = object.__new__(cls)
        _tracking.init_tracked(obj)
        return obj

    def __init_subclass__(cls, *, pytree: bool = True, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls._nnx_markers = _markers.class_markers(cls)
        cls._nnx_pytree = pytree
        # JAX looks pytree types up exactly, so every subclass registers itself, unless
        # it asks not to be a pytree (``class Foo(nnx.Pytree, pytree=False)``, as in
        # flax): it is then a single leaf for JAX, still a graph node for nnxlib.
        if pytree:
            register_node_pytree(cls, _object_children, _object_create_empty, _object_fill)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INTERNAL:
            object.__setattr__(self, name, value)
            return
        if self._nnx_trace != _tracking.current_trace():
            _tracking.check_trace(self, f"set attribute {name!r}")
        markers = type(self)._nnx_markers
        marker = markers.get(name) if markers else None
        if marker == _markers.DATA:
            value = data(value)
        elif marker is not None:
            _check_static(value, f"{type(self).__name__}.{name} (marked static)",
                          f"Found unexpected data on value of type {type(value)} in static "
                          f"attribute '{name}'")
        if type(value) not in PLAIN_STATIC:  # those need no conversion and no check
            value = track(value)
            _check_attribute_value(self, name, value)
        d = self.__dict__
        old = d.get(name, _MISSING)
        d[name] = value
        # Re-assigning the same object (``self.count += 1`` on a Variable) or a new array
        # of the same shape and dtype in place of an array changes no structure.
        if old is _MISSING or (value is not old and not (
                is_array(value) and is_array(old) and same_aval(value, old))):
            _tracking.structure_changed(self)

    def __delattr__(self, name: str) -> None:
        if name not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        if self._nnx_trace != _tracking.current_trace():
            _tracking.check_trace(self, f"delete attribute {name!r}")
        del self.__dict__[name]
        _tracking.structure_changed(self)

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        _tracking.init_tracked(self)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return _object_repr(self, set(), 0)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        return render_object(self, dict(_object_children(self)), path, subtree_renderer)


_MISSING = object()

#: The attribute ``nnx.capture`` gives every module of the graph while it runs: a tuple
#: of one variable per captured type, each holding a dict ``{name: value}``. Being
#: state, it travels through split/merge and transforms like any variable.
CAPTURES = "__captures__"


def _capture_store(captures: tuple, variable_type: type) -> Variable | None:
    """The capture variable of exactly ``variable_type``, if the capture has one."""
    for store in captures:
        if type(store) is variable_type:
            return store
    return None


def _check_attribute_value(owner: Any, name: str, value: Any) -> None:
    """Reject values that would hide state from the graph walker."""
    if isinstance(value, (set, frozenset)):
        hidden = [v for v in value if is_state_like(v)]
    elif (graphlib.node_impl(type(value)) is None and not isinstance(value, Variable)
          and not is_array(value)):
        leaves = jax.tree_util.tree_leaves(value, is_leaf=graphlib.is_node_or_variable)
        single_leaf = len(leaves) == 1 and leaves[0] is value
        if not single_leaf and _is_frozen_dataclass(value):
            return  # an immutable JAX pytree (flax.struct.dataclass, ...): walked as such
        hidden = (_hidden_in_attributes(value) if single_leaf
                  else [v for v in leaves if is_state_like(v)])
    else:
        return
    if hidden:
        raise ValueError(
            f"Cannot assign {type(owner).__name__}.{name}: the {type(value).__name__} "
            f"value contains {type(hidden[0]).__name__} objects, which nnxlib cannot "
            "track inside this container type (a mutable object, or not a JAX pytree: "
            "changes to it would go unseen). Hint: hold them in a list, dict, tuple, "
            "nnx.List or nnx.Dict, a frozen dataclass registered as a JAX pytree "
            "(flax.struct.dataclass), or as separate attributes."
        )


def _is_frozen_dataclass(value: Any) -> bool:
    params = getattr(type(value), "__dataclass_params__", None)
    return params is not None and params.frozen


def _hidden_in_attributes(value: Any) -> list:
    """Variables or graph nodes held directly in a plain object's ``__dict__``."""
    if isinstance(value, (type, types.ModuleType, types.FunctionType)):
        return []
    attrs = getattr(value, "__dict__", None)
    if not isinstance(attrs, dict):
        return []
    return [v for v in attrs.values() if graphlib.is_node_or_variable(v)]


def _object_children(obj: Object) -> list:
    d = obj.__dict__
    if all(type(k) is str for k in d):  # attribute names: key_order is string order
        return sorted(d.items(), key=_FIRST)
    return sorted(d.items(), key=lambda kv: key_order(kv[0]))


_FIRST = operator.itemgetter(0)


def _object_create_empty(cls: type, trace: Any) -> Object:
    obj = object.__new__(cls)
    _SET_STAMP(obj, _tracking.EPOCH[0])  # brand new: in no plan yet, no bump needed
    _SET_TRACE(obj, trace)
    _SET_PLAN(obj, None)
    _SET_JOINT(obj, None)
    return obj


_SET_STAMP = Object._nnx_stamp.__set__  # type: ignore[attr-defined]
_SET_TRACE = Object._nnx_trace.__set__  # type: ignore[attr-defined]
_SET_PLAN = Object._nnx_plan.__set__  # type: ignore[attr-defined]
_SET_JOINT = Object._nnx_joint.__set__  # type: ignore[attr-defined]


def _object_fill(obj: Object, pairs: list) -> None:
    d = obj.__dict__
    if d:
        d.clear()
    d.update(pairs)


def _object_set_raw(obj: Object, key: str, value: Any) -> None:
    obj.__dict__[key] = value


Pytree = Object  # flax.nnx 0.12's name for the base class

register_graph_node_type(Object, NodeImpl(
    children=_object_children, pytree=False, create_empty=_object_create_empty,
    fill=_object_fill, set_raw=_object_set_raw, keyed=True))
register_node_pytree(Object, _object_children, _object_create_empty, _object_fill)


def _object_repr(obj: Any, seen: set, depth: int) -> str:
    if id(obj) in seen:
        return f"<shared {type(obj).__name__}, shown above>"
    seen.add(id(obj))
    pad = "  " * (depth + 1)
    lines = [f"{pad}{key}={_value_repr(value, seen, depth + 1)},"
             for key, value in _object_children(obj)]
    if not lines:
        return f"{type(obj).__name__}()"
    summary = _size_summary(obj)
    header = f"{type(obj).__name__}(" + (f"  # {summary}" if summary else "")
    return header + "\n" + "\n".join(lines) + "\n" + "  " * depth + ")"


def _size_summary(obj: Any) -> str:
    """``Param: 550 (2.2 KB), BatchStat: 20 (80 B), Total: 570 (2.3 KB)``: the variables
    reachable from ``obj`` (shared ones once), by kind, with element counts and bytes
    (and their total when there are several kinds, as flax.nnx prints it)."""
    counts: dict[str, list[int]] = {}
    for _, value in graphlib.iter_graph(obj, graph=True):
        if not isinstance(value, Variable):
            continue
        raw = value._raw_value
        dtype = getattr(raw, "dtype", None)
        if dtype is None or not hasattr(raw, "shape"):
            continue  # escaped or non-array values have no size to report
        size = math.prod(raw.shape)
        entry = counts.setdefault(type(value).__name__, [0, 0])
        entry[0] += size
        entry[1] += size * getattr(dtype, "itemsize", 0)
    if not counts:
        return ""
    parts = [f"{name}: {n:,} ({_fmt_bytes(b)})" for name, (n, b) in counts.items()]
    if len(counts) > 1:
        total = sum(n for n, _ in counts.values())
        parts.append(f"Total: {total:,} ({_fmt_bytes(sum(b for _, b in counts.values()))})")
    return ", ".join(parts)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}")}


def _value_repr(value: Any, seen: set, depth: int) -> str:
    """Attribute values: containers holding graph objects are laid out one item a line,
    sharing one ``seen`` set so shared objects and cycles are shown once."""
    if isinstance(value, Object):
        return _object_repr(value, seen, depth)
    base = next((b for b in _BRACKETS if isinstance(value, b)), None)
    if base is None or not _holds_graph_objects(value):
        return repr(value).replace("\n", "\n" + "  " * depth)
    if graphlib.is_graph_node(value):  # List / Dict have identity
        if id(value) in seen:
            return f"<shared {type(value).__name__}, shown above>"
        seen.add(id(value))
    opening, closing = _BRACKETS[base]
    if type(value) not in _BRACKETS:  # List([...]), Dict({...}), MyTuple((...))
        opening, closing = f"{type(value).__name__}({opening}", f"{closing})"
    pad = "  " * (depth + 1)
    items = value.items() if base is dict else ((None, v) for v in value)
    lines = [f"{pad}{'' if key is None else repr(key) + ': '}"
             f"{_value_repr(item, seen, depth + 1)}," for key, item in items]
    return opening + "\n" + "\n".join(lines) + "\n" + "  " * depth + closing


def _holds_graph_objects(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, (Object, Variable)) or
               (isinstance(v, (list, tuple, dict)) and _holds_graph_objects(v))
               for v in items)


class Module(Object):
    """Base class for layers and models.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Scale(nnx.Module):
        ...     def __init__(self):
        ...         self.s = nnx.Param(jnp.array(2.0))
        ...     def __call__(self, x):
        ...         return x * self.s
        >>> float(Scale()(3.0))
        6.0
    """

    def sow(self, variable_type: type[Variable] | str, name: str, value: Any,
            reduce_fn: Callable[[Any, Any], Any] = lambda xs, x: (*xs, x),
            init_fn: Callable[[], Any] = tuple) -> bool:
        """Record ``value`` under ``name`` (in a tuple by default).

        Each call appends to the tuple (or folds with ``reduce_fn`` from
        ``init_fn()``). Inside :func:`nnxlib.capture` the value goes to the capture
        (of this ``variable_type``, exactly; other types are dropped); outside, to a
        variable attribute ``name`` of that type, taken out with ``nnx.pop``. Returns
        whether the value was recorded.

        Example:
            >>> import nnxlib as nnx
            >>> m = nnx.Module()
            >>> m.sow(nnx.Intermediate, "h", 1)
            True
            >>> m.sow(nnx.Intermediate, "h", 2)
            True
            >>> m.h.value
            (1, 2)
        """
        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        captures = self.__dict__.get(CAPTURES)
        if captures is not None:
            store = _capture_store(captures, variable_type)
            if store is None:
                return False
            values = store.get_value()
            store.set_value({**values, name: reduce_fn(
                values[name] if name in values else init_fn(), value)})
            return True
        current = self.__dict__.get(name, _MISSING)
        if current is _MISSING:
            setattr(self, name, variable_type(reduce_fn(init_fn(), value)))
        elif type(current) is variable_type:
            current.value = reduce_fn(current.value, value)
        else:
            expected = (f"Expected '{name}' to be of type '{variable_type.__name__}', got "
                        f"'{type(current).__name__}'" if isinstance(current, Variable)
                        else f"Expected '{name}' to be a Variable, got "
                        f"{type(current).__name__}")
            raise ValueError(
                f"sow: attribute {type(self).__name__}.{name} holds a "
                f"{type(current).__name__}, expected a {variable_type.__name__} "
                f"({expected}). Hint: sow under another name or pop the old value first."
            )
        return True

    def perturb(self, name: str, value: Any,
                variable_type: type[Variable] | str = Perturbation) -> Any:
        """Add a zero-valued perturbation to ``value`` and return the sum.

        The gradient with respect to the perturbation is the gradient with respect to
        this intermediate value. Inside :func:`nnxlib.capture` the perturbation lives
        in the capture (``init=`` gives its value); outside, in a variable attribute
        ``name``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> m = nnx.Module()
            >>> float(m.perturb("h", jnp.array(3.0))), float(m.h[...])
            (3.0, 0.0)
        """
        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        captures = self.__dict__.get(CAPTURES)
        if captures is not None:
            store = _capture_store(captures, variable_type)
            if store is None:
                return value
            values = store.get_value()
            if name not in values:
                values = {**values, name: jax.tree.map(jnp.zeros_like, value)}
                store.set_value(values)
            return values[name] + value
        current = self.__dict__.get(name, _MISSING)
        if current is _MISSING:
            current = variable_type(jax.tree.map(jnp.zeros_like, value))
            setattr(self, name, current)
        elif not isinstance(current, variable_type):
            raise ValueError(
                f"perturb: attribute {type(self).__name__}.{name} holds a "
                f"{type(current).__name__}, expected a {variable_type.__name__} (Expected "
                f"'{name}' to be of type '{variable_type.__name__}', got "
                f"'{type(current).__name__}'). Hint: perturb under another name."
            )
        return value + current[...]

    def iter_modules(self) -> Iterator[tuple[tuple, "Module"]]:
        """Yield ``(path, module)`` for this module and every submodule, once each.

        Example:
            >>> import nnxlib as nnx
            >>> seq = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> [path for path, _ in seq.iter_modules()]
            [('layers', 0), ()]
        """
        return iter_modules(self, graph=True)

    def iter_children(self) -> Iterator[tuple[Any, "Module"]]:
        """Yield ``(name, submodule)`` for direct child modules.

        Example:
            >>> import nnxlib as nnx
            >>> seq = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> [name for name, _ in seq.iter_children()]
            []
        """
        return ((k, v) for k, v in graphlib.iter_children(self) if isinstance(v, Module))

    def set_attributes(self, *filters: Any, raise_if_not_found: bool = True,
                       graph: bool | None = None, **attributes: Any) -> None:
        """Set ``attributes`` on every submodule (matching ``filters``) that has them.

        Example:
            >>> import nnxlib as nnx
            >>> model = nnx.Sequential(nnx.Dropout(0.5), nnx.Dropout(0.1))
            >>> model.set_attributes(deterministic=True)
            >>> [layer.deterministic for layer in model.layers]
            [True, True]
        """
        graphlib.check_mode(self, graph, "Module.set_attributes")
        _set_attributes(self, filters, raise_if_not_found, attributes, "set_attributes")

    def train(self, **attributes: Any) -> None:
        """Switch to training mode (``deterministic=False``, ``use_running_average=False``).

        Example:
            >>> import nnxlib as nnx
            >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
            >>> bn.eval(); bn.use_running_average
            True
            >>> bn.train(); bn.use_running_average
            False
        """
        self.set_attributes(deterministic=False, use_running_average=False,
                            **attributes, raise_if_not_found=False)

    def eval(self, **attributes: Any) -> None:
        """Switch to evaluation mode (``deterministic=True``, ``use_running_average=True``).

        Example:
            >>> import nnxlib as nnx
            >>> drop = nnx.Dropout(0.5)
            >>> drop.eval(); drop.deterministic
            True
        """
        self.set_attributes(deterministic=True, use_running_average=True,
                            **attributes, raise_if_not_found=False)


def iter_modules(module: Any, /, *, graph: bool | None = None
                 ) -> Iterator[tuple[tuple, Module]]:
    """Yield ``(path, module)`` for every module in the graph, children first.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Linear(1, 2, rngs=nnx.Rngs(0)))
        >>> [type(m).__name__ for _, m in nnx.iter_modules(model)]
        ['Linear', 'Sequential']
    """
    for path, value in graphlib.iter_graph(module, graph=graph):
        if isinstance(value, Module):
            yield path, value


def _set_attributes(root: Any, filters: tuple, raise_if_not_found: bool,
                    attributes: dict, where: str) -> None:
    """Set ``attributes`` on the modules under ``root`` (matching ``filters``) that have
    them; an attribute found nowhere is an error raised before anything is set."""
    writes, found = [], set()
    for module in _selected_modules(root, filters):
        for name, value in attributes.items():
            if hasattr(module, name) and not isinstance(getattr(module, name), Object):
                writes.append((module, name, value))
                found.add(name)
    missing = sorted(set(attributes) - found)
    if missing and raise_if_not_found:
        raise ValueError(
            f"{where}: no submodule of {type(root).__name__} has attribute(s) {missing}"
            f"{' among those matching the filters' if filters else ''} (Could not find at "
            f"least one instance of the following attributes: {missing}); nothing was "
            "set. Hint: check the names, or pass raise_if_not_found=False to ignore them."
        )
    for module, name, value in writes:
        setattr(module, name, value)


def _selected_modules(root: Any, filters: tuple) -> list:
    """The modules under ``root`` (children first) matching any of ``filters``."""
    predicates = [to_predicate(f) for f in filters]
    return [module for path, module in iter_modules(root, graph=True)
            if not predicates or any(p(path, module) for p in predicates)]


def view(node: Any, /, *, only: Any = ..., raise_if_not_found: bool = True,
         graph: bool | None = None, **kwargs: Any) -> Any:
    """A view of ``node`` with its modes changed, e.g. an evaluation view.

    The view has its own modules (``node`` itself is not changed) holding the *same*
    ``Variable`` objects as ``node``, so training one trains the other. Each module
    selected by ``only`` that defines ``set_view`` gets the keywords its signature
    takes (all of them with ``**kwargs``); on the other modules, keywords naming an
    attribute set that attribute. A keyword used nowhere raises ``ValueError`` unless
    ``raise_if_not_found=False``.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.5), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> evaluation = nnx.view(model, deterministic=True, use_running_average=True)
        >>> evaluation.layers[0].deterministic, model.layers[0].deterministic
        (True, False)
        >>> evaluation.layers[1].scale is model.layers[1].scale
        True
        >>> nnx.view(model, only=nnx.Dropout, deterministic=True).layers[1].use_running_average
        False
    """
    copy = graphlib.clone(node, variables=False, graph=graph)
    filters = () if only is ... else (only,)
    unused = set(kwargs)
    writes = []
    for module in _selected_modules(copy, filters):
        set_view = getattr(module, "set_view", None)
        if callable(set_view):
            taken = _keywords_taken(set_view, kwargs)
            writes.append(functools.partial(
                set_view, **{k: v for k, v in kwargs.items() if k in taken}))
            unused -= taken
            continue
        for name, value in kwargs.items():
            if hasattr(module, name) and not isinstance(getattr(module, name), Object):
                writes.append(functools.partial(setattr, module, name, value))
                unused.discard(name)
    if unused and raise_if_not_found:
        names = sorted(unused)
        raise ValueError(
            f"view: no module of {type(node).__name__} takes {names} (Unused keys found "
            f"in nnx.view: {names}); {type(node).__name__} is unchanged. Hint: check the "
            "names against nnx.view_info(node), or pass raise_if_not_found=False to "
            "ignore them."
        )
    for write in writes:
        write()
    return copy


def _keywords_taken(method: Callable, kwargs: dict) -> set:
    """The names of ``kwargs`` that ``method`` accepts as keywords (all with ``**``)."""
    parameters = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return set(kwargs)
    named = {p.name for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named & set(kwargs)


def iter_module_children(node: Any, /, *, graph: bool | None = None
                         ) -> Iterator[tuple[Any, "Module"]]:
    """Yield ``(key, submodule)`` for the direct children of ``node`` that are modules.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> [(k, type(m).__name__) for k, m in nnx.iter_module_children(model.layers)]
        [(0, 'Linear')]
        >>> list(nnx.iter_module_children(nnx.Linear(1, 1, rngs=nnx.Rngs(0))))
        []
    """
    for key, child in graphlib.iter_children(node, graph=graph):
        if isinstance(child, Module):
            yield key, child


def iter_children(node: Any, /, *, graph: bool | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(key, child)`` for the direct graph-node children of ``node``.

    Example:
        >>> import nnxlib as nnx
        >>> class Pair(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        >>> [k for k, _ in nnx.iter_children(Pair())]
        ['a']
    """
    return graphlib.iter_children(node, graph=graph)


def first_from(*values: Any, error_msg: str) -> Any:
    """Return the first argument that is not None, else raise ``ValueError(error_msg)``.

    Example:
        >>> first_from(None, 3, 4, error_msg="none given")
        3
    """
    for value in values:
        if value is not None:
            return value
    raise ValueError(error_msg)


_SCALARS = (bool, int, float, complex, np.generic)


def data(value: Any = _MISSING, /, **field_kwargs: Any) -> Any:
    """Mark an attribute value as state (flax.nnx 0.12's ``nnx.data``).

    Called without a value, it is a dataclass field specifier (keywords as
    ``dataclasses.field``) that marks the attribute: values assigned to it later are
    passed through ``nnx.data`` (see :func:`nnxlib.dataclass`).

    Arrays, variables, modules and containers of them already are state in nnxlib, so
    they come back unchanged. A Python or NumPy scalar becomes a JAX array, so that it
    is a state leaf too: it appears in ``nnx.state``, is traced by transforms and
    updated in place, as in flax (which, like nnxlib, keeps scalars *inside*
    containers static).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> class Counter(nnx.Module):
        ...     def __init__(self):
        ...         self.steps = nnx.data(0)
        ...         self.name = "counter"            # static
        >>> counter = Counter()
        >>> jax.tree.leaves(nnx.state(counter))
        [Array(0, dtype=int32, weak_type=True)]
    """
    if value is _MISSING:
        return _marker_field(_markers.DATA, field_kwargs)
    return jnp.asarray(value) if isinstance(value, _SCALARS) else value


def static(value: Any = _MISSING, /, **field_kwargs: Any) -> Any:
    """Mark an attribute value as static (flax.nnx 0.12's ``nnx.static``).

    Called without a value, it is a dataclass field specifier that marks the
    attribute static (keywords as ``dataclasses.field``).

    Values without state are static in nnxlib already, so they come back unchanged; a
    value holding state (an array, a variable, a module) is an error, as in flax.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.static((1, "two"))
        (1, 'two')
    """
    if value is _MISSING:
        return _marker_field(_markers.STATIC, field_kwargs)
    _check_static(value, "nnx.static", f"Found data in value of type {type(value)}")
    return value


def _check_static(value: Any, where: str, phrase: str) -> None:
    """Refuse a value holding state where a static value is required (``phrase`` is
    flax's wording for the case)."""
    if holds_state(value):
        raise ValueError(
            f"{where}: the {type(value).__name__} value holds state (arrays, variables or "
            f"modules), which cannot be static ({phrase}). Hint: assign it without "
            "nnx.static (it is then state), or keep only non-array values in it."
        )


class Sequential(Module):
    """Apply layers (any callables) one after another.

    The first layer receives all arguments; a tuple output is unpacked into the next
    layer's positional arguments, a dict output into its keyword arguments. Without
    layers it is the identity (one argument comes back as it is, several as a tuple,
    keywords alone as a dict, nothing as None). ``rngs``, when given, goes to every layer whose signature names
    an ``rngs`` parameter (as in flax.nnx; a bare ``**kwargs`` does not count).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)), jax.nn.relu,
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> model(jnp.ones((3, 2))).shape
        (3, 1)
        >>> drop = nnx.Sequential(nnx.Dropout(0.5), jax.nn.relu, nnx.Dropout(0.5))
        >>> drop(jnp.ones(4), rngs=nnx.Rngs(dropout=0)).shape
        (4,)
        >>> nnx.Sequential()(1, 2), nnx.Sequential()(x=1)
        ((1, 2), {'x': 1})
    """

    def __init__(self, *fns: Any):
        self.layers = List(fns)

    def __call__(self, *args: Any, rngs: Any = None, **kwargs: Any) -> Any:
        if not self.layers:  # the identity: what a layer would have received
            if args:
                return args[0] if len(args) == 1 else args
            return kwargs or None
        first = self.layers[0]
        out = first(*args, **kwargs, **_rngs_for(first, rngs))
        for layer in itertools.islice(self.layers, 1, None):
            extra = _rngs_for(layer, rngs)
            if isinstance(out, tuple):
                out = layer(*out, **extra)
            elif isinstance(out, dict):
                out = layer(**out, **extra)
            else:
                out = layer(out, **extra)
        return out


def _rngs_for(layer: Any, rngs: Any) -> dict:
    """``{"rngs": rngs}`` when ``rngs`` is given and ``layer`` names an ``rngs``
    parameter, else ``{}``."""
    if rngs is None:
        return {}
    try:
        parameters = inspect.signature(layer).parameters
    except (TypeError, ValueError):
        return {}
    param = parameters.get("rngs")
    if param is None or param.kind is inspect.Parameter.POSITIONAL_ONLY:
        return {}
    return {"rngs": rngs}

def _marker_field(marker: str, field_kwargs: dict) -> Any:
    """A ``dataclasses.field`` whose metadata marks the attribute data or static."""
    metadata = {**(field_kwargs.pop("metadata", None) or {}), _markers.MARKER_KEY: marker}
    return dataclasses.field(**field_kwargs, metadata=metadata)
