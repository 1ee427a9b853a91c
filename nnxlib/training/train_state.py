"""``TrainState``: the functional (Linen-style) training state, for graphdef + state code.

An immutable pytree holding a model's ``graphdef``, its ``params`` (a ``State``), the
optax ``opt_state``, a ``step`` counter and the optax transformation ``tx`` (static).
``apply_gradients`` returns a new state; nothing is mutated. Subclasses add fields by
annotation (``batch_stats: nnx.State``), as with ``flax.struct.PyTreeNode``; a field
declared with ``dataclasses.field(metadata={"pytree_node": False})`` is static.

Use it for code that passes ``(graphdef, state)`` through plain ``jax.jit``; with
``nnx.jit``, :class:`~nnxlib.Optimizer` on a live model is simpler.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import optax

from nnxlib.state import State

__all__ = ["TrainState"]

M = TypeVar("M")
TS = TypeVar("TS", bound="TrainState")


def _register(cls: type) -> None:
    """Make ``cls`` a frozen dataclass and a JAX pytree (static fields as metadata)."""
    dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    static = [f.name for f in fields if not f.metadata.get("pytree_node", True)]
    data = [f.name for f in fields if f.metadata.get("pytree_node", True)]
    jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=static)


class TrainState(Generic[M]):
    """Immutable training state: ``graphdef``, ``params``, ``opt_state``, ``step``, ``tx``.

    Build it with :meth:`create`; update it with :meth:`apply_gradients` (or
    :meth:`replace`); call the model with :meth:`apply`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import nnxlib as nnx
        >>> graphdef, params = nnx.split(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
        >>> state = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(0.1))
        >>> @jax.jit
        ... def train_step(state, x, y):
        ...     def loss_fn(params):
        ...         pred, _ = state.apply(params)(x)
        ...         return jnp.mean((pred - y) ** 2)
        ...     grads = jax.grad(loss_fn)(state.params)
        ...     return state.apply_gradients(grads)
        >>> state = train_step(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))
        >>> int(state.step)
        1
    """

    graphdef: Any = dataclasses.field(metadata={"pytree_node": False})
    params: State
    opt_state: Any
    step: jax.Array
    tx: optax.GradientTransformation = dataclasses.field(metadata={"pytree_node": False})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register(cls)

    @classmethod
    def create(cls: type[TS], graphdef: Any, *, params: State,
               tx: optax.GradientTransformation, step: int = 0, **kwargs: Any) -> TS:
        """A state at ``step`` with ``tx`` initialised on ``params``; ``kwargs`` fill the
        fields a subclass adds.

        Example:
            >>> import optax
            >>> import nnxlib as nnx
            >>> graphdef, params = nnx.split(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
            >>> state = nnx.TrainState.create(graphdef, params=params, tx=optax.adam(1e-3))
            >>> sorted(state.opt_state[0].mu)
            ['bias', 'kernel']
        """
        return cls(graphdef=graphdef, params=params, opt_state=tx.init(params),
                   step=jnp.asarray(step), tx=tx, **kwargs)

    def replace(self: TS, **changes: Any) -> TS:
        """A copy with some fields changed.

        Example:
            >>> import optax
            >>> import nnxlib as nnx
            >>> graphdef, params = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> state = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(1.0))
            >>> int(state.replace(step=5).step), int(state.step)
            (5, 0)
        """
        return dataclasses.replace(self, **changes)

    def apply(self, state: State | str, *states: State | str) -> Any:
        """``graphdef.apply(...)`` on the given states; a string names a field of this
        train state (``state.apply("params", "batch_stats")``).

        Example:
            >>> import jax.numpy as jnp, optax
            >>> import nnxlib as nnx
            >>> graphdef, params = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
            >>> ts = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(0.1))
            >>> y, (graphdef, new_params) = ts.apply("params")(jnp.ones((1, 2)))
            >>> y.shape
            (1, 3)
        """
        resolved = []
        for item in (state, *states):
            if isinstance(item, str):
                value = getattr(self, item, None)
                if not isinstance(value, State):
                    raise TypeError(
                        f"{type(self).__name__}.apply({item!r}): the field {item!r} must be "
                        f"a State, got {type(value).__name__}. Hint: name fields that hold "
                        "nnx.State (e.g. 'params'), or pass the State itself."
                    )
                item = value
            resolved.append(item)
        return self.graphdef.apply(*resolved)

    def apply_gradients(self: TS, grads: State, **kwargs: Any) -> TS:
        """One optax step: the new state has updated ``params``, ``opt_state`` and
        ``step + 1``; ``kwargs`` replace further fields (e.g. ``batch_stats``).

        Example:
            >>> import jax, jax.numpy as jnp, optax
            >>> import nnxlib as nnx
            >>> graphdef, params = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> ts = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(1.0))
            >>> grads = jax.tree.map(jnp.ones_like, ts.params)
            >>> new = ts.apply_gradients(grads)
            >>> (new.params["bias"][...] - ts.params["bias"][...]).tolist(), int(new.step)
            ([-1.0], 1)
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(params=params, opt_state=opt_state, step=self.step + 1, **kwargs)


_register(TrainState)
