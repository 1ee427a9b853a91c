"""``StateAxes`` and ``Carry``: how ``vmap``/``scan`` map the state of a module argument.

``in_axes``/``out_axes`` of the mapping transforms are pytree *prefixes* of the
arguments (or outputs). Where a prefix reaches a module, its entry may be an axis for
all the module's state, ``None`` (broadcast), :class:`Carry` (``scan`` only), or a
:class:`StateAxes` giving an axis per filter.

Example:
    >>> import nnxlib as nnx
    >>> axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    >>> axes.axis_for(("kernel",), nnx.Param(0.0)), axes.axis_for(("mean",), nnx.BatchStat(0.0))
    (0, None)
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Iterator

import jax
from jax.sharding import PartitionSpec

from nnxlib.errors import format_path
from nnxlib.filters import PathIn, to_predicate
from nnxlib.spmd import PARTITION_NAME  # defined with the axis-metadata helpers
from nnxlib.state import State

__all__ = ["Carry", "StateAxes", "TreeState", "PARTITION_NAME"]

# Entries a StateAxes may also hold (what nnx.prefix gives jit's shardings and
# shard_map's specs); vmap/scan reject them when they resolve an axis.
_SHARDING_ENTRIES = (PartitionSpec, jax.sharding.Sharding)



class Carry:
    """Marks an argument (or a filter's state in :class:`StateAxes`) as a ``scan`` carry.

    Use the class itself, not an instance: ``in_axes=(nnx.Carry, 0)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> total, _ = nnx.scan(lambda c, x: (c + x, None), in_axes=(nnx.Carry, 0),
        ...                     out_axes=(nnx.Carry, 0))(0.0, jnp.arange(4.0))
        >>> float(total)
        6.0
    """


def _check_axis(axis: Any, where: str, allow_carry: bool) -> None:
    if axis is None or axis is Carry and allow_carry:
        return
    if isinstance(axis, int) and not isinstance(axis, bool):
        return
    allowed = "an int, None or nnx.Carry" if allow_carry else "an int or None"
    raise TypeError(f"{where}: expected {allowed} as an axis, got {axis!r}.")


class PrefixMapping(abc.ABC):
    """The prefix kinds that map a module's state by filters (``StateAxes``,
    ``StateSharding``, ``DiffState`` register themselves); they need graph updates.

    Example:
        >>> import nnxlib as nnx
        >>> isinstance(nnx.StateAxes({...: 0}), PrefixMapping)
        True
    """


class StateAxes(Mapping, PrefixMapping):
    """Per-filter axes for a module's state in ``vmap``/``scan`` ``in_axes``/``out_axes``.

    Each variable takes the axis of the first filter that matches it; every variable must
    match one, so end with ``...: axis`` to cover the rest. A ``State`` of axes (a
    model's state with an axis in place of each variable) gives an axis per path. An axis is an int (mapped),
    ``None`` (broadcast, the same for every member or step) or :class:`Carry` (``scan``
    only: threaded from step to step). For ``jit``'s ``in_shardings``/``out_shardings``
    and ``shard_map``'s ``in_specs`` (what ``nnx.prefix`` builds for them) the entries
    are shardings or ``PartitionSpec`` s instead.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Ens(nnx.Module):
        ...     def __init__(self):
        ...         self.w = nnx.Param(jnp.arange(3.0))     # one weight per member
        ...         self.scale = nnx.Variable(jnp.array(2.0))  # shared
        >>> axes = nnx.StateAxes({nnx.Param: 0, ...: None})
        >>> nnx.vmap(lambda m: m.w * m.scale, in_axes=(axes,))(Ens())
        Array([0., 2., 4.], dtype=float32)
    """

    def __init__(self, filter_axes: Any, /):
        if isinstance(filter_axes, State):  # an axis per path, as a state of axes
            filter_axes = [(PathIn(path), axis) for path, axis in filter_axes.flat_state()]
        items = tuple(filter_axes.items() if isinstance(filter_axes, Mapping)
                      else filter_axes)
        for f, axis in items:
            if not isinstance(axis, _SHARDING_ENTRIES):  # jit/shard_map take those
                _check_axis(axis, f"StateAxes entry for filter {f!r}", allow_carry=True)
        self._filters = tuple(f for f, _ in items)
        self._axes = tuple(a for _, a in items)
        self._predicates = tuple(to_predicate(f) for f in self._filters)

    @property
    def filters(self) -> tuple:
        """The filters, in matching order.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.StateAxes({nnx.Param: 0, ...: None}).filters
            (<class 'nnxlib.variables.Param'>, Ellipsis)
        """
        return self._filters

    @property
    def axes(self) -> tuple:
        """The axes, one per filter.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.StateAxes({nnx.Param: 0, ...: None}).axes
            (0, None)
        """
        return self._axes

    def axis_for(self, path: tuple, leaf: Any, where: str = "StateAxes") -> Any:
        """The axis of the first filter matching the leaf at ``path`` (error if none).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.StateAxes({"batch_stats": 0, ...: None}).axis_for(("m",), nnx.BatchStat(0))
            0
        """
        for predicate, axis in zip(self._predicates, self._axes):
            if predicate(path, leaf):
                return axis
        raise ValueError(
            f"{where}: no filter of {self!r} matches the {type(leaf).__name__} at "
            f"{format_path(path)!r}. StateAxes must cover every variable of the module. "
            "Hint: end it with a catch-all entry, e.g. StateAxes({nnx.Param: 0, ...: None})."
        )

    def map_prefix(self, path: tuple, variable: Any) -> Any:
        """The axis for the variable at ``path`` (flax.nnx's name for :meth:`axis_for`).

        Example:
            >>> import nnxlib as nnx
            >>> axes = nnx.StateAxes(nnx.State({"w": 0, "b": None}))
            >>> axes.map_prefix(("w",), None), axes.map_prefix(("b",), None)
            (0, None)
        """
        return self.axis_for(path, variable)

    def __getitem__(self, key: Any) -> Any:
        return self._axes[self._filters.index(key)]

    def __iter__(self) -> Iterator:
        return iter(self._filters)

    def __len__(self) -> int:
        return len(self._filters)

    def items(self) -> Any:  # type: ignore[override]
        """``(filter, axis)`` pairs in matching order.

        Example:
            >>> import nnxlib as nnx
            >>> list(nnx.StateAxes({nnx.Param: 0, ...: None}).items())[1]
            (Ellipsis, None)
        """
        return zip(self._filters, self._axes)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, StateAxes) and self._filters == other._filters
                and self._axes == other._axes)

    def __hash__(self) -> int:
        return hash((self._filters, self._axes))

    def __repr__(self) -> str:
        inner = ", ".join(f"{_filter_repr(f)}: {_axis_repr(a)}" for f, a in self.items())
        return f"StateAxes({{{inner}}})"


class TreeState:
    """A prefix entry for one module given variable by variable: ``state`` maps each of
    the module's variable paths to its entry (an axis, a sharding, a spec), as
    ``nnx.prefix`` makes it (flax.nnx's ``extract.TreeState``).

    Unlike :class:`StateAxes` it names paths, not filters, so it works in every mode.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> axes = nnx.prefix(model, {nnx.Param: 0}, graph=True)
        >>> isinstance(axes, TreeState), axes.state["kernel"]
        (True, 0)
    """

    def __init__(self, state: Any):
        self.state = state if isinstance(state, State) else State(state)
        self._entries = {path: v for path, v in self.state.flat_state()}

    def axis_for(self, path: tuple, leaf: Any, where: str = "TreeState") -> Any:
        """The entry given for the variable at ``path`` (error if there is none).

        Example:
            >>> TreeState({"w": 0}).axis_for(("w",), None)
            0
        """
        try:
            return self._entries[path]
        except KeyError:
            raise ValueError(
                f"{where}: the prefix {self!r} has no entry for the "
                f"{type(leaf).__name__} at {format_path(path)!r}. Hint: build the prefix "
                "with nnx.prefix from the same module you pass."
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TreeState) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._entries.items(), key=lambda kv: repr(kv[0]))))

    def __repr__(self) -> str:
        inner = ", ".join(f"{format_path(p)}: {_axis_repr(v)}" for p, v in self._entries.items())
        return f"TreeState({{{inner}}})"


#: The prefix entries that give a module's variables their entries one by one.
STATE_PREFIXES = (StateAxes, TreeState)


def _filter_repr(f: Any) -> str:
    if f is Ellipsis:
        return "..."
    return f.__name__ if isinstance(f, type) else repr(f)


def _axis_repr(axis: Any) -> str:
    return "Carry" if axis is Carry else repr(axis)
