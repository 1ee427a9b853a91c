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

from collections.abc import Iterator, Mapping

from nnxlib._flags import BoolSetting


class VarDefaults(Mapping):
    """The default ``hijax``/``ref`` options of new variables: attributes, and a
    read-only mapping with those two keys (as flax's).

    Example:
        >>> import nnxlib as nnx
        >>> d = nnx.variablelib.VarDefaults(hijax=False, ref=True)
        >>> d.ref, d["hijax"], list(d), len(d)
        (True, False, ['hijax', 'ref'], 2)
    """

    __slots__ = ("hijax", "ref")

    def __init__(self, hijax: bool, ref: bool):
        object.__setattr__(self, "hijax", hijax)
        object.__setattr__(self, "ref", ref)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("VarDefaults is read-only. Hint: use nnx.var_defaults(...).")

    def __getitem__(self, key: str) -> bool:
        if key not in ("hijax", "ref"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(("hijax", "ref"))

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VarDefaults):
            return (self.hijax, self.ref) == (other.hijax, other.ref)
        return Mapping.__eq__(self, other)

    def __hash__(self) -> int:
        return hash((self.hijax, self.ref))

    def __repr__(self) -> str:
        return f"VarDefaults(hijax={self.hijax}, ref={self.ref})"


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
