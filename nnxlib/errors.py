"""Named exception classes, and the one formatter for the paths they name.

Every error nnxlib raises on bad input says *where* (the attribute path, written as a
user would write it: ``model.blocks[3].linear.kernel``), *what was expected*, *what was
found*, and *how to fix it*. The classes below let users catch a kind of failure; each
also subclasses the builtin exception that Python code would expect for it (a shape
mismatch is a ``ValueError``, a missing stream a ``KeyError``...), so ``except
ValueError`` keeps working. Where flax.nnx (or flax) has a class of the same meaning,
the name is flax's.

This is the bottom layer of the package: it imports nothing from nnxlib.

Example:
    >>> import nnxlib as nnx
    >>> nnx.errors.format_path(("blocks", 3, "linear", "kernel"), root="model")
    'model.blocks[3].linear.kernel'
    >>> issubclass(nnx.errors.StateMismatchError, ValueError)
    True
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = [
    "NNXError",
    "TraceContextError",
    "StateMismatchError",
    "ShapeMismatchError",
    "ImmutableVariableError",
    "GraphStructureError",
    "SharedReferenceError",
    "InvalidFilterError",
    "MissingRngStreamError",
    "MissingRngStreamAttributeError",
    "ShardingError",
    "LazyInitError",
    "InvalidArgumentError",
    "NotSupportedError",
    "CacheNotInitializedError",
    "format_path",
]


def format_path(path: Iterable[Any], root: str = "") -> str:
    """Write a state path the way Python code reaches it: ``a.b[0].c``.

    Integer keys (list items, layer indices) are written ``[i]``; string keys that are
    identifiers ``.name``; any other key ``[repr(key)]``. The empty path is the root
    itself (``root``, or ``<root>`` when no root name is given).

    Example:
        >>> format_path(("layers", 0, "kernel"))
        'layers[0].kernel'
        >>> format_path(("heads", "a b"), root="m")
        "m.heads['a b']"
        >>> format_path(())
        '<root>'
    """
    out = root
    for key in path:
        if isinstance(key, int) and not isinstance(key, bool):
            out += f"[{key}]"
        elif isinstance(key, str) and key.isidentifier():
            out += f".{key}" if out else key
        else:
            out += f"[{key!r}]"
    return out or "<root>"


class NNXError(Exception):
    """Base class of the errors nnxlib raises on bad input.

    Example:
        >>> issubclass(TraceContextError, NNXError)
        True
    """


class TraceContextError(NNXError):
    """An object is used from a JAX trace it does not belong to (flax's name).

    Two cases: mutating, inside a transform, a module captured from outside it (pass it
    as an argument instead), and using a module created inside a transform after that
    transform has returned (return it instead).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> counter = nnx.Variable(jnp.array(0))
        >>> @jax.jit
        ... def bump():
        ...     counter[...] += 1          # captured, not passed: belongs to the outer level
        >>> try:
        ...     bump()
        ... except nnx.TraceContextError:
        ...     print("raised")
        raised
    """


class StateMismatchError(NNXError, ValueError):
    """A state does not fit the graph it is put into (paths, shapes, dtypes, kinds).

    Raised by ``merge``, ``update``, ``replace_by_pure_dict`` and checkpoint restores;
    the message lists each mismatched path.

    Example:
        >>> import nnxlib as nnx
        >>> a = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> b = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        >>> try:
        ...     nnx.update(a, nnx.state(b))
        ... except nnx.errors.StateMismatchError:
        ...     print("raised")
        raised
    """


class ShapeMismatchError(NNXError, ValueError):
    """A value written into a variable has a shape it cannot take.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> v = nnx.Param(jnp.ones((2, 3)))
        >>> try:
        ...     v[...] = jnp.zeros((5, 5))
        ... except nnx.errors.ShapeMismatchError:
        ...     print("raised")
        raised
    """


class ImmutableVariableError(NNXError, ValueError):
    """A write into a variable of an immutable view (``nnx.with_vars(m, mutable=False)``,
    flax's name). The message names the variable's path in the view.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        >>> frozen = nnx.with_vars(model, mutable=False)
        >>> try:
        ...     frozen.bias[...] = jnp.ones(1)
        ... except nnx.errors.ImmutableVariableError as error:
        ...     print(str(error).split(":")[0])
        Cannot set the value of the Param at 'bias'
    """


class GraphStructureError(NNXError, ValueError):
    """A module graph cannot be walked or rebuilt as asked (bad attribute, bad graphdef).

    Example:
        >>> issubclass(GraphStructureError, ValueError)
        True
    """


class SharedReferenceError(GraphStructureError):
    """Tree mode (``graph=False``) met an object reachable by two paths.

    In tree mode a module is a pytree, so every variable and submodule must appear once;
    flax.nnx raises a ``ValueError`` there too. The message names both paths.

    Example:
        >>> import nnxlib as nnx
        >>> shared = nnx.Param(1.0)
        >>> try:
        ...     nnx.state(nnx.Dict(a=shared, b=shared), graph=False)
        ... except nnx.errors.SharedReferenceError as error:
        ...     print(isinstance(error, ValueError))
        True
    """


class InvalidFilterError(NNXError, ValueError):
    """A filter (or a list of filters) is malformed, e.g. ``...`` not in last place.

    Example:
        >>> issubclass(InvalidFilterError, ValueError)
        True
    """


class MissingRngStreamError(NNXError, KeyError):
    """An RNG stream is asked for that the ``Rngs`` object does not have (and no default).

    A ``KeyError``; raised for ``rngs.name`` it is also an ``AttributeError``, so
    ``hasattr`` and ``getattr(rngs, name, default)`` keep working.

    Example:
        >>> issubclass(MissingRngStreamError, KeyError)
        True
        >>> import nnxlib as nnx
        >>> hasattr(nnx.Rngs(params=0), "dropout")
        False
    """

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0]) if self.args else ""


class MissingRngStreamAttributeError(MissingRngStreamError, AttributeError):
    """What ``Rngs`` raises for a missing stream: also an ``AttributeError``, so that
    ``hasattr(rngs, name)`` and ``getattr(rngs, name, default)`` keep working. (The
    base class is not one, so that code probing an object with ``hasattr`` does not
    swallow a missing-stream error raised deeper down.)

    Example:
        >>> import nnxlib as nnx
        >>> hasattr(nnx.Rngs(params=0), "dropout")
        False
    """


class ShardingError(NNXError, ValueError):
    """Sharding metadata cannot be resolved or applied (rank, unknown mesh axis, rules).

    Example:
        >>> issubclass(ShardingError, ValueError)
        True
    """


class LazyInitError(NNXError, RuntimeError):
    """A lazily initialised module (``bridge.ToNNX``) is used before initialisation.

    Example:
        >>> issubclass(LazyInitError, RuntimeError)
        True
    """


class InvalidArgumentError(NNXError, ValueError):
    """An argument has a value the function cannot take (a rate outside [0, 1], a split
    size below 1, a module where only hashable constants may go).

    Example:
        >>> import nnxlib as nnx
        >>> try:
        ...     nnx.Dropout(1.5)
        ... except nnx.errors.InvalidArgumentError:
        ...     print("raised")
        raised
    """


class NotSupportedError(NNXError, NotImplementedError):
    """An option that nnxlib (or the JAX underneath it) does not support was given.

    Example:
        >>> import nnxlib as nnx
        >>> try:
        ...     nnx.jit(lambda x: x, abstracted_axes=({0: "n"},))
        ... except nnx.errors.NotSupportedError:
        ...     print("raised")
        raised
    """


class CacheNotInitializedError(NNXError, ValueError):
    """A layer is asked to decode (``decode=True``) before its cache was created.

    Call the layer's ``init_cache`` first. A ``ValueError``, as flax raises there.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> attn = nnx.MultiHeadAttention(2, 4, decode=True, rngs=nnx.Rngs(0))
        >>> try:
        ...     attn(jnp.ones((1, 1, 4)))
        ... except nnx.errors.CacheNotInitializedError:
        ...     print("raised")
        raised
    """
