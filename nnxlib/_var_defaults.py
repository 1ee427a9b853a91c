"""The current default ``hijax``/``ref`` options of variables (see ``nnx.var_defaults``).

Kept below the variables layer so that ``Variable`` can read it.

Example:
    >>> current_defaults()
    VarDefaults(hijax=False, ref=False)
"""

from __future__ import annotations

import threading
from typing import NamedTuple


class VarDefaults(NamedTuple):
    """The default ``hijax``/``ref`` options of new variables.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variablelib.VarDefaults(hijax=False, ref=True).ref
        True
    """

    hijax: bool
    ref: bool


_STATE = threading.local()


def current_defaults() -> VarDefaults:
    """The defaults in effect (``var_defaults()`` without arguments).

    Example:
        >>> current_defaults().hijax
        False
    """
    return getattr(_STATE, "defaults", None) or VarDefaults(False, False)


def set_defaults(new: VarDefaults) -> None:
    """Make ``new`` the defaults of this thread.

    Example:
        >>> old = current_defaults()
        >>> set_defaults(VarDefaults(True, False)); current_defaults().hijax
        True
        >>> set_defaults(old)
    """
    _STATE.defaults = new
