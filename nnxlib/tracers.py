"""Which JAX trace an object belongs to (``nnx.tracers``).

Every nnxlib object records the trace it was created in; mutating it from a deeper
trace raises :class:`~nnxlib.errors.TraceContextError`.

Example:
    >>> from nnxlib.tracers import TraceState
    >>> TraceState().is_valid()
    True
"""

from __future__ import annotations

from typing import Any

from nnxlib.variables._tracking import current_trace

__all__ = ["TraceState", "current_jax_trace"]


def current_jax_trace() -> Any:
    """An opaque token for the JAX trace running now (compare with ``==``).

    Example:
        >>> from nnxlib.tracers import current_jax_trace
        >>> current_jax_trace() == current_jax_trace()
        True
    """
    return current_trace()


class TraceState:
    """The trace current when it was created; ``is_valid()`` says whether it is current.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnxlib.tracers import TraceState
        >>> outer = TraceState()
        >>> def f(x):
        ...     return jnp.asarray(outer.is_valid())
        >>> bool(jax.jit(f)(1.0)), outer.is_valid()
        (False, True)
    """

    __slots__ = ("_trace",)

    def __init__(self) -> None:
        self._trace = current_trace()

    def is_valid(self) -> bool:
        return self._trace == current_trace()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TraceState) and other._trace == self._trace

    def __hash__(self) -> int:
        return hash(TraceState)
