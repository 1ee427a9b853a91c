"""``EMA``: an exponential moving average of a model's variables.

The average is kept in variables of the same kinds and metadata as the tracked ones
(``ema.params``, nested ``nnx.Dict`` s keyed like the model's state), so it is
checkpointed, sharded and passed through ``nnx.jit`` like a model. ``ema.apply_to(model)``
returns a model that *shares* those variables: it always shows the current average.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax.numpy as jnp

from nnxlib import graph as graphlib
from nnxlib.containers import Dict
from nnxlib.errors import StateMismatchError, format_path
from nnxlib.module import Pytree
from nnxlib.state import from_flat_state, merge_state, to_flat_state
from nnxlib.variables import Variable

__all__ = ["EMA"]

M = TypeVar("M")


def _nested_dicts(flat: list[tuple[tuple, Any]]) -> Dict:
    """``nnx.Dict`` s nested along the paths (attribute access: ``ema.params.kernel``)."""
    root = Dict()
    for path, leaf in flat:
        node = root
        for key in path[:-1]:
            if key not in node:
                node[key] = Dict()
            node = node[key]
        node[path[-1]] = leaf
    return root


class EMA(Pytree):
    """Exponential moving average of the variables of ``params`` that match ``only``.

    ``update(model)`` moves each average towards the model's current value:
    ``ema = decay * ema + (1 - decay) * value``. Use it inside the jitted train step,
    after the optimizer update; evaluate with ``ema.apply_to(model)``.

    Args:
        params: the model (any graph node) whose variables are averaged; the averages
            start at their current values.
        decay: weight of the old average in each update (e.g. 0.999).
        only: filter selecting the variables to average (default: all of them; use
            ``nnx.Param`` to leave e.g. BatchNorm statistics out).
        graph: accepted for ``flax.nnx`` compatibility; nnxlib always walks the graph.

    Attributes:
        params: the averages, as nested ``nnx.Dict`` s of variables keyed like
            ``nnx.state(params, only)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(1, 1, use_bias=False, kernel_init=nnx.initializers.zeros,
        ...                    rngs=nnx.Rngs(0))
        >>> ema = nnx.EMA(model, decay=0.9)
        >>> model.kernel[...] = jnp.ones((1, 1))
        >>> ema.update(model)
        >>> ema.params.kernel[...]
        Array([[0.1]], dtype=float32)
        >>> averaged = ema.apply_to(model)
        >>> averaged.kernel is ema.params.kernel, model.kernel[...]
        (True, Array([[1.]], dtype=float32))
    """

    def __init__(self, params: Any, decay: float, *, only: Any = ..., graph: bool | None = None):
        copies = []
        for path, variable in to_flat_state(graphlib.state(params, only, graph=graph)):
            if not isinstance(variable, Variable):
                raise TypeError(
                    f"EMA: {format_path(path)} is a {type(variable).__name__}, not a "
                    "Variable; only variables can be averaged. Hint: select variables "
                    "with only=nnx.Param (or another variable filter)."
                )
            copies.append((path, type(variable)(jnp.copy(variable[...]),
                                                **variable.get_metadata(exclude_required=True))))
        self.decay = decay
        self.filter = only
        self.graph = graph
        self.params = _nested_dicts(copies)

    def _averages(self) -> list[tuple[tuple, Variable]]:
        return list(to_flat_state(graphlib.state(self.params, graph=True)))

    def update(self, updates: Any) -> None:
        """Blend the current values of ``updates`` (the model) into the averages.

        Args:
            updates: the tracked model (or any node whose ``only``-state has the same
                paths and shapes as the averages).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
            >>> ema = nnx.EMA(model, decay=0.5, only=nnx.Param)
            >>> model.bias[...] = jnp.array([4.0])
            >>> ema.update(model); ema.update(model)
            >>> ema.params.bias[...]         # 0 -> 2 -> 3
            Array([3.], dtype=float32)
        """
        averages = self._averages()
        current = dict(to_flat_state(graphlib.state(updates, self.filter, graph=True)))
        problems = []
        for path, average in averages:
            if path not in current:
                problems.append(f"{format_path(path)} is missing")
            elif jnp.shape(current[path]) != average.shape:
                problems.append(f"{format_path(path)} has shape {jnp.shape(current[path])}, "
                                f"the average has shape {average.shape}")
        extra = sorted(set(current) - {p for p, _ in averages}, key=str)
        problems += [f"{format_path(p)} is not averaged" for p in extra[:5]]
        if problems:
            raise StateMismatchError(
                f"EMA.update: the variables given do not match the averaged ones "
                f"(filter {self.filter!r}): {'; '.join(problems)}. Hint: pass the same "
                "model the EMA was built from."
            )
        decay = self.decay
        for path, average in averages:
            value = current[path]
            value = value[...] if isinstance(value, Variable) else value
            average[...] = decay * average[...] + (1.0 - decay) * value

    def apply_to(self, model: M) -> M:
        """A new model like ``model`` whose averaged variables are the EMA's own.

        Variables the EMA does not track come from ``model`` (shared, not copied).
        Later ``update`` calls show through the returned model.

        Example:
            >>> import nnxlib as nnx
            >>> model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
            >>> ema = nnx.EMA(model, 0.99, only=nnx.Param)
            >>> averaged = ema.apply_to(model)
            >>> averaged.scale is ema.params.scale, averaged.mean is model.mean
            (True, True)
        """
        graphdef, state = graphlib.split(model, graph=True)
        averages = from_flat_state(self._averages())
        return graphlib.merge(graphdef, merge_state(state, averages))

