"""The sharding side of ``Variable``: ``v.sharding`` and the axis hooks of the transforms.

Kept apart from :mod:`nnxlib.variables` (whose ``Variable`` inherits
:class:`ShardedVariable`). The annotation itself is the ``out_sharding`` metadata entry
(see :mod:`nnxlib.variables._placement`); ``sharding`` is what JAX says about the held value, as
in flax.nnx 0.12, and ``add_axis``/``remove_axis`` are what ``vmap``/``scan`` call after
they changed that annotation for a mapped axis.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> w = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", None))
    >>> w.out_sharding, type(w.sharding).__name__
    (('embed', None), 'SingleDeviceSharding')
"""

from __future__ import annotations

from typing import Any

from nnxlib.variables._metadata import hooks_of

__all__ = ["ShardedVariable"]


class ShardedVariable:
    """Mixin of :class:`~nnxlib.Variable`: the value's sharding and the axis hooks.

    The host class provides ``_metadata`` and ``_stored_value()`` (the held value, or
    the error of a variable whose transform has finished).

    Example:
        >>> import nnxlib as nnx
        >>> issubclass(nnx.Param, ShardedVariable)
        True
    """

    __slots__ = ()
    _metadata: dict

    def _stored_value(self) -> Any:  # pragma: no cover - provided by Variable
        raise NotImplementedError

    @property
    def sharding(self) -> Any:
        """The JAX sharding of the held value (``value.sharding``), as in flax.nnx 0.12.

        A ``NamedSharding`` for a variable placed on a mesh; None for a value without
        one (a Python number, a NumPy array, an abstract value with no sharding). The
        sharding *annotation* is the ``out_sharding`` metadata.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
            >>> with jax.set_mesh(mesh):
            ...     w = nnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"))
            >>> w.sharding.spec, w.out_sharding
            (P(None, 'model'), (None, 'model'))
            >>> nnx.Param(1.0).sharding is None
            True
        """
        return getattr(self._stored_value(), "sharding", None)

    def add_axis(self, axis_index: int, axis_name: Any) -> None:
        """Called by ``vmap``/``scan``/``transform_metadata`` after they added the mapped
        axis ``axis_name`` at ``axis_index`` to this variable's sharding metadata.

        It runs the ``on_add_axis`` hooks; a subclass may override it (and call
        ``super().add_axis``) to keep metadata of its own in step.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> class Tagged(nnx.Param):
            ...     def add_axis(self, axis_index, axis_name):
            ...         super().add_axis(axis_index, axis_name)
            ...         self.seen = (axis_index, axis_name)
            >>> v = Tagged(jnp.ones((2, 3)), out_sharding=("a", "b"))
            >>> _ = nnx.spmd.add_axis([v], 0, {nnx.PARTITION_NAME: "layers"})
            >>> v.out_sharding, v.seen
            (('layers', 'a', 'b'), (0, 'layers'))
        """
        for hook in hooks_of(self._metadata, "on_add_axis"):
            hook(self, axis_index, axis_name)

    def remove_axis(self, axis_index: int, axis_name: Any) -> None:
        """The inverse of :meth:`add_axis`: called after the mapped axis was removed from
        the sharding metadata; runs the ``on_remove_axis`` hooks.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> seen = []
            >>> v = nnx.Param(jnp.ones((4, 2)), out_sharding=("layers", "a"),
            ...               on_remove_axis=lambda var, i, name: seen.append((i, name)))
            >>> _ = nnx.spmd.remove_axis([v], 0, {nnx.PARTITION_NAME: "layers"})
            >>> v.out_sharding, seen
            (('a',), [(0, 'layers')])
        """
        for hook in hooks_of(self._metadata, "on_remove_axis"):
            hook(self, axis_index, axis_name)
