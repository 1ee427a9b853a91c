"""Bookkeeping shared by every mutable graph object: structure stamps and trace checks.

Two facts decide whether cached work about a module graph is still valid:

* **Structure stamps.** A global counter, ``EPOCH[0]``, advances on every *structural*
  mutation anywhere (a new attribute, a deleted attribute, a changed container, changed
  variable metadata). The mutated object records the new counter value as its stamp.
  A cached split plan remembers the counter value it was built at; if the counter has not
  moved, the plan is valid in O(1). If it has moved, the plan is still valid when none of
  the objects it covers carries a newer stamp (an O(n) check, far cheaper than a re-walk).
  Assigning a new array to an existing variable is *not* structural and never advances it.

  :func:`structure_changed` is the only way to record a structural change: every mutation
  path (``Object.__setattr__``/``__delattr__``, every ``List``/``Dict`` method, variable
  metadata writes, in-place rebuilds by ``update``/transforms) calls it, and nothing else
  writes a stamp. :func:`init_tracked` and :func:`init_fresh` give new objects theirs.

* **Trace checks.** Every object remembers the JAX trace it was created in. Mutating an
  object from inside a deeper trace than the one it belongs to (for example a module
  captured by closure and mutated inside ``nnxlib.jit``) would leak tracers into the
  outer world, so it raises :class:`~nnxlib.errors.TraceContextError`; so does storing a
  tracer whose trace has already finished (:func:`check_value`).

Threads: stamps come from one ``itertools.count`` (``next`` on it is atomic in CPython),
so every stamp is unique and later stamps are larger. ``EPOCH[0]`` may briefly lag behind
the newest stamp when two threads race, which can only make a plan look *older* than it
is (a harmless re-check), never newer; separate threads working on separate models need
no lock.
"""

from __future__ import annotations

import itertools
from typing import Any

from jax.core import Tracer
from jax.extend.core import get_opaque_trace_state as current_trace
from jax.extend.core import take_current_trace

from nnxlib.errors import TraceContextError

__all__ = ["EAGER", "EPOCH", "EXPIRED", "current_trace", "TraceContextError", "check_trace",
           "structure_changed", "init_tracked", "init_fresh", "check_value"]

#: The trace state outside every transform: objects made by eager code carry it.
EAGER = current_trace()

#: The global structure epoch, boxed in a list so that importers share one cell.
EPOCH = [0]
_next_stamp = itertools.count(1).__next__

_SET = object.__setattr__


def structure_changed(obj: Any) -> None:
    """Record that ``obj``'s structure changed: every cached plan covering it re-walks.

    The single entry point for structural changes; it is cheap (an increment and a slot
    write), so callers may call it whenever in doubt.
    """
    stamp = _next_stamp()
    EPOCH[0] = stamp
    _SET(obj, "_nnx_stamp", stamp)


def init_tracked(obj: Any) -> None:
    """Bookkeeping of a graph node created by user code, in the current trace.

    A new object is in no cached plan, so creating one changes no structure; it joins a
    graph only by being stored into an object of it, which is a structural change of
    that owner.
    """
    init_fresh(obj, current_trace())


def init_fresh(obj: Any, trace: Any) -> None:
    """Bookkeeping of a node built by merge/unflatten.

    It is in no cached plan yet, so it takes the current epoch as its stamp instead of
    advancing it (which would make every cached plan re-validate on its next use).
    """
    _SET(obj, "_nnx_stamp", EPOCH[0])
    _SET(obj, "_nnx_trace", trace)
    _SET(obj, "_nnx_plan", None)
    _SET(obj, "_nnx_joint", None)


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
    name = type(obj).__name__
    if obj._nnx_trace is EXPIRED:  # type: ignore[attr-defined]
        raise TraceContextError(
            f"Cannot mutate {name} from a different trace level: cannot {what} of a "
            f"{name} that was created inside a transform which has already returned (it "
            "escaped the transform). Hint: return the module from the transformed "
            "function instead of storing it."
        )
    if obj._nnx_trace != current_trace():  # type: ignore[attr-defined]
        raise TraceContextError(
            f"Cannot mutate {name} from a different trace level: cannot {what} of a "
            f"{name} created outside the current transform: it was captured from an "
            "outer trace (for example by closure). Hint: pass the module or variable as "
            "an argument to the transformed function instead of closing over it."
        )


def is_leaked_tracer(value: Any) -> bool:
    """True for a tracer whose transform has already finished (it can never be used).

    Outside every transform no tracer is alive, so any tracer is a leaked one; inside,
    a tracer whose trace JAX has invalidated is.
    """
    if not isinstance(value, Tracer):
        return False
    trace = getattr(value, "_trace", None)
    is_valid = getattr(trace, "is_valid", None)
    if is_valid is not None and not is_valid():
        return True
    with take_current_trace() as current:
        return type(current).__name__ == "EvalTrace"


def check_value(owner: object, value: Any, what: str) -> None:
    """Refuse to store a tracer of a finished transform (it would fail much later)."""
    if is_leaked_tracer(value):
        raise TraceContextError(
            f"Cannot {what} of a {type(owner).__name__} to a tracer of a transform that "
            f"has already returned ({type(value).__name__}). It leaked out of jit/grad/"
            "vmap/... (stored in a global or a closure). Hint: return the value from the "
            "transformed function and assign the returned (concrete) array instead."
        )
