"""Values held in JAX mutable array references (``jax.Ref``): what a ``ref=True``
variable stores.

A ref variable's raw value is a ``jax.Ref`` (an array value) or the value's pytree with
a ``jax.Ref`` at each array leaf (a dict of arrays, a tuple, ...). Plain JAX
transforms see the refs as the variable's pytree leaves, so a write ``ref[...] = x``
made inside ``jax.jit``/``jax.lax.scan``/... is a write into the caller's buffer.
This module is the one place that reads and writes such raw values:

* :func:`to_refs` wraps a value's array leaves in new refs;
* :func:`read` gives the value (arrays) back;
* :func:`write` stores a new value: in place where the old ref has the new leaf's
  shape and dtype, a new ref where it has not (a new key, a new shape).

Only public JAX names are used (``jax.new_ref``, ``jax.Ref``,
``jax.ensure_compile_time_eval``). One private attribute is read, with a fallback:
reading a concrete (eager) ref through ``ref[...]`` dispatches a JAX operation (about
45 us), which would make every eager forward pass slower than with plain variables;
the buffer a concrete ref currently holds is the same value, read in nanoseconds.

Example:
    >>> import jax, jax.numpy as jnp
    >>> raw = to_refs({"a": jnp.zeros(2), "n": 1})
    >>> isinstance(raw["a"], jax.Ref), isinstance(raw["n"], jax.Ref)
    (True, True)
    >>> raw2 = write(raw, {"a": jnp.ones(2), "n": 3, "new": jnp.zeros(())})
    >>> raw2["a"] is raw["a"], sorted(read(raw2))
    (True, ['a', 'n', 'new'])
    >>> read(raw2)["a"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from nnxlib.variables import _tracking

__all__ = ["is_ref", "holds_refs", "to_refs", "read", "write", "read_leaf", "write_leaf",
           "write_in_place",
           "graft", "RefAux"]

Ref = jax.Ref


def is_ref(x: Any) -> bool:
    """True for a ``jax.Ref`` (concrete or traced).

    Example:
        >>> import jax
        >>> is_ref(jax.new_ref(1.0)), is_ref(1.0)
        (True, False)
    """
    return isinstance(x, Ref)


def _is_container(x: Any) -> bool:
    return type(x) in (dict, list, tuple) or (isinstance(x, tuple) and hasattr(x, "_fields"))


def holds_refs(raw: Any) -> bool:
    """True when ``raw`` is ref-backed storage: a ref, or a container whose array leaves
    are all refs (an empty dict too: a ref variable's value may start as ``{}``).

    Example:
        >>> import jax
        >>> holds_refs({"a": jax.new_ref(1.0)}), holds_refs({"a": 1.0}), holds_refs({})
        (True, False, True)
    """
    if isinstance(raw, Ref):
        return True
    if _is_container(raw):
        for leaf in jax.tree_util.tree_leaves(raw, is_leaf=is_ref):
            if not isinstance(leaf, Ref) and (_refable(leaf) or isinstance(leaf, Tracer)):
                return False
        return True
    return False


def _refable(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def to_refs(value: Any) -> Any:
    """``value`` with each array leaf (arrays, Python numbers) in a new ``jax.Ref``;
    refs already there and other leaves (strings, functions, None) stay as they are.

    Example:
        >>> import jax
        >>> isinstance(to_refs(1.0), jax.Ref), to_refs("static")
        (True, 'static')
    """
    if isinstance(value, Ref):
        return value
    if _refable(value):
        return _new_ref(value)
    if _is_container(value):
        return jax.tree_util.tree_map(
            lambda x: _new_ref(x) if _refable(x) else x, value, is_leaf=is_ref)
    return value


def _new_ref(x: Any) -> Any:
    if isinstance(x, Ref):
        return x
    return jax.new_ref(x)


def read_leaf(ref: Any) -> Any:
    """The array a ref holds now (eagerly: no copy, no JAX operation; under a trace: the
    staged read).

    Example:
        >>> import jax
        >>> read_leaf(jax.new_ref(2.0)).item()
        2.0
    """
    # Eager and concrete: its current buffer, without dispatching a get. Under a trace
    # the read must be staged (a concrete ref closed over is read at run time).
    if type(ref) is Ref and _tracking.current_trace() == _tracking.EAGER:
        try:
            return ref._refs._buf
        except AttributeError:  # another JAX version's layout: the public read
            pass
    return ref[...]


def write_leaf(ref: Any, x: Any) -> None:
    """``ref[...] = x`` for ``x`` of the ref's shape and dtype. Eagerly, a concrete array
    on the same devices simply becomes the ref's buffer (what JAX's own write leaves
    there, without dispatching a swap: about 75 us, and a swap of a ref with its own
    buffer, which transforms can hand back unchanged, would donate it twice).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> r = jax.new_ref(jnp.zeros(2))
        >>> write_leaf(r, jnp.ones(2))
        >>> r[...].tolist()
        [1.0, 1.0]
    """
    if not write_in_place(ref, x):
        ref[...] = x


def write_in_place(ref: Any, x: Any) -> bool:
    """The eager fast path of :func:`write_leaf`: make the concrete array ``x`` (same
    shape, dtype and sharding) the buffer of the concrete ``ref``; False (nothing done)
    where that does not apply.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> r = jax.new_ref(jnp.zeros(2))
        >>> write_in_place(r, jnp.ones(2)), write_in_place(r, jnp.ones(3))
        (True, False)
    """
    if type(ref) is Ref and isinstance(x, jax.Array) and not isinstance(x, Tracer) \
            and _tracking.current_trace() == _tracking.EAGER:
        try:
            impl = ref._refs
            old = impl._buf
        except AttributeError:  # another JAX version's layout: the public write
            return False
        if old is x:
            return True
        if old.shape == x.shape and old.dtype == x.dtype and old.sharding == x.sharding:
            impl._buf = x
            return True
    return False


def read(raw: Any) -> Any:
    """The value held in ``raw`` (a ref, or a container of refs), as arrays.

    Example:
        >>> import jax
        >>> read({"a": jax.new_ref(1.0), "b": "x"})["b"]
        'x'
    """
    if isinstance(raw, Ref):
        return read_leaf(raw)
    if _is_container(raw):
        return jax.tree_util.tree_map(
            lambda x: read_leaf(x) if isinstance(x, Ref) else x, raw, is_leaf=is_ref)
    return raw


def _same_aval(ref: Any, x: Any) -> bool:
    try:
        return tuple(ref.shape) == tuple(np.shape(x)) and ref.dtype == _dtype_of(x)
    except Exception:
        return False


def _dtype_of(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    return jnp.asarray(x).dtype if dtype is None else dtype


def write(raw: Any, new: Any, *, outer: bool = False) -> Any:
    """Store ``new`` (a plain value) into the refs of ``raw``; return the raw value to
    keep: ``raw`` itself when every leaf was written in place, else a new container (or
    ref) that reuses the old refs where shapes and dtypes fit.

    ``outer``: the refs belong to code outside the current trace (a variable closed
    over, or the caller's side of a ``jax.jit`` argument); a new ref is then made
    outside the trace and written in it, so that it outlives the trace.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> r = jax.new_ref(jnp.zeros(2))
        >>> write(r, jnp.ones(2)) is r, write(r, jnp.ones(3)) is r
        (True, False)
    """
    if isinstance(new, Ref):
        return new
    if isinstance(raw, Ref):
        if _refable(new) or isinstance(new, Tracer):
            if _same_aval(raw, new):
                write_leaf(raw, new)
                return raw
            return _fresh_ref(new, outer)
        return to_refs(new)
    if _is_container(raw) and _is_container(new):
        old_leaves = _leaves_by_path(raw)
        changed = [False]

        def put(path: tuple, x: Any) -> Any:
            old = old_leaves.get(path)
            if isinstance(old, Ref) and (_refable(x) or isinstance(x, Tracer)):
                if _same_aval(old, x):
                    write_leaf(old, x)
                    return old
                changed[0] = True
                return _fresh_ref(x, outer)
            changed[0] = True
            if _refable(x) or isinstance(x, Tracer):
                return _fresh_ref(x, outer)
            return x

        result = jax.tree_util.tree_map_with_path(put, new, is_leaf=is_ref)
        if not changed[0] and jax.tree_util.tree_structure(result, is_leaf=is_ref) == \
                jax.tree_util.tree_structure(raw, is_leaf=is_ref):
            return raw
        return result
    return to_refs(new)


def _leaves_by_path(raw: Any) -> dict:
    pairs, _ = jax.tree_util.tree_flatten_with_path(raw, is_leaf=is_ref)
    return dict(pairs)


def _fresh_ref(x: Any, outer: bool) -> Any:
    """A new ref holding ``x``. Under a trace, for a variable that lives outside it,
    the ref is made outside the trace (concrete) and ``x`` written into it, so that the
    new leaf reaches the caller; for a variable of the trace itself, an ordinary ref."""
    if outer and _tracking.current_trace() != _tracking.EAGER:
        with jax.ensure_compile_time_eval():
            ref = jax.new_ref(jnp.zeros(np.shape(x), _dtype_of(x)))
        ref[...] = x
        return ref
    return jax.new_ref(x)


def graft(outer: Any, inner: Any) -> Any:
    """The raw value of a variable outside a trace after its traced view (whose raw
    value is ``inner``) changed structure: ``inner``'s layout, with the outside
    variable's own refs where ``inner`` holds traced views of them and the new
    (concrete) refs elsewhere.

    Example:
        >>> import jax
        >>> a, b = jax.new_ref(1.0), jax.new_ref(2.0)
        >>> graft({"a": a}, {"a": a, "b": b}) == {"a": a, "b": b}
        True
    """
    if isinstance(inner, Ref):
        return outer if isinstance(inner, Tracer) else inner
    outer_leaves = _leaves_by_path(outer) if _is_container(outer) else {(): outer}

    def pick(path: tuple, x: Any) -> Any:
        if isinstance(x, Tracer) and path in outer_leaves:
            return outer_leaves[path]
        return x

    return jax.tree_util.tree_map_with_path(pick, inner, is_leaf=is_ref)


class RefAux:
    """Pytree aux data of a ref-backed variable: its frozen metadata (all that equality
    and hashing see) and a weak reference to the variable flattened.

    Example:
        >>> RefAux(("tag",), None) == RefAux(("tag",), object())
        True
    """

    __slots__ = ("frozen", "origin")

    def __init__(self, frozen: Any, origin: Any):
        self.frozen, self.origin = frozen, origin

    def __eq__(self, other: Any) -> bool:
        return type(other) is RefAux and other.frozen == self.frozen

    def __hash__(self) -> int:
        return hash(self.frozen)

    def __repr__(self) -> str:
        return f"RefAux({self.frozen!r})"
