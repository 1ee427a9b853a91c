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

import numpy as np

__all__ = ["install_operators", "ArrayProtocol"]

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


class ArrayProtocol:
    """The array protocol of a box with ``.value``: ``shape``, ``dtype``, ``ndim``,
    ``size``, ``__jax_array__``, ``__array__``, ``len``, ``iter``, ``bool``, ``float``,
    ``int`` and ``operator.index`` all read the held value. A mixin of ``Variable``."""

    __slots__ = ()
    value: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the held value.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Param(jnp.zeros((2, 3))).shape
            (2, 3)
        """
        return np.shape(self.value)

    @property
    def dtype(self) -> Any:
        """Dtype of the held value.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Param(jnp.zeros(2, jnp.bfloat16)).dtype
            dtype(bfloat16)
        """
        dtype = getattr(self.value, "dtype", None)
        return np.result_type(self.value) if dtype is None else dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions of the held value.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Param(jnp.zeros((2, 3))).ndim
            2
        """
        return np.ndim(self.value)

    @property
    def size(self) -> int:
        """Number of elements of the held value.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> nnx.Param(jnp.zeros((2, 3))).size
            6
        """
        return int(np.size(self.value))

    def __jax_array__(self) -> Any:
        return self.value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.value, dtype=dtype)

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self) -> Any:
        return iter(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return operator.index(self.value)

