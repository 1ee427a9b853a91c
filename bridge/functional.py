"""``functional``: an nnxlib module class used through pure ``init``/``apply`` calls.

``functional(Linear)(2, 3)`` records the class and its constructor arguments without
building anything. ``init(rngs=...)`` builds the module once, keeps its graph definition
and returns its state; ``apply(state)`` rebuilds a module from that state and returns a
proxy whose calls (``apply(state)(x)``, ``apply(state).method(x)``) give ``(output,
(graphdef, new_state))``, as ``nnx.call`` does. The state passed in is never changed, so
``init``/``apply`` fit code written around pure functions (Linen-style training loops,
``jax.jit`` of plain functions).

This is flax.nnx's ``nnx.bridge.functional`` / ``nnx.wrappers.functional``.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> from bridge import functional
    >>> linear = functional(nnx.Linear)(2, 3)
    >>> state = linear.init(rngs=nnx.Rngs(0))
    >>> y, (graphdef, state) = linear.apply(state)(jnp.ones((1, 2)))
    >>> y.shape
    (1, 3)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, TypeVar

import nnxlib
from nnxlib import errors

__all__ = ["Functional", "functional"]

M = TypeVar("M", bound=nnxlib.Module)


@dataclasses.dataclass
class Functional(Generic[M]):
    """An nnxlib module class with its constructor arguments, used by pure calls.

    ``graphdef`` is None until :meth:`init` has run. Build one with :func:`functional`.

    Example:
        >>> import nnxlib as nnx
        >>> from bridge import Functional
        >>> f = Functional(nnx.Linear, None, (2, 3), {})
        >>> sorted(f.init(rngs=nnx.Rngs(0))), f.graphdef is not None
        (['bias', 'kernel'], True)
    """

    module_type: type[M]
    graphdef: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def init(self, *, rngs: nnxlib.Rngs | None = None) -> nnxlib.State:
        """Build the module (with ``rngs`` when given), keep its graph definition in
        ``self.graphdef`` and return its state.

        Example:
            >>> import nnxlib as nnx
            >>> from bridge import functional
            >>> state = functional(nnx.BatchNorm)(3).init(rngs=nnx.Rngs(0))
            >>> sorted(state)
            ['bias', 'mean', 'scale', 'var']
        """
        kwargs = dict(self.kwargs)
        if rngs is not None:
            kwargs["rngs"] = rngs
        module = self.module_type(*self.args, **kwargs)
        self.graphdef, state = nnxlib.split(module)
        return state

    def apply(self, *states: Any) -> Any:
        """A proxy that calls the module rebuilt from ``states`` (merged in order):
        ``apply(state)(x)`` or ``apply(state).method(x)`` returns ``(output, (graphdef,
        new_state))``; ``states`` are left unchanged.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> from bridge import functional
            >>> bn = functional(nnx.BatchNorm)(2)
            >>> params, stats = nnx.split_state(bn.init(rngs=nnx.Rngs(0)), nnx.Param, ...)
            >>> y, (_, new) = bn.apply(params, stats)(jnp.arange(4.0).reshape(2, 2))
            >>> [round(x, 4) for x in new["mean"].value.tolist()], stats["mean"].value.tolist()
            ([0.01, 0.02], [0.0, 0.0])
        """
        if self.graphdef is None:
            raise errors.LazyInitError(
                f"Functional({self.module_type.__name__}).apply: the module has not been "
                "built yet, so there is no graph definition to apply the state to. Hint: "
                "call .init(rngs=nnx.Rngs(0)) first and pass the state it returns.")
        if not states:
            raise TypeError(
                f"Functional({self.module_type.__name__}).apply() needs the state(s) to "
                "apply. Hint: apply(state), with the state that init() returned.")
        state = states[0] if len(states) == 1 else nnxlib.merge_state(*states)
        return nnxlib.call((self.graphdef, state))


def functional(cls: type[M]) -> Callable[..., Functional[M]]:
    """A constructor of :class:`Functional` for the module class ``cls``:
    ``functional(cls)(*args, **kwargs)`` records the arguments; nothing is built until
    :meth:`Functional.init`.

    Example:
        >>> import nnxlib as nnx
        >>> from bridge import functional
        >>> functional(nnx.Linear)(2, 3, use_bias=False)
        Functional(module_type=<class 'nnxlib.nn.linear.Linear'>, graphdef=None, args=(2, 3), kwargs={'use_bias': False})
    """

    def make(*args: Any, **kwargs: Any) -> Functional[M]:
        return Functional(cls, None, args, kwargs)

    make.__name__ = make.__qualname__ = f"functional({cls.__name__})"
    return make
