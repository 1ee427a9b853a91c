"""``nnx.helpers``: containers and small utilities, under flax.nnx's module name.

Example:
    >>> import nnxlib as nnx
    >>> nnx.helpers.Sequential is nnx.Sequential
    True
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from nnxlib.containers import Dict, List
from nnxlib.module import Sequential

__all__ = ["Dict", "List", "Sequential", "has_keyword_arg"]


def has_keyword_arg(func: Callable[..., Any], name: str) -> bool:
    """True when ``func`` takes an argument ``name`` that can be passed by keyword.

    Example:
        >>> from nnxlib.helpers import has_keyword_arg
        >>> def f(x, *, train=False): ...
        >>> has_keyword_arg(f, "train"), has_keyword_arg(f, "eval")
        (True, False)
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(name)
    return param is not None and param.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                inspect.Parameter.POSITIONAL_OR_KEYWORD)
