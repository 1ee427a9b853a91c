"""Raw access to a variable's stored value: ``get_raw_value``/``set_raw_value``
(flax.nnx 0.12's names), which skip the value hooks and any ``get_value``/``set_value``
a subclass overrides, and the ref-backed and immutable modes (``ref=True``,
``mutable=False``). A mixin of :class:`nnxlib.Variable`.

A variable created with ``ref=True`` (or ``hijax=True``, the same mode here) stores its
value in JAX mutable array references (:mod:`nnxlib.variables._refs`). Its raw value is then a
``jax.Ref`` (or the value's pytree of refs); a read is the ref's current value and a
write goes into the ref, so a plain ``jax.jit``/``jax.lax.scan``/... that receives the
variable (as an argument or by closure) mutates the caller's buffer. A variable of an
immutable view (``mutable=False``) holds plain arrays and refuses writes.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Shifted(nnx.Param):
    ...     def get_value(self, **kwargs):
    ...         return super().get_value(**kwargs) + 3
    >>> Shifted(1)[...], Shifted(1).get_raw_value()
    (4, 1)
    >>> count = nnx.Variable(jnp.array(0), ref=True)
    >>> isinstance(count.get_raw_value(), jax.Ref)
    True
    >>> jax.jit(lambda: count.__setitem__(..., count[...] + 1))()
    >>> count[...].item()
    1
"""

from __future__ import annotations

import weakref
from typing import Any

from nnxlib.errors import ImmutableVariableError, format_path
from nnxlib.variables import _refs, _tracking

__all__ = ["RawValueAccess", "HijaxVariable", "is_ref_mode"]


def is_ref_mode(metadata: dict) -> bool:
    """True when variable ``metadata`` asks for ref-backed storage (``ref`` or ``hijax``).

    Example:
        >>> is_ref_mode({"ref": True}), is_ref_mode({"hijax": True}), is_ref_mode({})
        (True, True, False)
    """
    return bool(metadata) and bool(metadata.get("ref") or metadata.get("hijax"))


class RawValueAccess:
    """``get_raw_value``/``set_raw_value`` and the ref/immutable modes, for a class with
    ``_raw_value``, ``_metadata`` and ``_store(value, what, check)`` (the variable's one
    write path, which hands ref-backed and immutable variables to :meth:`_store_mode`)."""

    __slots__ = ()

    def get_raw_value(self) -> Any:
        """The stored value itself: no get hooks, no overridden ``get_value``; for a
        ``ref=True`` variable the ``jax.Ref`` (or pytree of refs) holding it.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Param(1.0, on_get_value=lambda v, x: 2 * x).get_raw_value()
            1.0
        """
        return self._raw_value  # type: ignore[attr-defined]

    def set_raw_value(self, value: Any, *, _unsafe_bypass_check: bool = False) -> None:
        """Store ``value`` as is: no set hooks, no overridden ``set_value``, no cast (and
        with ``_unsafe_bypass_check`` no trace checks). A ref-backed variable given a
        plain value writes it into its refs; given a ``jax.Ref`` it holds that ref.

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0)
            >>> p.set_raw_value(2.0)
            >>> p.get_raw_value()
            2.0
        """
        self._store(value, "set the raw value",  # type: ignore[attr-defined]
                    check=not _unsafe_bypass_check)

    @property
    def mutable(self) -> bool:
        """False for a variable of an immutable view (``with_vars(m, mutable=False)``):
        its value cannot be written.

        Example:
            >>> import nnxlib as nnx
            >>> v = nnx.Variable(1.0)
            >>> v.mutable, nnx.with_vars(v, mutable=False).mutable
            (True, False)
        """
        return self._metadata.get("mutable", True) is not False  # type: ignore[attr-defined]

    @classmethod
    def from_metadata(cls, value: Any, attributes: dict) -> Any:
        """A variable of this type holding ``value`` with ``attributes`` as its whole
        metadata (flax's constructor for rebuilt variables: no hooks run); ``ref`` or
        ``hijax`` true makes it ref-backed.

        Example:
            >>> import nnxlib as nnx
            >>> v = nnx.Param.from_metadata(1.0, {"tag": "a", "ref": True, "hijax": False})
            >>> type(v).__name__, v.tag, v.ref, v.hijax
            ('Param', 'a', True, False)
        """
        metadata = {k: v for k, v in attributes.items()
                    if not (k in ("hijax", "ref") and not v)
                    and not (k == "eager_sharding" and v is True)}
        return _NEW_WITH_MODE[0](cls, value, metadata)

    # ----------------------------------------------------------- ref-backed storage
    def _read_mode(self, raw: Any) -> Any:
        """The value of a ref-backed raw value (arrays)."""
        return _refs.read(raw)

    def _store_mode(self, new: Any, what: str, check: bool) -> bool:
        """The write of a ref-backed or immutable variable; False: not one (the caller
        stores ``new`` the ordinary way)."""
        metadata = self._metadata  # type: ignore[attr-defined]
        if metadata.get("mutable", True) is False:
            raise ImmutableVariableError(
                f"Cannot {what} of the {type(self).__name__} at {self._where()}: it belongs "
                "to an immutable view (nnx.with_vars(..., mutable=False)), made to be "
                "differentiated or read. Hint: write into the original (mutable) model, "
                "or make a mutable view with nnx.with_vars(view, mutable=True).")
        old = self._raw_value  # type: ignore[attr-defined]
        if not is_ref_mode(metadata) or not _refs.holds_refs(old):
            return False
        if check:
            _tracking.check_value(self, new, what)
        # the common eager write (a training step's BatchNorm statistics): an array of the
        # ref's shape becomes its buffer; anything else takes the general path
        if not _refs.write_in_place(old, new):
            self._put(new)
        return True

    def _put(self, new: Any) -> None:
        """Write ``new`` (a plain value, or a ref to hold) into this variable: into its
        refs when it is ref-backed, else into the slot. The raw write every path uses."""
        old = self._raw_value  # type: ignore[attr-defined]
        if not _refs.holds_refs(old):
            if is_ref_mode(self._metadata) and not _refs.holds_refs(new):  # type: ignore[attr-defined]
                new = _refs.to_refs(new) if _tracking.current_trace() == _tracking.EAGER \
                    else new
            object.__setattr__(self, "_raw_value", new)
            if not _same_structure(old, new):
                _tracking.structure_changed(self)
            return
        origin = self._origin()
        outer = origin is not None or self._is_outer()
        raw = _refs.write(old, new, outer=outer)
        if raw is old:
            return
        object.__setattr__(self, "_raw_value", raw)
        _tracking.structure_changed(self)
        while origin is not None:  # a traced view of a variable outside: give it the leaf
            grafted = _refs.graft(origin._raw_value, raw)
            object.__setattr__(origin, "_raw_value", grafted)
            _tracking.structure_changed(origin)
            raw, origin = grafted, origin._origin()

    def _origin(self) -> Any:
        try:
            ref = self._nnx_origin  # type: ignore[attr-defined]
        except AttributeError:
            return None
        return None if ref is None else ref()

    def _is_outer(self) -> bool:
        trace = self._nnx_trace  # type: ignore[attr-defined]
        return trace is not None and trace != _tracking.current_trace()

    def _where(self) -> str:
        try:
            path = self._nnx_path  # type: ignore[attr-defined]
        except AttributeError:
            path = None
        return "an unknown path" if path is None else repr(format_path(path))


_NEW_WITH_MODE: list = [None]  # variables.new_with_mode, set by nnxlib.variables


class _HijaxMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, RawValueAccess) and \
            bool(obj._metadata.get("hijax"))  # type: ignore[attr-defined]


class HijaxVariable(metaclass=_HijaxMeta):
    """flax.nnx's class of ``hijax=True`` variables, as a check only: nnxlib keeps one
    class per kind (``Param``, ...) and ``hijax=True`` is a mode of it (ref-backed, the
    same as ``ref=True``), so ``isinstance(v, HijaxVariable)`` is ``v.hijax``.

    Example:
        >>> import nnxlib as nnx
        >>> v = nnx.Param(1.0, hijax=True)
        >>> isinstance(v, HijaxVariable), isinstance(nnx.Param(1.0), HijaxVariable)
        (True, False)
        >>> type(v).__name__
        'Param'
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("HijaxVariable is a check, not a class to create. Hint: create "
                        "the kind you want with hijax=True, e.g. nnx.Param(x, hijax=True).")


def _same_structure(old: Any, new: Any) -> bool:
    if old is new:
        return True
    a, b = getattr(old, "shape", None), getattr(new, "shape", None)
    return a is not None and b is not None and tuple(a) == tuple(b) and \
        getattr(old, "dtype", None) == getattr(new, "dtype", None)


def origin_ref(var: Any) -> Any:
    """A weak reference to ``var`` (for views rebuilt by JAX from its refs)."""
    return weakref.ref(var)
