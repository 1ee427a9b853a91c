"""Array values of variables: their abstract shape, and ``v[key] = x`` semantics.

Example:
    >>> import jax.numpy as jnp
    >>> aval_of(jnp.zeros((2, 3)))
    ((2, 3), dtype('float32'))
    >>> same_aval(jnp.zeros(2), jnp.ones(2)), aval_of(1.0) is None
    (True, True)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnxlib.errors import ShapeMismatchError

__all__ = ["aval_of", "same_aval", "written_value"]

_SCALAR_TYPES = (bool, int, float, complex)


def aval_of(value: Any) -> tuple | None:
    """``(shape, dtype)`` of an array-like value (arrays, tracers, ``ShapeDtypeStruct``),
    None for anything else (Python values, tuples recorded by ``sow``, ...)."""
    try:
        dtype, shape = value.dtype, value.shape
    except Exception:  # no array attributes (or ones that refuse to be read)
        return None
    if dtype is None or shape is None:
        return None
    return tuple(shape), dtype


def same_aval(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` have the same shape and dtype (or neither is an array)."""
    if a is b:
        return True
    return aval_of(a) == aval_of(b)


def written_value(old: Any, key: Any, new: Any, what: str) -> Any:
    """The value a variable holding ``old`` holds after ``v[key] = new``.

    JAX indexing semantics: an array keeps its shape and dtype (``new`` is cast and
    broadcast, a multi-device array keeps its placement); a shape that does not fit
    raises :class:`~nnxlib.errors.ShapeMismatchError` naming ``what``. A non-array value
    (``None``, a tuple) is replaced by ``v[...] = new``.

    Example:
        >>> import jax.numpy as jnp
        >>> written_value(jnp.zeros((2, 2)), ..., 1, "Param")
        Array([[1., 1.],
               [1., 1.]], dtype=float32)
    """
    if isinstance(old, _SCALAR_TYPES) and key is Ellipsis:
        if np.shape(new) != ():
            raise _shape_error(what, (), np.shape(new), key)
        return new
    if not hasattr(old, "shape") or not hasattr(old, "dtype"):
        if key is Ellipsis:  # a non-array value (None, a tuple, ...): replaced
            return new
        updated = np.array(old, copy=True)
        updated[key] = new
        return updated
    if key is Ellipsis:
        shape = tuple(old.shape)
        new_shape = np.shape(new)
        if new_shape != shape:
            try:
                fits = np.broadcast_shapes(new_shape, shape) == shape
            except ValueError:
                fits = False
            if not fits:
                raise _shape_error(what, shape, new_shape, key)
        elif getattr(new, "dtype", None) == old.dtype and isinstance(
                new, (jax.Array, np.ndarray)) and isinstance(new, type(old)):
            return new  # already the right array: store it as it is
        if isinstance(old, np.ndarray):
            return np.array(np.broadcast_to(np.asarray(new, old.dtype), shape))
        result = jnp.broadcast_to(jnp.asarray(new, old.dtype), shape)
        return _placed_like(result, old)
    try:
        if isinstance(old, np.ndarray):
            updated = np.array(old, copy=True)
            updated[key] = new
            return updated
        if _is_multi_device(old):  # keep the placement (explicit meshes insist on it)
            return old.at[key].set(new, out_sharding=old.sharding)
        return old.at[key].set(new)
    except (ValueError, TypeError) as error:
        raise ShapeMismatchError(
            f"Cannot write a value of shape {np.shape(new)} into {what}"
            f"[{_key_repr(key)}] (array of shape {tuple(old.shape)}, dtype {old.dtype}): "
            f"{error}. Hint: the value must broadcast to the indexed shape; use "
            "`v.value = x` to replace the whole array with one of another shape."
        ) from None


def _is_multi_device(value: Any) -> bool:
    """A concrete array placed on several devices (not a tracer)."""
    if isinstance(value, jax.core.Tracer):
        return False
    sharding = getattr(value, "sharding", None)
    return sharding is not None and len(sharding.device_set) > 1


def _placed_like(result: Any, old: Any) -> Any:
    """Keep a concrete sharded array's placement (eager writes must not gather it)."""
    if not _is_multi_device(old) or result.sharding == old.sharding:
        return result
    return jax.device_put(result, old.sharding)


def _key_repr(key: Any) -> str:
    return "..." if key is Ellipsis else repr(key)


def _shape_error(what: str, expected: tuple, actual: tuple, key: Any) -> Exception:
    return ShapeMismatchError(
        f"Cannot write a value of shape {actual} into {what}"
        f"[{_key_repr(key)}]: expected shape {expected} (or one that broadcasts to it). "
        "`v[...] = x` keeps the variable's shape and dtype and the value is unchanged. "
        "Hint: use `v.value = x` to replace the array with one of another shape."
    )
