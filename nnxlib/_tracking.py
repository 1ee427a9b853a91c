"""Bookkeeping shared by every mutable graph object: structure stamps and trace checks.

Two facts decide whether cached work about a module graph is still valid:

* **Structure stamps.** A global counter, ``EPOCH[0]``, is bumped by every *structural*
  mutation anywhere (a new attribute, a deleted attribute, a changed container, changed
  variable metadata). The mutated object records the new counter value as its stamp.
  A cached split plan remembers the counter value it was built at; if the counter has not
  moved, the plan is valid in O(1). If it has moved, the plan is still valid when none of
  the objects it covers carries a newer stamp (an O(n) check, far cheaper than a re-walk).
  Assigning a new array to an existing variable is *not* structural and never bumps.

* **Trace checks.** Every object remembers the JAX trace it was created in. Mutating an
  object from inside a deeper trace than the one it belongs to (for example a module
  captured by closure and mutated inside ``nnxlib.jit``) would leak tracers into the
  outer world, so it raises :class:`TraceContextError`.
"""

from __future__ import annotations

from jax.extend.core import get_opaque_trace_state as current_trace

from nnxlib.errors import TraceContextError

__all__ = ["EPOCH", "EXPIRED", "bump", "current_trace", "TraceContextError", "check_trace"]

#: The global structure epoch, boxed in a list so that importers share one counter.
EPOCH = [0]


def bump() -> int:
    """Advance the structure epoch and return the new value (the caller's new stamp)."""
    EPOCH[0] += 1
    return EPOCH[0]


class _ExpiredTrace:
    """The trace of objects built inside a finished transform: equal to no live trace."""

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "<expired trace>"


EXPIRED = _ExpiredTrace()


def check_trace(obj: object, what: str) -> None:
    """Raise :class:`TraceContextError` unless ``obj`` belongs to the current trace."""
    if obj._nnx_trace is EXPIRED:  # type: ignore[attr-defined]
        raise TraceContextError(
            f"Cannot {what} of a {type(obj).__name__} that was created inside a "
            "transform which has already returned (it escaped the transform). Hint: "
            "return the module from the transformed function instead of storing it."
        )
    if obj._nnx_trace != current_trace():  # type: ignore[attr-defined]
        raise TraceContextError(
            f"Cannot {what} of a {type(obj).__name__} created outside the current "
            "transform: it was captured from an outer trace (for example by closure). "
            "Hint: pass the module or variable as an argument to the transformed "
            "function instead of closing over it."
        )
