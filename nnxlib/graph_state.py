"""``GraphState``: a state that carries its ``GraphDef`` (``nnx.unpack``), and
``PureState``, the ``(graphdef, state)`` pair type.

Example:
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> packed = nnx.unpack(model)
    >>> sorted(packed), type(nnx.merge(packed)).__name__
    (['bias', 'kernel'], 'Linear')
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Iterator, TypeVar

from nnxlib import graph as _graph
from nnxlib.graph import GraphDef
from nnxlib.state import State

__all__ = ["GraphState", "PureState", "unpack", "merge"]

A = TypeVar("A")
PureState = tuple[GraphDef[A], State]
"""The type of ``nnx.split(node)``'s result: ``tuple[GraphDef[A], State]``, so
``nnx.PureState[Model]`` annotates the pair of a ``Model``."""


class GraphState(MutableMapping):
    """A :class:`~nnxlib.State` bundled with the ``GraphDef`` it belongs to.

    Reads and writes go to the state; ``nnx.merge(graph_state, ...)`` needs no
    separate graph definition.

    Example:
        >>> import nnxlib as nnx
        >>> params, rest = nnx.unpack(nnx.BatchNorm(2, rngs=nnx.Rngs(0)), nnx.Param, ...)
        >>> sorted(params), sorted(rest)
        (['bias', 'scale'], ['mean', 'var'])
        >>> params.graphdef == rest.graphdef
        True
    """

    __slots__ = ("graphdef", "state")

    def __init__(self, graphdef: GraphDef, state: State):
        if not isinstance(state, State):
            raise TypeError(f"GraphState needs a State, got {type(state).__name__}.")
        object.__setattr__(self, "graphdef", graphdef)
        object.__setattr__(self, "state", state)

    def __getitem__(self, key: Any) -> Any:
        return self.state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.state[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.state[key]

    def __iter__(self) -> Iterator:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.state, name)

    def __repr__(self) -> str:
        return f"GraphState({self.state!r})"


def unpack(node: Any, *filters: Any, graph: bool | None = None
           ) -> GraphState | tuple[GraphState, ...]:
    """Like ``nnx.split``, with the ``GraphDef`` bundled into each returned state.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> nnx.merge(nnx.unpack(model)).kernel is model.kernel
        True
    """
    graphdef, *states = _graph.split(node, *filters, graph=graph)
    packed = tuple(GraphState(graphdef, s) for s in states)
    return packed[0] if len(packed) == 1 else packed


def merge(graphdef: Any, state: Any = None, /, *states: Any, copy: bool = False,
          recreate_variables: bool = True) -> Any:
    """``nnx.merge``, also taking :class:`GraphState` s from :func:`unpack`.

    ``merge(graphdef, state, ...)`` as usual, or ``merge(graph_state, ...)``.
    ``recreate_variables`` is flax.nnx's switch between its two variable
    implementations; nnxlib has one, and either value gives what flax gives for plain
    variables: the state's own ``Variable`` objects (copies with ``copy=True``).

    Example:
        >>> import nnxlib as nnx
        >>> params, rest = nnx.unpack(nnx.BatchNorm(2, rngs=nnx.Rngs(0)), nnx.Param, ...)
        >>> type(nnx.merge(params, rest)).__name__
        'BatchNorm'
    """
    if isinstance(graphdef, GraphState):
        rest = (state, *states) if state is not None else states
        all_states = (graphdef.state, *(s.state if isinstance(s, GraphState) else s
                                        for s in rest))
        return _graph.merge(graphdef.graphdef, *all_states, copy=copy)
    if state is None:
        raise TypeError(
            "merge: missing the state. Hint: merge(graphdef, state) with the pair from "
            "nnx.split, or merge(graph_state) with the result of nnx.unpack."
        )
    states = tuple(s.state if isinstance(s, GraphState) else s for s in states)
    if isinstance(state, GraphState):
        state = state.state
    return _graph.merge(graphdef, state, *states, copy=copy)
