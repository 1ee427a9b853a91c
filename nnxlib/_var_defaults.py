"""The current default ``hijax``/``ref`` options of variables (see ``nnx.var_defaults``).

Each option is a :class:`~nnxlib._flags.BoolSetting`, so ``nnx.var_defaults(...)``
works as flax's does: a bare call sets it, ``with`` scopes it to a block, and a
decorator scopes it to a function's calls. Kept below the variables layer so that
``Variable`` can read it.

Example:
    >>> current_defaults()
    VarDefaults(hijax=False, ref=False)
    >>> with default_ref(True):
    ...     current_defaults().ref
    True
"""

from __future__ import annotations

from typing import NamedTuple

from nnxlib._flags import BoolSetting


class VarDefaults(NamedTuple):
    """The default ``hijax``/``ref`` options of new variables.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variablelib.VarDefaults(hijax=False, ref=True).ref
        True
    """

    hijax: bool
    ref: bool


class default_hijax(BoolSetting):
    """Whether new variables are created with ``hijax=True``.

    Example:
        >>> default_hijax.current()
        False
    """

    default = False


class default_ref(BoolSetting):
    """Whether new variables are created with ``ref=True``.

    Example:
        >>> default_ref.current()
        False
    """

    default = False


def current_defaults() -> VarDefaults:
    """The defaults in effect (``var_defaults()`` without arguments).

    Example:
        >>> current_defaults().hijax
        False
    """
    return VarDefaults(default_hijax.current(), default_ref.current())
