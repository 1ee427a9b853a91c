"""Variable options with flax.nnx 0.12 names: ``var_defaults``, ``with_vars``.

flax.nnx has several variable implementations (plain, ``ref`` backed by a JAX mutable
array, ``hijax``) chosen by these options. nnxlib has one implementation (it is what
makes its cached fast path possible), so the options are recorded as metadata and
read back as flax reads them; they do not change how a variable stores its value.

Example:
    >>> import nnxlib as nnx
    >>> nnx.var_defaults()
    VarDefaults(hijax=False, ref=False)
    >>> with nnx.var_defaults(ref=True):
    ...     nnx.Param(1.0).ref
    True
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from nnxlib._var_defaults import VarDefaults, current_defaults, default_hijax, default_ref
from nnxlib.filters import to_predicate
from nnxlib.graph import clone, find_duplicates, iter_graph
from nnxlib.spmd import use_eager_sharding
from nnxlib.variables import Variable

__all__ = ["VarDefaults", "var_defaults", "with_vars", "vars_as"]

A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])


class _Settings:
    """Several :class:`~nnxlib._flags.BoolSetting` values set together: already set by
    the call, scoped instead when entered with ``with`` or used as a decorator."""

    def __init__(self, settings: list):
        self.settings = settings

    def __enter__(self) -> VarDefaults:
        for setting in self.settings:
            setting.__enter__()
        return current_defaults()

    def __exit__(self, *exc: Any) -> None:
        for setting in reversed(self.settings):
            setting.__exit__(*exc)

    def __call__(self, f: F) -> F:
        for setting in self.settings:
            f = setting(f)
        return f

    def __repr__(self) -> str:
        return f"var_defaults({', '.join(map(repr, self.settings))})"


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None,
                 eager_sharding: bool | None = None) -> Any:
    """Read (no arguments) or set the default variable options.

    ``hijax``/``ref`` are recorded and read back as ``variable.hijax``/``variable.ref``
    (see the module doc); ``eager_sharding`` turns placement at creation under a mesh
    on or off (:func:`nnxlib.spmd.use_eager_sharding`). With arguments it works three
    ways, as flax's: a bare call sets the defaults from here on, ``with`` sets them for
    a block, and a decorator sets them while the function runs.

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.var_defaults(hijax=True) as defaults:
        ...     defaults.hijax, nnx.Param(0.0).hijax
        (True, True)
        >>> nnx.Param(0.0).hijax
        False
        >>> with nnx.var_defaults(eager_sharding=False):
        ...     nnx.using_eager_sharding()
        False
        >>> @nnx.var_defaults(ref=True)
        ... def make():
        ...     return nnx.Param(0.0)
        >>> make().ref, nnx.Param(0.0).ref
        (True, False)
    """
    if hijax is None and ref is None and eager_sharding is None:
        return current_defaults()
    settings = [cls(value) for cls, value in ((default_hijax, hijax), (default_ref, ref),
                                              (use_eager_sharding, eager_sharding))
                if value is not None]
    return _Settings(settings)


def with_vars(node: A, /, *, hijax: bool | None = None, ref: bool | None = None,
              mutable: bool | None = None, only: Any = ...,
              allow_duplicates: bool = False) -> A:
    """A copy of ``node`` whose variables (those matching ``only``) carry the given
    ``hijax``/``ref``/``mutable`` options; ``node`` is unchanged.

    The copy's variables are new objects holding the same arrays. A shared variable
    is an error unless ``allow_duplicates=True`` (it stays shared in the copy).

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> copy = nnx.with_vars(model, ref=True)
        >>> copy.kernel.ref, model.kernel.ref, copy.kernel is model.kernel
        (True, False, False)
    """
    options = {k: v for k, v in (("hijax", hijax), ("ref", ref), ("mutable", mutable))
               if v is not None}
    if not allow_duplicates:
        duplicates = [paths for paths in find_duplicates(node)
                      if isinstance(_at(node, paths[0]), Variable)]
        if duplicates:
            where = " and ".join(repr("/".join(map(str, p))) for p in duplicates[0])
            raise ValueError(
                f"with_vars: one variable is reachable at {where}. Hint: pass "
                "allow_duplicates=True to keep it shared in the copy."
            )
    predicate = to_predicate(only)
    copy = clone(node, graph=True)
    for path, value in iter_graph(copy, graph=True):
        if isinstance(value, Variable) and options and predicate(path, value):
            value.set_metadata(**options)
    return copy


def vars_as(node: A, /, *, hijax: bool | None = None, ref: bool | None = None,
            mutable: bool | None = None, only: Any = ...,
            allow_duplicates: bool = False) -> A:
    """The older name of :func:`with_vars` (deprecated in flax.nnx).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.vars_as(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), hijax=True).bias.hijax
        True
    """
    return with_vars(node, hijax=hijax, ref=ref, mutable=mutable, only=only,
                     allow_duplicates=allow_duplicates)


def _at(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node
