"""Filters: small declarative predicates that select state by path and value.

A filter is anything :func:`to_predicate` understands:

* a type: ``nnx.Param`` selects values that are instances of it;
* a string: a collection name (``'params'``, ``'batch_stats'``) or a variable ``tag``;
* ``...`` or ``True`` selects everything, ``None`` or ``False`` nothing;
* one of the filter objects below (``PathContains``, ``WithTag``, ``OfType``, ``Any``,
  ``All``, ``Not``, ``Everything``, ``Nothing``);
* a list or tuple of filters (means ``Any`` of them);
* any callable ``predicate(path, value) -> bool``.

Filter objects are frozen and compare by value, so they can key caches.

Example:
    >>> import nnxlib as nnx
    >>> is_param = nnx.filters.to_predicate(nnx.Param)
    >>> is_param(("linear", "kernel"), nnx.Param(1.0)), is_param((), nnx.BatchStat(1.0))
    (True, False)
"""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any as TAny
from typing import Callable

from nnxlib.errors import InvalidFilterError
from nnxlib.variables import Variable, variable_name_from_type

__all__ = [
    "Filter",
    "to_predicate",
    "PathContains",
    "WithTag",
    "OfType",
    "Any",
    "All",
    "Not",
    "Everything",
    "Nothing",
    "check_partition_filters",
    "PathIn",
    "filters_to_predicates",
]

Filter = TAny  # type, str, Ellipsis, bool, None, callable, or a filter object below
Predicate = Callable[[tuple, TAny], bool]


def to_predicate(filter: Filter) -> Predicate:
    """Turn any filter into a predicate ``(path, value) -> bool``.

    Example:
        >>> import nnxlib as nnx
        >>> pred = nnx.filters.to_predicate("batch_stats")
        >>> pred(("bn", "mean"), nnx.BatchStat(0.0))
        True
    """
    if isinstance(filter, _FilterBase):
        return filter
    if filter is Ellipsis or filter is True:
        return Everything()
    if filter is None or filter is False:
        return Nothing()
    if isinstance(filter, type):
        return OfType(filter)
    if isinstance(filter, str):
        return _CollectionOrTag(filter)
    if isinstance(filter, (list, tuple)):
        return Any(*filter)
    if callable(filter):
        return filter
    raise TypeError(
        f"Invalid filter {filter!r} of type {type(filter).__name__}. Expected a type, a "
        "collection name or tag string, ..., True/False, a filter object or a callable "
        "(path, value) -> bool."
    )


class _FilterBase:
    """Common base so ``to_predicate`` can pass filter objects through unchanged."""

    def __call__(self, path: tuple, x: TAny) -> bool:  # pragma: no cover
        raise NotImplementedError


def _collection_of(value: TAny) -> str | None:
    if isinstance(value, Variable):
        try:
            return variable_name_from_type(type(value))
        except ValueError:
            return None
    return None


@dataclasses.dataclass(frozen=True)
class _CollectionOrTag(_FilterBase):
    """Selects variables whose collection name or ``tag`` metadata equals ``name``."""

    name: str

    def __call__(self, path: tuple, x: TAny) -> bool:
        if _collection_of(x) == self.name:
            return True
        return isinstance(x, Variable) and x._metadata.get("tag") == self.name

    def __repr__(self) -> str:
        return repr(self.name)


@dataclasses.dataclass(frozen=True)
class OfType(_FilterBase):
    """Selects values that are instances of ``type`` (for variables: of that kind).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.OfType(nnx.Param)((), nnx.Param(0.0))
        True
    """

    type: type

    def __call__(self, path: tuple, x: TAny) -> bool:
        return isinstance(x, self.type)

    def __repr__(self) -> str:
        return f"OfType({self.type.__name__})"


@dataclasses.dataclass(frozen=True)
class PathContains(_FilterBase):
    """Selects values whose path contains the key ``key``.

    With ``exact=False`` a part of a path entry is enough (compared as strings).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.PathContains("bias")(("linear", "bias"), nnx.Param(0.0))
        True
        >>> nnx.PathContains("lin", exact=False)(("linear", "bias"), nnx.Param(0.0))
        True
    """

    key: TAny
    exact: bool = True

    def __call__(self, path: tuple, x: TAny) -> bool:
        if self.exact:
            return self.key in path
        key = str(self.key)
        return any(key in str(entry) for entry in path)


class PathIn(_FilterBase):
    """Selects values whose path is one of ``paths`` (exactly).

    Example:
        >>> import nnxlib as nnx
        >>> only = nnx.filters.PathIn(("linear", "bias"), ("out", "kernel"))
        >>> only(("linear", "bias"), None), only(("linear", "kernel"), None)
        (True, False)
    """

    def __init__(self, *paths: tuple):
        self.paths = frozenset(tuple(p) for p in paths)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return tuple(path) in self.paths

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathIn) and other.paths == self.paths

    def __hash__(self) -> int:
        return hash((PathIn, self.paths))

    def __repr__(self) -> str:
        return f"PathIn({', '.join(map(repr, sorted(self.paths, key=str)))})"


def filters_to_predicates(filters: tuple | list) -> tuple[Predicate, ...]:
    """``to_predicate`` of each filter; ``...`` may only come last (it takes the rest).

    Example:
        >>> import nnxlib as nnx
        >>> preds = nnx.filters.filters_to_predicates((nnx.Param, ...))
        >>> [p((), nnx.BatchStat(0.0)) for p in preds]
        [False, True]
    """
    for i, f in enumerate(filters[:-1]):
        if f is Ellipsis or f is True:
            raise ValueError(
                f"filters_to_predicates: '...' matches everything, so the filters after "
                f"it at position {i} can never match. Hint: put '...' last."
            )
    return tuple(to_predicate(f) for f in filters)


@dataclasses.dataclass(frozen=True)
class WithTag(_FilterBase):
    """Selects variables whose ``tag`` metadata equals ``tag`` (e.g. RNG streams).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.WithTag("dropout")((), nnx.Variable(0, tag="dropout"))
        True
    """

    tag: str

    def __call__(self, path: tuple, x: TAny) -> bool:
        return isinstance(x, Variable) and x._metadata.get("tag") == self.tag


class Any(_FilterBase):
    """Selects values matched by at least one of the given filters.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.Any(nnx.Param, nnx.BatchStat)((), nnx.BatchStat(0.0))
        True
    """

    def __init__(self, *filters: Filter):
        self.filters = tuple(filters)
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return builtins.any(p(path, x) for p in self.predicates)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Any) and self.predicates == other.predicates

    def __hash__(self) -> int:
        return hash(("Any", self.predicates))

    def __repr__(self) -> str:
        return f"Any({', '.join(map(repr, self.predicates))})"


class All(_FilterBase):
    """Selects values matched by every one of the given filters.

    Example:
        >>> import nnxlib as nnx
        >>> f = nnx.All(nnx.Param, nnx.PathContains("bias"))
        >>> f(("bias",), nnx.Param(0.0)), f(("kernel",), nnx.Param(0.0))
        (True, False)
    """

    def __init__(self, *filters: Filter):
        self.filters = tuple(filters)
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return builtins.all(p(path, x) for p in self.predicates)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, All) and self.predicates == other.predicates

    def __hash__(self) -> int:
        return hash(("All", self.predicates))

    def __repr__(self) -> str:
        return f"All({', '.join(map(repr, self.predicates))})"


class Not(_FilterBase):
    """Selects values the given filter does not match.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.Not(nnx.Param)((), nnx.BatchStat(0.0))
        True
    """

    def __init__(self, collection_filter: Filter, /):
        self.filter = collection_filter
        self.predicate = to_predicate(collection_filter)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return not self.predicate(path, x)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Not) and self.predicate == other.predicate

    def __hash__(self) -> int:
        return hash(("Not", self.predicate))

    def __repr__(self) -> str:
        return f"Not({self.predicate!r})"


class Everything(_FilterBase):
    """Selects everything (the same as ``...`` or ``True``).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.Everything()(("any", "path"), 1)
        True
    """

    def __call__(self, path: tuple, x: TAny) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Everything)

    def __hash__(self) -> int:
        return hash("Everything")

    def __repr__(self) -> str:
        return "Everything()"


class Nothing(_FilterBase):
    """Selects nothing (the same as ``None`` or ``False``).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.Nothing()(("any", "path"), 1)
        False
    """

    def __call__(self, path: tuple, x: TAny) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Nothing)

    def __hash__(self) -> int:
        return hash("Nothing")

    def __repr__(self) -> str:
        return "Nothing()"


def _matches_everything(predicate: Predicate) -> bool:
    """True when ``predicate`` is known to select every value, whatever it is given."""
    if isinstance(predicate, Everything):
        return True
    if isinstance(predicate, Any):
        return builtins.any(_matches_everything(p) for p in predicate.predicates)
    if isinstance(predicate, All):
        return builtins.all(_matches_everything(p) for p in predicate.predicates)
    if isinstance(predicate, Not):
        return isinstance(predicate.predicate, Nothing)
    return False


def check_partition_filters(filters: tuple, where: str = "split") -> None:
    """Raise :class:`~nnxlib.errors.InvalidFilterError` when a filter that selects
    everything (``...``, ``True``, ``Everything()``, or an ``Any`` holding one) is
    followed by more filters.

    A partition gives each value to the first filter that matches it, so filters after
    a catch-all could never receive anything: that is a mistake in the call, not an
    empty group.

    Example:
        >>> import nnxlib as nnx
        >>> check_partition_filters((nnx.Param, ...))          # fine: ... comes last
        >>> try:
        ...     check_partition_filters((..., nnx.BatchStat))
        ... except nnx.errors.InvalidFilterError as e:
        ...     print(str(e).split(" but")[0])
        split: filter 0 (...) selects everything,
    """
    for index, f in enumerate(filters[:-1]):
        if _matches_everything(to_predicate(f)):
            rest = ", ".join(map(_filter_repr, filters[index + 1:]))
            reordered = (*filters[:index], *filters[index + 1:], f)
            raise InvalidFilterError(
                f"{where}: filter {index} ({_filter_repr(f)}) selects everything, but "
                f"{len(filters) - index - 1} filter(s) follow it ({rest}) and would "
                "receive nothing (`...` or `True` can only be used as the last filters). "
                "Expected a filter that selects everything only in last "
                f"place; got the filters ({', '.join(map(_filter_repr, filters))}). Hint: "
                "put the catch-all last: "
                f"({', '.join(map(_filter_repr, reordered))})."
            )


def _filter_repr(f: Filter) -> str:
    if f is Ellipsis:
        return "..."
    if isinstance(f, type):
        return f.__name__
    if isinstance(f, (list, tuple)):
        inner = ", ".join(map(_filter_repr, f))
        return f"[{inner}]" if isinstance(f, list) else f"({inner})"
    return repr(f)
