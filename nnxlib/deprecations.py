"""``deprecated``: an alias of a renamed function that warns (``nnx.deprecations``).

Example:
    >>> import warnings
    >>> from nnxlib.deprecations import deprecated
    >>> def new_name(x):
    ...     '''Add one.'''
    ...     return x + 1
    >>> old_name = deprecated(new_name)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old_name(1), caught[0].category.__name__
    (2, 'DeprecationWarning')
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["deprecated"]

F = TypeVar("F", bound=Callable[..., Any])


def deprecated(new_fn: F) -> F:
    """A wrapper of ``new_fn`` that emits ``DeprecationWarning`` on each call.

    The wrapper keeps ``new_fn``'s signature; its docstring says what to use instead.

    Example:
        >>> from nnxlib.deprecations import deprecated
        >>> old = deprecated(sorted)
        >>> old.__doc__.splitlines()[0]
        'Deprecated: use ``sorted`` instead.'
    """
    @functools.wraps(new_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"This name is deprecated: use {new_fn.__name__} instead.",
                      DeprecationWarning, stacklevel=2)
        return new_fn(*args, **kwargs)

    wrapper.__doc__ = (f"Deprecated: use ``{new_fn.__name__}`` instead.\n\n"
                       + (new_fn.__doc__ or ""))
    return wrapper  # type: ignore[return-value]
