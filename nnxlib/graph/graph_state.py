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

import jax

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

    Reads and writes go to the state (``_state``); ``nnx.merge(graph_state, ...)`` needs
    no separate graph definition (``_graphdef``). A ``GraphState`` is a JAX pytree with
    the same leaves and key paths as its state (the graph definition travels as static
    data), so ``jax.tree.map`` and transforms return ``GraphState`` s.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> params, rest = nnx.unpack(nnx.BatchNorm(2, rngs=nnx.Rngs(0)), nnx.Param, ...)
        >>> sorted(params), sorted(rest)
        (['bias', 'scale'], ['mean', 'var'])
        >>> params._graphdef == rest._graphdef
        True
        >>> type(jax.tree.map(lambda x: 2 * x, params)).__name__
        'GraphState'
    """

    __slots__ = ("_graphdef", "_state")

    def __init__(self, graphdef: GraphDef, state: State):
        if not isinstance(state, State):
            raise ValueError(
                f"GraphState: expected a State object, got {type(state).__name__}. Hint: "
                "build it with nnx.unpack(node, ...)."
            )
        object.__setattr__(self, "_graphdef", graphdef)
        object.__setattr__(self, "_state", state)

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._state, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in GraphState.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._state, name, value)

    def __repr__(self) -> str:
        return f"GraphState({self._state!r})"


def _flatten_graph_state(gs: GraphState) -> tuple[list, tuple]:
    paths, leaves = gs._state._flat()
    return leaves, (gs._graphdef, paths)


def _unflatten_graph_state(aux: tuple, leaves: Any) -> GraphState:
    graphdef, paths = aux
    return GraphState(graphdef, State._from_flat(paths, list(leaves)))


# Same leaves (and key paths) as the state it wraps; the graph definition is static.
jax.tree_util.register_pytree_node(GraphState, _flatten_graph_state, _unflatten_graph_state)


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
        for other in rest:
            if not isinstance(other, GraphState):
                raise ValueError(
                    f"merge: expected GraphState objects after a GraphState, got a "
                    f"{type(other).__name__} (Expected GraphState object). Hint: pass "
                    "every part from the same nnx.unpack(node, *filters) call, or use "
                    "merge(graphdef, *states) with plain states."
                )
            if other._graphdef != graphdef._graphdef:
                raise ValueError(
                    "merge: the GraphStates come from different graph definitions "
                    "(GraphDef must be the same for all of them). Hint: merge the "
                    "parts of one nnx.unpack(node, *filters) call together."
                )
        return _graph.merge(graphdef._graphdef, graphdef._state,
                            *(s._state for s in rest), copy=copy)
    if state is None:
        raise TypeError(
            "merge() missing 1 required positional argument: 'state'. Hint: "
            "merge(graphdef, state) with the pair from nnx.split, or merge(graph_state) "
            "with the result of nnx.unpack."
        )
    states = tuple(s._state if isinstance(s, GraphState) else s for s in states)
    if isinstance(state, GraphState):
        state = state._state
    return _graph.merge(graphdef, state, *states, copy=copy)
