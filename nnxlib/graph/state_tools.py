"""State helpers: ``restore_int_paths``, ``diff``, ``create_path_filters``
(``nnx.statelib``'s remaining public functions).

Example:
    >>> import nnxlib as nnx
    >>> nnx.restore_int_paths({"layers": {"0": {"w": 1}}})
    {'layers': {0: {'w': 1}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnxlib.filters import PathIn
from nnxlib.state import State
from nnxlib.variables import Variable

__all__ = ["restore_int_paths", "diff", "create_path_filters"]


def restore_int_paths(pure_dict: dict[str, Any]) -> dict[Any, Any]:
    """Turn digit-string keys back into ints, at every level.

    Checkpoint formats store keys as strings, so the list indices of a state
    (``layers/0/kernel``) come back as ``'0'``; this restores them.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.restore_int_paths({"0": {"1": 2, "x": 3}, "y": {"10": 1}})
        {0: {1: 2, 'x': 3}, 'y': {10: 1}}
    """
    def key(k: Any) -> Any:
        return int(k) if isinstance(k, str) and k.isdigit() else k

    def restore(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {key(k): restore(v) for k, v in node.items()}
        return node

    return restore(pure_dict)


def diff(state: Mapping, other: Mapping) -> State:
    """The entries of ``state`` whose paths are not in ``other``.

    Example:
        >>> import nnxlib as nnx
        >>> a = nnx.State({"w": nnx.Param(1.0), "m": nnx.BatchStat(0.0)})
        >>> sorted(nnx.statelib.diff(a, {"w": nnx.Param(5.0)}))
        ['m']
    """
    paths, leaves = (state if isinstance(state, State) else State(state))._flat()
    other_paths = set((other if isinstance(other, State) else State(other))._flat()[0])
    kept = [(p, v) for p, v in zip(paths, leaves) if p not in other_paths]
    return State._from_flat(tuple(p for p, _ in kept), [v for _, v in kept])


def create_path_filters(state: Mapping) -> dict[PathIn, Any]:
    """One :class:`~nnxlib.filters.PathIn` filter per leaf, mapped to the leaf's value.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.statelib.create_path_filters(nnx.State({"w": nnx.Param(1.0)}))
        {PathIn(('w',)): 1.0}
    """
    paths, leaves = (state if isinstance(state, State) else State(state))._flat()
    return {PathIn(p): (v.get_value() if isinstance(v, Variable) else v)
            for p, v in zip(paths, leaves)}
