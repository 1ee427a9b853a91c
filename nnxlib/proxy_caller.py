"""Record an attribute/item path and a call, then hand them to a function:
``CallableProxy`` (``nnx.proxy_caller``), the mechanism behind ``nnx.call``-style APIs.

Example:
    >>> from nnxlib.proxy_caller import CallableProxy
    >>> def run(accessor, *args):
    ...     return accessor, args
    >>> proxy = CallableProxy(run)
    >>> accessor, args = proxy.encoder.layers[0](1, 2)
    >>> accessor.actions, args
    ((GetAttr(name='encoder'), GetAttr(name='layers'), GetItem(key=0)), (1, 2))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["GetAttr", "GetItem", "DelayedAccessor", "CallableProxy"]


@dataclasses.dataclass(frozen=True)
class GetAttr:
    """One ``.name`` step of a :class:`DelayedAccessor`.

    Example:
        >>> from nnxlib.proxy_caller import GetAttr
        >>> GetAttr("real")(3 + 4j)
        3.0
    """

    name: str

    def __call__(self, obj: Any) -> Any:
        return getattr(obj, self.name)


@dataclasses.dataclass(frozen=True)
class GetItem:
    """One ``[key]`` step of a :class:`DelayedAccessor`.

    Example:
        >>> from nnxlib.proxy_caller import GetItem
        >>> GetItem(1)(["a", "b"])
        'b'
    """

    key: Any

    def __call__(self, obj: Any) -> Any:
        return obj[self.key]


@dataclasses.dataclass(frozen=True)
class DelayedAccessor:
    """A recorded path of attribute and item accesses, applied later to an object.

    Example:
        >>> from nnxlib.proxy_caller import DelayedAccessor
        >>> path = DelayedAccessor().layers[1]
        >>> path.actions
        (GetAttr(name='layers'), GetItem(key=1))
        >>> class Net:
        ...     layers = ["x", "y"]
        >>> path(Net())
        'y'
    """

    actions: tuple = ()

    def __call__(self, x: Any) -> Any:
        for action in self.actions:
            x = action(x)
        return x

    def __getattr__(self, name: str) -> "DelayedAccessor":
        if name.startswith("__"):
            raise AttributeError(name)
        return DelayedAccessor((*self.actions, GetAttr(name)))

    def __getitem__(self, key: Any) -> "DelayedAccessor":
        return DelayedAccessor((*self.actions, GetItem(key)))


class CallableProxy:
    """Records ``.attr``/``[key]`` accesses; a call runs ``callable(accessor, *args,
    **kwargs)`` with the recorded :class:`DelayedAccessor`.

    Example:
        >>> from nnxlib.proxy_caller import CallableProxy
        >>> class Model:
        ...     def double(self, x):
        ...         return 2 * x
        >>> model = Model()
        >>> CallableProxy(lambda acc, *a: acc(model)(*a)).double(21)
        42
    """

    def __init__(self, callable: Callable[..., Any], accessor: DelayedAccessor | None = None):
        self._callable = callable
        self._accessor = DelayedAccessor() if accessor is None else accessor

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._callable(self._accessor, *args, **kwargs)

    def __getattr__(self, name: str) -> "CallableProxy":
        if name.startswith("__"):
            raise AttributeError(name)
        return CallableProxy(self._callable, getattr(self._accessor, name))

    def __getitem__(self, key: Any) -> "CallableProxy":
        return CallableProxy(self._callable, self._accessor[key])
