"""Nested mappings to flat ``{path: value}`` dicts and back (``nnx.traversals``).

Example:
    >>> from nnxlib import traversals
    >>> flat = traversals.flatten_mapping({"a": 1, "b": {"c": 2}})
    >>> flat
    {('a',): 1, ('b', 'c'): 2}
    >>> traversals.unflatten_mapping(flat)
    {'a': 1, 'b': {'c': 2}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

__all__ = ["empty_node", "flatten_mapping", "flatten_to_sequence", "unflatten_mapping"]


class _EmptyNode:
    """Stands for an empty mapping in a flat dict (``keep_empty_nodes=True``)."""

    def __repr__(self) -> str:
        return "empty_node"


empty_node = _EmptyNode()
"""The marker ``flatten_mapping(..., keep_empty_nodes=True)`` puts for an empty mapping.

Example:
    >>> from nnxlib import traversals
    >>> traversals.flatten_mapping({"a": {}}, keep_empty_nodes=True)
    {('a',): empty_node}
"""

IsLeaf = Callable[[tuple, Mapping], bool]


def _walk(xs: Mapping, prefix: tuple, keep_empty: bool, is_leaf: IsLeaf | None,
          out: list) -> None:
    for key, value in xs.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and not (is_leaf and is_leaf(path, value)):
            if not value:
                if keep_empty:
                    out.append((path, empty_node))
                continue
            _walk(value, path, keep_empty, is_leaf, out)
        else:
            out.append((path, value))


def flatten_to_sequence(xs: Mapping, /, *, is_leaf: IsLeaf | None = None
                        ) -> list[tuple[tuple, Any]]:
    """``[(path, value), ...]`` for the leaves of a nested mapping; empty mappings are
    dropped. ``is_leaf(path, mapping)`` stops the descent into a mapping.

    Example:
        >>> from nnxlib import traversals
        >>> traversals.flatten_to_sequence({"foo": 1, "bar": {"a": 2, "b": {}}})
        [(('foo',), 1), (('bar', 'a'), 2)]
    """
    out: list = []
    _walk(xs, (), False, is_leaf, out)
    return out


def flatten_mapping(xs: Mapping, /, *, keep_empty_nodes: bool = False,
                    is_leaf: IsLeaf | None = None, sep: str | None = None) -> dict:
    """``{path: value}`` for a nested mapping; with ``sep`` the paths are joined into
    strings.

    Example:
        >>> from nnxlib import traversals
        >>> traversals.flatten_mapping({"a": {"b": 1}}, sep="/")
        {'a/b': 1}
    """
    out: list = []
    _walk(xs, (), keep_empty_nodes, is_leaf, out)
    if sep is None:
        return dict(out)
    return {sep.join(map(str, path)): value for path, value in out}


def unflatten_mapping(xs: Any, /, *, sep: str | None = None) -> dict:
    """The nested dict of a flat ``{path: value}`` mapping (or sequence of pairs);
    with ``sep``, string paths are split first. ``empty_node`` becomes ``{}``.

    Example:
        >>> from nnxlib import traversals
        >>> traversals.unflatten_mapping({"a/b": 1, "c": 2}, sep="/")
        {'a': {'b': 1}, 'c': 2}
    """
    items = xs.items() if isinstance(xs, Mapping) else xs
    result: dict = {}
    for path, value in items:
        if sep is not None:
            path = tuple(path.split(sep))
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {} if value is empty_node else value
    return result
