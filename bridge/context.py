"""Where the bridge is running: inside a Linen module, inside ``lazy_init``; RNG hand-over.

Two pieces of dynamic context cross the boundary between the libraries:

* the Linen module that is running nnxlib code (a :class:`~bridge.ToLinen` wrapper), read
  with :func:`current_linen_module`;
* whether :func:`~bridge.lazy_init` is running, which lets a :class:`~bridge.ToNNX`
  wrapper met on the way initialise itself instead of raising.

:func:`linen_rngs_dict` hands a Linen module's RNG streams to nnxlib (``nnx.Rngs(**d)``).

Example:
    >>> from bridge import current_linen_module
    >>> current_linen_module() is None      # no Linen module is running nnxlib code here
    True
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import flax.linen as nn
import jax

from nnxlib import errors

__all__ = ["current_linen_module", "linen_rngs_dict", "initializing", "lazy_init_scope",
           "MissingKey"]


class _State(threading.local):
    def __init__(self) -> None:
        self.linen_modules: list[nn.Module] = []
        self.lazy_depth = 0


_STATE = _State()


def current_linen_module() -> nn.Module | None:
    """The innermost Linen module running nnxlib code right now, or None.

    Inside an nnxlib module wrapped with :class:`~bridge.ToLinen` this is the wrapper,
    a bound Linen module: its ``scope``, ``is_initializing()``,
    ``is_mutable_collection(...)`` and ``make_rng(...)`` are available.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> import bridge
        >>> class Probe(nnx.Module):
        ...     def __init__(self, rngs=None):
        ...         pass
        ...     def __call__(self, x):
        ...         return bridge.current_linen_module().is_initializing()
        >>> bridge.ToLinen(Probe).init_with_output(jax.random.key(0), 1.0)[0]
        True
    """
    modules = _STATE.linen_modules
    return modules[-1] if modules else None


@contextlib.contextmanager
def running_in(module: nn.Module) -> Iterator[None]:
    """Make ``module`` the :func:`current_linen_module` for the duration of a block.

    Example:
        >>> import flax.linen as nn
        >>> from bridge.context import current_linen_module, running_in
        >>> dense = nn.Dense(2)
        >>> with running_in(dense):
        ...     current_linen_module() is dense
        True
    """
    _STATE.linen_modules.append(module)
    try:
        yield
    finally:
        _STATE.linen_modules.pop()


def initializing() -> bool:
    """True while :func:`~bridge.lazy_init` (or a ``ToLinen`` init) is running.

    Example:
        >>> from bridge.context import initializing, lazy_init_scope
        >>> with lazy_init_scope():
        ...     initializing()
        True
        >>> initializing()
        False
    """
    return _STATE.lazy_depth > 0


@contextlib.contextmanager
def lazy_init_scope() -> Iterator[None]:
    """A block in which uninitialised ``ToNNX`` wrappers initialise on their first call.

    Example:
        >>> import jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import ToNNX
        >>> from bridge.context import lazy_init_scope
        >>> model = ToNNX(nn.Dense(2), rngs=nnx.Rngs(0))
        >>> with lazy_init_scope():
        ...     model(jnp.ones((1, 3))).shape
        (1, 2)
    """
    _STATE.lazy_depth += 1
    try:
        yield
    finally:
        _STATE.lazy_depth -= 1


def linen_rngs_dict(linen_module: nn.Module, add_default: bool = False) -> dict[str, Any]:
    """One fresh key from each RNG stream of a bound Linen module: ``{name: key}``.

    Pass the result to ``nnx.Rngs(**d)``. ``add_default=True`` adds a ``'default'``
    stream (from ``'params'`` when there is one, else a constant key) so that an nnxlib
    constructor asking for any stream finds one; use it only where the keys do not
    matter (building structure whose values are replaced afterwards).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flax.linen as nn
        >>> from bridge import linen_rngs_dict
        >>> class Show(nn.Module):
        ...     @nn.compact
        ...     def __call__(self):
        ...         return sorted(linen_rngs_dict(self))
        >>> Show().apply({}, rngs={"dropout": jax.random.key(1)})
        ['dropout']
    """
    scope = linen_module.scope
    if scope is None:
        raise errors.MissingRngStreamError(
            f"linen_rngs_dict: {type(linen_module).__name__} is not bound (it has no "
            "scope), so it has no RNG streams. Expected a module inside init/apply. Hint: "
            "call it from a method of a Linen module that is running."
        )
    rngs = {name: linen_module.make_rng(name) for name in scope.rngs}
    if add_default and "default" not in rngs:
        rngs["default"] = rngs["params"] if "params" in rngs else jax.random.key(0)
    return rngs


class MissingKey:
    """Stands in for the key of an RNG stream that ``apply`` was not given; using it
    raises a clear error, not using it costs nothing (as in Linen).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> from bridge.context import MissingKey
        >>> key = MissingKey("dropout", "ToLinen 'layer'")
        >>> try:
        ...     jax.random.fold_in(key, 0)
        ... except nnx.errors.MissingRngStreamError as e:
        ...     print("raised")
        raised
    """

    def __init__(self, tag: str, owner: str):
        self.tag, self.owner = tag, owner

    def _fail(self) -> Any:
        raise errors.MissingRngStreamError(
            f"{self.owner}: the wrapped nnxlib module drew a key from RNG stream "
            f"{self.tag!r}, but apply was given neither {self.tag!r} nor 'params'. Hint: "
            f"apply(variables, ..., rngs={{{self.tag!r}: jax.random.key(0)}})."
        )

    shape = property(_fail)
    dtype = property(_fail)
    ndim = property(_fail)

    def __jax_array__(self) -> Any:
        return self._fail()

    def __repr__(self) -> str:
        return f"<missing RNG stream {self.tag!r}>"
