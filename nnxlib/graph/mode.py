"""Graph mode and tree mode: how transforms and graph functions treat modules.

flax.nnx 0.12 has two ways to see a module, chosen per call with ``graph=`` and
``graph_updates=`` (or for a region with :class:`set_graph_mode` /
:class:`set_graph_updates`):

* **graph mode** (``graph=True``, the default): a module is a graph of objects. Shared
  references (one ``Variable`` or submodule reachable by two paths) are preserved.
* **tree mode** (``graph=False``): a module is a pytree. Every object must be reachable
  by exactly one path; a shared reference raises :class:`~nnxlib.errors.SharedReferenceError`
  (a ``ValueError``, as in flax) naming both paths.
* **graph updates** (``graph_updates=True``, the default): a transformed function may
  change the structure of its inputs (add an attribute, sow an intermediate, replace a
  submodule) and the change is applied to the caller's objects. With
  ``graph_updates=False`` (and always in tree mode) only variable *values* flow back;
  inputs and outputs may not alias each other.

In flax, tree mode exists because graph mode is slow: it re-walks the graph on every
call. nnxlib's graph mode caches the walk, so both modes run the same fast path and tree
mode costs one cached flag check more (``benchmarks/tree_mode.py``). Where flax silently
drops a structural change made in tree mode, nnxlib raises
:class:`~nnxlib.errors.GraphStructureError` instead (docs/compatibility.md).

Example:
    >>> import nnxlib as nnx
    >>> nnx.set_graph_mode.current_value()
    True
    >>> with nnx.set_graph_mode(False):
    ...     nnx.set_graph_mode.current_value()
    False
"""

from __future__ import annotations

from typing import NamedTuple

from nnxlib._flags import BoolSetting

__all__ = ["set_graph_mode", "set_graph_updates", "Mode", "resolve_mode", "resolve_graph",
           "GRAPH"]


class set_graph_mode(BoolSetting):  # noqa: N801  (flax.nnx's name)
    """Choose graph mode (``True``, the default) or tree mode (``False``).

    A call sets it process-wide; ``with set_graph_mode(False):`` sets it for the block;
    ``@set_graph_mode(False)`` for every call of the decorated function. Functions that
    take ``graph=None`` use the value in force when they are called (transforms: when
    they are created).

    Example:
        >>> import nnxlib as nnx
        >>> class Tied(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Param(1.0)
        ...         self.b = self.a
        >>> with nnx.set_graph_mode(False):
        ...     try:
        ...         nnx.split(Tied())
        ...     except ValueError as error:
        ...         print(type(error).__name__)
        SharedReferenceError
        >>> len(nnx.state(Tied()))       # graph mode again: the shared Param counted once
        1
    """

    default = True


class set_graph_updates(BoolSetting):  # noqa: N801  (flax.nnx's name)
    """Choose whether transforms apply structural changes back (``True``, the default).

    With ``False``, a transformed function may update variable values but not add,
    remove or replace attributes, and may not return its inputs' objects; either raises.
    Used like :class:`set_graph_mode`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> with nnx.set_graph_updates(False):
        ...     @nnx.jit
        ...     def grow(model):
        ...         model.extra = nnx.Param(jnp.zeros(()))
        >>> try:
        ...     grow(model)
        ... except nnx.errors.GraphStructureError:
        ...     print("raised", hasattr(model, "extra"))
        raised False
    """

    default = True


class Mode(NamedTuple):
    """A resolved ``(graph, graph_updates)`` pair.

    Example:
        >>> resolve_mode(False, None)
        Mode(graph=False, updates=False)
    """

    graph: bool
    updates: bool


GRAPH = Mode(True, True)


def resolve_mode(graph: bool | None, graph_updates: bool | None = None) -> Mode:
    """Fill in ``None`` arguments from the settings in force.

    Tree mode implies no graph updates (a pytree's structure cannot change in place).

    Example:
        >>> resolve_mode(None, None)
        Mode(graph=True, updates=True)
        >>> resolve_mode(True, False)
        Mode(graph=True, updates=False)
    """
    graph = resolve_graph(graph)
    if graph_updates is None:
        graph_updates = set_graph_updates.current()
    _check_bool("graph_updates", graph_updates)
    if graph and graph_updates:
        return GRAPH
    return Mode(graph, graph and graph_updates)


def resolve_graph(graph: bool | None) -> bool:
    """``graph`` itself, or the mode in force when it is None.

    Example:
        >>> resolve_graph(None), resolve_graph(False)
        (True, False)
    """
    if graph is None:
        return set_graph_mode.current()
    _check_bool("graph", graph)
    return graph


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}= expects True, False or None, got {value!r}. "
                        f"Hint: {name}=False selects tree mode.")
