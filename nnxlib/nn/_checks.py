"""Argument and input checks shared by the layers, with the messages users see.

A layer does not know the attribute path it sits at (a module can be reached by many
paths), so its errors name it by class and configuration, e.g. ``Conv(3, 8,
kernel_size=(3, 3))``; the traceback shows which attribute was called. Every message
says what was expected, what was found, and how to fix it. Shape problems of inputs are
:class:`~nnxlib.errors.ShapeMismatchError` (a ``ValueError``); bad constructor
arguments are ``ValueError``.

All checks look at static shapes only, so they cost nothing in a compiled program.

>>> from nnxlib.nn._checks import layer_text
>>> layer_text("Conv", 3, 8, kernel_size=(3, 3))
'Conv(3, 8, kernel_size=(3, 3))'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from nnxlib.errors import ShapeMismatchError

__all__ = ["layer_text", "input_error", "config_error", "check_last_axis", "int_tuple"]


def layer_text(name: str, *args: Any, **kwargs: Any) -> str:
    """How a layer is named in error messages: its class and the arguments that matter.

    Example:
        >>> layer_text("Embed", 10, 4)
        'Embed(10, 4)'
    """
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def input_error(layer: str, expected: str, got: str, hint: str) -> ShapeMismatchError:
    """The error for an input a layer cannot take (to be raised by the caller).

    Example:
        >>> print(input_error("Embed(10, 4)", "a query with 4 features", "shape (2, 3)",
        ...                   "pass vectors of the embedding size."))
        Embed(10, 4): expected a query with 4 features, got shape (2, 3). Hint: pass vectors of the embedding size.
    """
    return ShapeMismatchError(f"{layer}: expected {expected}, got {got}. Hint: {hint}")


def config_error(layer: str, expected: str, got: str, hint: str) -> ValueError:
    """The error for a constructor argument a layer cannot work with.

    Example:
        >>> print(config_error("Conv", "a positive kernel size", "0", "use 1 or more."))
        Conv: expected a positive kernel size, got 0. Hint: use 1 or more.
    """
    return ValueError(f"{layer}: expected {expected}, got {got}. Hint: {hint}")


def check_last_axis(layer: str, inputs: Any, size: int, what: str, hint: str) -> None:
    """Raise unless ``inputs``' last axis has ``size`` entries.

    Example:
        >>> import jax.numpy as jnp
        >>> check_last_axis("L", jnp.ones((2, 3)), 3, "features", "-")  # fine: no error
        >>> try:
        ...     check_last_axis("L", jnp.ones((2, 5)), 3, "features", "reshape.")
        ... except ValueError as e:
        ...     print(e)
        L: expected inputs whose last axis has 3 entries (features), got shape (2, 5). Hint: reshape.
    """
    shape = jnp.shape(inputs)
    if shape[-1:] != (size,):
        raise input_error(layer, f"inputs whose last axis has {size} entries ({what})",
                          f"shape {shape}", hint)


def int_tuple(value: int | Sequence[int] | None, rank: int, name: str, layer: str,
              *, default: int = 1, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as ``rank`` integers: None gives ``default``, an int is repeated.

    Example:
        >>> int_tuple(2, 3, "strides", "Conv")
        (2, 2, 2)
        >>> int_tuple(None, 2, "strides", "Conv")
        (1, 1)
        >>> int_tuple((1, 2), 3, "strides", "Conv")
        Traceback (most recent call last):
        ValueError: Conv: expected strides as one int or 3 ints (one per spatial axis), got (1, 2). Hint: ...
    """
    if value is None:
        value = default
    if isinstance(value, int) and not isinstance(value, bool):
        out: tuple = (value,) * rank
    else:
        try:
            out = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            out = ()
    ok = len(out) == rank and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in out)
    if not ok:
        raise config_error(
            layer, f"{name} as one int or {rank} ints (one per spatial axis)", repr(value),
            f"pass {name}=2 or {name}={(2,) * rank}; each entry must be >= {minimum}.")
    return out
