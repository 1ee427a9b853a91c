"""Python's arithmetic, comparison and unary operators for ``Variable``.

A variable computes like the value it holds: ``p + 1`` is ``p.value + 1``, ``1 + p`` is
``1 + p.value`` and ``p += 1`` replaces the value (``set_value``). Kept apart from
:mod:`nnxlib.variables`, which calls :func:`install_operators` once on ``Variable``.

Example:
    >>> class Box:
    ...     def __init__(self, value):
    ...         self.value = value
    ...     def set_value(self, value):
    ...         self.value = value
    >>> install_operators(Box)
    >>> b = Box(2)
    >>> b += 3
    >>> b * 2, 1 - b, -b, b > 4
    (10, -4, -5, True)
"""

from __future__ import annotations

import operator
from typing import Any, Callable

__all__ = ["install_operators"]

_BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "pow": operator.pow, "matmul": operator.matmul, "and": operator.and_,
    "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift, "divmod": divmod,
}
_COMPARE = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}
_UNARY = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs,
          "invert": operator.invert}


def install_operators(cls: type) -> None:
    """Give ``cls`` (a box with ``.value`` and ``set_value``) the operators of its value;
    an operand of type ``cls`` is unboxed too.

    Example:
        >>> class Box:
        ...     def __init__(self, value):
        ...         self.value = value
        >>> install_operators(Box)
        >>> Box(3) ** Box(2)
        9
    """

    def unbox(x: Any) -> Any:
        return x.value if isinstance(x, cls) else x

    def binary(op: Callable) -> tuple[Callable, Callable, Callable]:
        def forward(self, other):
            return op(self.value, unbox(other))

        def reflected(self, other):
            return op(unbox(other), self.value)

        def inplace(self, other):
            self.set_value(op(self.value, unbox(other)))
            return self

        return forward, reflected, inplace

    for name, op in _BINARY.items():
        forward, reflected, inplace = binary(op)
        setattr(cls, f"__{name}__", forward)
        setattr(cls, f"__r{name}__", reflected)
        if name != "divmod":
            setattr(cls, f"__i{name}__", inplace)
    for name, op in _COMPARE.items():
        setattr(cls, f"__{name}__", binary(op)[0])
    for name, op in _UNARY.items():
        setattr(cls, f"__{name}__", (lambda op: lambda self: op(self.value))(op))
