"""Ahead-of-time stages of ``nnx.jit``: ``Traced``, ``Lowered`` and ``Compiled``.

``nnx.jit(f).trace(...)``, ``.lower(...)`` and ``.lower(...).compile()`` work as in
``jax.jit``, and the compiled stage is called with the same modules as ``f``: their
state goes in, changed state is written back, returned modules come out. Everything
else (``as_text()``, ``cost_analysis()``, ``jaxpr``, ...) is the JAX stage's own.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Counter(nnx.Module):
    ...     def __init__(self):
    ...         self.count = nnx.Variable(jnp.array(0))
    >>> @nnx.jit
    ... def step(m, x):
    ...     m.count[...] += 1
    ...     return x * 2
    >>> m = Counter()
    >>> compiled = step.lower(m, jnp.array(3.0)).compile()
    >>> float(compiled(m, jnp.array(3.0))), int(m.count[...])
    (6.0, 1)
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Stage", "Traced", "Lowered", "Compiled"]


class Stage:
    """A JAX stage plus the ``nnx.jit`` call it came from; attributes are the JAX
    stage's own (``as_text``, ``cost_analysis``, ``jaxpr``, ...).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> lowered = nnx.jit(lambda x: x + 1).lower(jnp.ones(2))
        >>> isinstance(lowered, Stage), "add" in lowered.as_text()
        (True, True)
    """

    def __init__(self, stage: Any, run: Callable[[Callable, tuple, dict], Any], key: Any):
        self._stage = stage
        self._run = run  # (call, args, kwargs) -> f's result, state written back
        self._key = key  # the structure the stage was made for

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_stage"), name)

    def _next(self, cls: type, stage: Any) -> Any:
        return cls(stage, self._run, self._key)

    def with_bound_args(self, bound: tuple) -> Stage:
        """The same stage, its calls taking ``bound`` as their first arguments (for
        ``nnx.jit_partial``/``nnx.cached_partial``).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> lowered = nnx.jit(lambda a, b: a + b).lower(jnp.ones(()), jnp.ones(()))
            >>> float(lowered.with_bound_args((jnp.ones(()),)).compile()(jnp.ones(())))
            2.0
        """
        run = self._run
        return type(self)(self._stage,
                          lambda call, args, kwargs, key: run(call, (*bound, *args), kwargs,
                                                              key), self._key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._stage!r})"


class Traced(Stage):
    """``nnx.jit(f).trace(*args)``: lower it with :meth:`lower`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> traced = nnx.jit(lambda x: x * 2).trace(jnp.ones(2))
        >>> len(traced.jaxpr.eqns) > 0, type(traced.lower()).__name__
        (True, 'Lowered')
    """

    def lower(self, *, lowering_platforms: tuple[str, ...] | None = None) -> Lowered:
        """Lower the traced program (as ``jax.jit(f).trace(...).lower()``)."""
        return self._next(Lowered, self._stage.lower(lowering_platforms=lowering_platforms))


class Lowered(Stage):
    """``nnx.jit(f).lower(*args)``: compile it with :meth:`compile`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> compiled = nnx.jit(lambda x: x * 2).lower(jnp.ones(2)).compile()
        >>> compiled(jnp.ones(2)).tolist()
        [2.0, 2.0]
    """

    def compile(self, compiler_options: Any = None) -> Compiled:  # noqa: A003  (jax's name)
        """Compile the lowered program (as ``jax.jit(f).lower(...).compile()``)."""
        return self._next(Compiled, self._stage.compile(compiler_options))


class Compiled(Stage):
    """A compiled ``nnx.jit`` program, called with the same kind of arguments as ``f``
    (modules included); it runs without tracing.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> compiled = nnx.jit(lambda m, x: m(x)).lower(model, jnp.ones((1, 2))).compile()
        >>> compiled(model, jnp.ones((1, 2))).shape
        (1, 3)
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self._stage, args, kwargs, self._key)
