"""Turning arbitrary Python values into hashable, value-comparable keys.

Graph definitions and variable metadata end up in cache keys and in JAX pytree aux data,
both of which must be hashable and compare by value. Most static values already are; the
few that are not (lists, dicts, sets, arbitrary objects without ``__hash__``) are
converted here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["freeze", "Unhashable", "freeze_metadata", "thaw_metadata"]


class Unhashable:
    """Wraps a value that cannot be hashed: hashes by type, compares with ``==``.

    Example:
        >>> Unhashable([1, 2]) == Unhashable([1, 2])
        True
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return hash(type(self.value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Unhashable):
            return False
        if self.value is other.value:
            return True
        try:
            return bool(self.value == other.value)
        except Exception:  # e.g. arrays whose == is elementwise
            return False

    def __repr__(self) -> str:
        return repr(self.value)


def freeze(value: Any) -> Any:
    """Return ``value`` if it is hashable, else a hashable stand-in that compares by value.

    Lists become tuples, dicts become sorted item tuples, anything else unhashable is
    wrapped in :class:`Unhashable`.

    Example:
        >>> freeze([1, {"a": 2}])
        (1, (('a', 2),))
        >>> freeze("name")
        'name'
    """
    if type(value) in _ATOMS:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((k, freeze(v)) for k, v in value.items()), key=_item_key))
    try:
        hash(value)
    except TypeError:
        return Unhashable(value)
    return value


# Exact types that are always hashable and compare by value: returned as they are.
_ATOMS = frozenset({int, float, bool, str, bytes, complex, type(None)})


def _item_key(item: tuple) -> str:
    return repr(item[0])


def freeze_metadata(metadata: dict) -> tuple:
    """Metadata as a hashable, order-independent tuple (for aux data and graph defs).

    Example:
        >>> thaw_metadata(freeze_metadata({"b": [1], "a": 2}))
        {'a': 2, 'b': [1]}
    """
    if not metadata:
        return ()
    return tuple(sorted((k, _FrozenEntry(v)) for k, v in metadata.items()))


def thaw_metadata(frozen: tuple) -> dict:
    """Inverse of :func:`freeze_metadata`.

    Example:
        >>> thaw_metadata(())
        {}
    """
    return {k: entry.value for k, entry in frozen}


class _FrozenEntry:
    """Keeps the original metadata value but hashes/compares it by its frozen form."""

    __slots__ = ("value", "key")

    def __init__(self, value: Any):
        self.value = value
        self.key = freeze(value)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FrozenEntry) and self.key == other.key

    def __lt__(self, other: "_FrozenEntry") -> bool:  # only reached on duplicate keys
        return False

    def __repr__(self) -> str:
        return repr(self.value)
