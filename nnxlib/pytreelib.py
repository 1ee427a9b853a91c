"""Data versus static: which attribute values are state, and how to say so.

An attribute of a module (any :class:`~nnxlib.Pytree`) is *data* (state, a pytree leaf,
traced by transforms) when its value is an array, a variable, a graph node or a value
of a type given to :func:`register_data_type`; anything else is *static* (part of the
``GraphDef``). ``nnx.data``/``nnx.static`` mark one value; :data:`Data`/:data:`Static`
annotations and ``nnx.data()``/``nnx.static()`` dataclass fields mark an attribute for
the whole class. This module is ``nnx.pytreelib`` (also ``nnx.object``), as in flax.nnx.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> @nnx.dataclass
    ... class Scaler(nnx.Pytree):
    ...     scale: nnx.Data[float]          # a float, but state
    ...     name: str = nnx.static(default="scaler")
    >>> s = Scaler(2.0)
    >>> jax.tree.leaves(nnx.state(s)), s.name
    ([Array(2., dtype=float32, weak_type=True)], 'scaler')
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, TypeVar

import jax

from nnxlib import _markers
from nnxlib.errors import GraphStructureError
from nnxlib.graph import _node_types, is_array, is_node_or_variable
from nnxlib.module import Object, Pytree, _check_attribute_value, data, static

__all__ = ["Object", "Pytree", "Data", "Static", "data", "static", "dataclass", "is_data",
           "has_data", "register_data_type", "check_pytree"]

A = TypeVar("A")
T = TypeVar("T", bound=type)

Data = Annotated[A, _markers.DATA]
"""Annotation marking a class attribute as data: ``x: nnx.Data[int]``.

Values assigned to the attribute go through :func:`nnxlib.data` (a Python scalar
becomes a JAX array, so it is state).

Example:
    >>> import nnxlib as nnx
    >>> class Step(nnx.Module):
    ...     count: nnx.Data[int]
    ...     def __init__(self):
    ...         self.count = 0
    >>> "count" in nnx.state(Step())
    True
"""

Static = Annotated[A, _markers.STATIC]
"""Annotation marking a class attribute as static: ``x: nnx.Static[tuple]``.

Values assigned to it go through :func:`nnxlib.static`, which rejects state.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Config(nnx.Module):
    ...     sizes: nnx.Static[tuple]
    ...     def __init__(self, sizes):
    ...         self.sizes = sizes
    >>> Config((1, 2)).sizes
    (1, 2)
    >>> Config(jnp.ones(2))
    Traceback (most recent call last):
    ValueError: Config.sizes (marked static): the ArrayImpl value holds state ...
"""


def dataclass(cls: Any = None, /, *, init: bool = True, eq: bool = True,
              order: bool = False, unsafe_hash: bool = False, match_args: bool = True,
              kw_only: bool = False, slots: bool = False,
              weakref_slot: bool = False) -> Any:
    """``dataclasses.dataclass`` for :class:`~nnxlib.Pytree` subclasses.

    Fields may be marked with :data:`Data`/:data:`Static` annotations or with
    ``nnx.data(...)``/``nnx.static(...)`` field specifiers (the keywords of
    ``dataclasses.field``); the generated ``__init__`` assigns through the module's
    attribute rules. nnxlib prints objects itself, so no ``__repr__`` is generated.

    Example:
        >>> import nnxlib as nnx
        >>> @nnx.dataclass
        ... class Pair(nnx.Module):
        ...     left: nnx.Linear
        ...     right: nnx.Linear
        >>> rngs = nnx.Rngs(0)
        >>> pair = Pair(nnx.Linear(1, 2, rngs=rngs), nnx.Linear(2, 1, rngs=rngs))
        >>> sorted(nnx.state(pair))
        ['left', 'right']
    """
    options = dict(init=init, repr=False, eq=eq, order=order, unsafe_hash=unsafe_hash,
                   match_args=match_args, kw_only=kw_only, slots=slots,
                   weakref_slot=weakref_slot)

    def wrap(klass: type) -> type:
        if not (isinstance(klass, type) and issubclass(klass, Object)):
            raise TypeError(
                f"nnx.dataclass: {klass!r} is not a subclass of nnx.Pytree/nnx.Module. "
                "Hint: derive it from nnx.Pytree, or use dataclasses.dataclass for "
                "plain classes."
            )
        new = dataclasses.dataclass(klass, **options)
        new._nnx_markers = _markers.class_markers(new)
        return new

    return wrap if cls is None else wrap(cls)



def register_data_type(type_: T, /) -> T:
    """Treat values of ``type_`` as data (state leaves) when assigned to attributes.

    Returns ``type_``, so it works as a class decorator.

    Example:
        >>> import dataclasses
        >>> import nnxlib as nnx
        >>> @nnx.register_data_type
        ... @dataclasses.dataclass(frozen=True)
        ... class Scale:
        ...     value: float
        >>> class Model(nnx.Module):
        ...     def __init__(self):
        ...         self.scale = Scale(2.0)
        >>> nnx.is_data(Scale(1.0)), list(nnx.state(Model()))
        (True, ['scale'])
    """
    if not isinstance(type_, type):
        raise TypeError(
            f"nnx.register_data_type expects a class, got {type(type_).__name__} "
            f"{type_!r}. Hint: pass the class itself, e.g. register_data_type(MyType)."
        )
    if not issubclass(type_, _node_types.DATA_TYPES):
        _node_types.DATA_TYPES = (*_node_types.DATA_TYPES, type_)
    return type_


def is_data(value: Any, /) -> bool:
    """True when ``value`` is data by itself: an array, a variable, a graph node (a
    module, ``Rngs``, ``nnx.List``…) or a value of a registered data type.

    Containers are not data by themselves (use :func:`has_data`), and neither are
    Python scalars, strings or other objects.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.is_data(jnp.ones(2)), nnx.is_data(nnx.Param(1.0)), nnx.is_data(nnx.Rngs(0))
        (True, True, True)
        >>> nnx.is_data(42), nnx.is_data("hi"), nnx.is_data([jnp.ones(2)])
        (False, False, False)
    """
    return is_array(value) or is_node_or_variable(value)


def has_data(value: Any, /) -> list[Any]:
    """The data found in ``value`` (searched as a pytree), outermost first.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> found = nnx.has_data({"a": nnx.Param(1.0), "b": 2, "c": [jnp.zeros(1)]})
        >>> [type(x).__name__ for x in found]
        ['Param', 'ArrayImpl']
        >>> nnx.has_data((1, "two"))
        []
    """
    leaves = jax.tree_util.tree_leaves(value, is_leaf=is_data)
    return [leaf for leaf in leaves if is_data(leaf)]


def check_pytree(pytree: Any) -> None:
    """Check that no attribute of ``pytree`` hides state where nnxlib cannot see it.

    Assignment runs the same check, so this finds only values put in place behind
    the attribute rules (e.g. through ``__dict__``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Box(nnx.Module):
        ...     pass
        >>> box = Box()
        >>> nnx.check_pytree(box)
        >>> box.__dict__["hidden"] = {1, 2}       # fine: no state inside
        >>> class Holder:
        ...     def __init__(self):
        ...         self.p = nnx.Param(1.0)
        >>> box.__dict__["bad"] = Holder()
        >>> nnx.check_pytree(box)
        Traceback (most recent call last):
        nnxlib.errors.GraphStructureError: check_pytree: Box.bad: Cannot assign Box.bad: ...
    """
    if not isinstance(pytree, Object):
        raise TypeError(
            f"check_pytree expects an nnx.Pytree (a module or other nnx object), got "
            f"{type(pytree).__name__}."
        )
    for name, value in vars(pytree).items():
        try:
            _check_attribute_value(pytree, name, value)
        except ValueError as error:
            raise GraphStructureError(
                f"check_pytree: {type(pytree).__name__}.{name}: {error}"
            ) from None

