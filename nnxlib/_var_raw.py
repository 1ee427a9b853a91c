"""Raw access to a variable's stored value: ``get_raw_value``/``set_raw_value``
(flax.nnx 0.12's names), which skip the value hooks and any ``get_value``/``set_value``
a subclass overrides. A mixin of :class:`nnxlib.Variable`.

Example:
    >>> import nnxlib as nnx
    >>> class Shifted(nnx.Param):
    ...     def get_value(self, **kwargs):
    ...         return super().get_value(**kwargs) + 3
    >>> Shifted(1)[...], Shifted(1).get_raw_value()
    (4, 1)
"""

from __future__ import annotations

from typing import Any

__all__ = ["RawValueAccess"]


class RawValueAccess:
    """``get_raw_value``/``set_raw_value`` for a class with ``_raw_value`` and
    ``_store(value, what, check)`` (the variable's one write path)."""

    __slots__ = ()

    def get_raw_value(self) -> Any:
        """The stored value itself: no get hooks, no overridden ``get_value``.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Param(1.0, on_get_value=lambda v, x: 2 * x).get_raw_value()
            1.0
        """
        return self._raw_value  # type: ignore[attr-defined]

    def set_raw_value(self, value: Any, *, _unsafe_bypass_check: bool = False) -> None:
        """Store ``value`` as is: no set hooks, no overridden ``set_value``, no cast (and
        with ``_unsafe_bypass_check`` no trace checks).

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0)
            >>> p.set_raw_value(2.0)
            >>> p.get_raw_value()
            2.0
        """
        self._store(value, "set the raw value",  # type: ignore[attr-defined]
                    check=not _unsafe_bypass_check)
