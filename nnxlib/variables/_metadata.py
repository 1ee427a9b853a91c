"""Metadata that travels from an initializer to its variable, and the value hooks.

:func:`with_metadata` wraps an initializer so that its result is a
:class:`VariableMetadata` (the array plus metadata); a ``Variable`` built from it takes
both. Among the metadata, flax.nnx 0.12 gives five keys a meaning, the *hooks*:

* ``on_create_value(variable, value) -> value``: once, when the variable is created;
* ``on_get_value(variable, value) -> value``: on every read (``v[...]``, ``v.value``,
  ``v.get_value()``, arithmetic);
* ``on_set_value(variable, value) -> value``: on every write (``v.value = x``,
  ``v[...] = x``, ``v.set_value``), before the value is stored;
* ``on_add_axis(variable, axis, name)`` / ``on_remove_axis(variable, axis, name)``: when
  ``vmap``/``scan`` add or remove a mapped axis (run by :mod:`nnxlib.spmd`).

Each entry is one function or a tuple of them, applied in order. Transforms move raw
values without hooks (a hook is for the user's reads and writes, not for splitting).

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> p = nnx.Param(jnp.ones(2), on_get_value=lambda v, x: 2 * x)
    >>> p[...]
    Array([2., 2.], dtype=float32)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

__all__ = ["VariableMetadata", "with_metadata", "with_partitioning", "HOOK_KEYS"]

HOOK_KEYS = ("on_set_value", "on_get_value", "on_create_value", "on_add_axis",
             "on_remove_axis")
_VALUE_HOOKS = frozenset(HOOK_KEYS[:3])

#: ``[True]`` once any variable has had a value hook: until then reads and writes skip
#: the hook lookup entirely (one list read).
HOOKS_IN_USE = [False]


def hooks_of(metadata: Mapping, key: str) -> tuple:
    """The hooks stored under ``key``, as a tuple (one function or a sequence of them).

    Example:
        >>> hooks_of({"on_get_value": abs}, "on_get_value")
        (<built-in function abs>,)
        >>> hooks_of({}, "on_get_value")
        ()
    """
    found = metadata.get(key)
    if found is None:
        return ()
    return tuple(found) if isinstance(found, (tuple, list)) else (found,)


def note_hooks(metadata: Mapping) -> None:
    """Switch hook lookups on when ``metadata`` holds a value hook.

    Example:
        >>> note_hooks({"out_sharding": ("embed",)})     # no hook: nothing to do
    """
    if not HOOKS_IN_USE[0] and not _VALUE_HOOKS.isdisjoint(metadata):
        HOOKS_IN_USE[0] = True


def run_value_hooks(variable: Any, metadata: Mapping, key: str, value: Any) -> Any:
    """``value`` passed through the hooks under ``key``, in order.

    Example:
        >>> double, inc = (lambda v, x: 2 * x), (lambda v, x: x + 1)
        >>> run_value_hooks(None, {"on_set_value": (double, inc)}, "on_set_value", 3)
        7
    """
    for hook in hooks_of(metadata, key):
        value = hook(variable, value)
    return value


class VariableMetadata:
    """A value plus metadata, produced by :func:`with_metadata` initializers.

    A ``Variable`` built from a ``VariableMetadata`` takes its value and its metadata
    (hooks included), so an initializer can decide sharding (or any other metadata) for
    the layer that calls it.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> meta = {"out_sharding": ("embed",)}
        >>> p = nnx.Param(nnx.VariableMetadata(jnp.zeros(2), metadata=meta))
        >>> p.out_sharding
        ('embed',)
    """

    __slots__ = ("raw_value", "metadata")

    def __init__(self, raw_value: Any, on_set_value: Any = (), on_get_value: Any = (),
                 on_create_value: Any = (), on_add_axis: Any = (), on_remove_axis: Any = (),
                 metadata: Mapping[str, Any] | None = None):
        self.raw_value = raw_value
        self.metadata = dict(metadata or {})
        for key, hooks in zip(HOOK_KEYS, (on_set_value, on_get_value, on_create_value,
                                          on_add_axis, on_remove_axis)):
            if hooks:
                hooks = tuple(hooks) if isinstance(hooks, (tuple, list)) else (hooks,)
                for hook in hooks:
                    if not callable(hook):
                        raise TypeError(
                            f"VariableMetadata: {key} expects a function (variable, value)"
                            f" -> value or a tuple of them, got {type(hook).__name__}. "
                            "Hint: pass other metadata as metadata={...}.")
                self.metadata[key] = hooks

    @property
    def value(self) -> Any:
        """The wrapped value (``raw_value``).

        Example:
            >>> VariableMetadata(3).value
            3
        """
        return self.raw_value

    def __repr__(self) -> str:
        return f"VariableMetadata(value={self.raw_value!r}, metadata={self.metadata!r})"


def with_metadata(initializer: Callable[..., Any], on_set_value: Any = (),
                  on_get_value: Any = (), on_create_value: Any = (), on_add_axis: Any = (),
                  on_remove_axis: Any = (), **metadata: Any) -> Callable[..., Any]:
    """Wrap an initializer so the variable built from its result carries ``metadata``
    (and the given hooks, see the module docstring).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> init = nnx.with_metadata(nnx.initializers.ones, out_sharding=("embed", "mlp"))
        >>> p = nnx.Param(init(jax.random.key(0), (2, 3)))
        >>> p.out_sharding, p.shape
        (('embed', 'mlp'), (2, 3))
        >>> halve = nnx.with_metadata(nnx.initializers.ones, on_get_value=lambda v, x: x / 2)
        >>> float(nnx.Param(halve(jax.random.key(0), ()))[...])
        0.5
    """
    hooks = (on_set_value, on_get_value, on_create_value, on_add_axis, on_remove_axis)

    def wrapped(*args: Any, **kwargs: Any) -> VariableMetadata:
        return VariableMetadata(initializer(*args, **kwargs), *hooks, metadata=metadata)

    wrapped.__wrapped__ = initializer  # type: ignore[attr-defined]
    return wrapped


def with_partitioning(
    initializer: Callable[..., Any], sharding: tuple, mesh: Any = None, **metadata: Any
) -> Callable[..., Any]:
    """Shorthand for ``with_metadata(initializer, out_sharding=sharding, ...)``.

    ``sharding`` names one mesh axis (or logical axis name, or None) per dimension; it
    is stored as ``out_sharding`` (flax 0.12's key; the deprecated ``v.sharding_names``
    reads it too).
    ``mesh``, when given, is kept as the ``mesh`` metadata entry, and the variable is
    created sharded on it (see :mod:`nnxlib.spmd`).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> init = nnx.with_partitioning(nnx.initializers.zeros, ("embed",))
        >>> p = nnx.Param(init(jax.random.key(0), (4,)))
        >>> p.out_sharding
        ('embed',)
    """
    if mesh is not None:
        metadata["mesh"] = mesh
    if not isinstance(sharding, (jax.sharding.PartitionSpec, jax.sharding.Sharding)):
        sharding = tuple(sharding)
    return with_metadata(initializer, out_sharding=sharding, **metadata)
