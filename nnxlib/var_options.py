"""Variable options with flax.nnx 0.12 names: ``var_defaults``, ``with_vars``.

A variable stores its value plainly (the default) or, with ``ref=True`` (``hijax=True``
is the same mode in nnxlib), in JAX mutable array references (``jax.Ref``), so that
modules go straight into plain ``jax.jit``/``jax.grad``/``jax.lax.scan`` and are
mutated in place (see docs/plain_jax.md). ``var_defaults`` picks the mode of new
variables; ``with_vars`` makes views of a graph in another mode.

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

from nnxlib.filters import to_predicate
from nnxlib.graph import find_duplicates, merge, split
from nnxlib.spmd import use_eager_sharding
from nnxlib.state import State
from nnxlib.variables import Variable, new_with_mode
from nnxlib.variables._defaults import VarDefaults, current_defaults, default_hijax, default_ref

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

    ``ref=True`` (or ``hijax=True``) makes new variables ref-backed (their values live
    in ``jax.Ref`` s; see the module doc); ``eager_sharding`` turns placement at creation under a mesh
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
        >>> import jax
        >>> isinstance(make().get_raw_value(), jax.Ref)
        True
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
    """A view of ``node`` whose variables (those matching ``only``) are in the asked
    mode; ``node`` itself is unchanged.

    * ``ref=True`` (or ``hijax=True``, the same storage here): the variable's value
      lives in ``jax.Ref`` s, so plain ``jax.jit``/``jax.lax.scan``/... mutate it in place;
    * ``mutable=False``: a frozen copy holding the current values as plain arrays, for
      ``jax.grad`` (a write raises :class:`~nnxlib.errors.ImmutableVariableError`
      naming the path); ``mutable=True`` makes it ref-backed again;
    * ``ref=False``/``hijax=False``: plain storage.

    A variable already in the asked mode is shared by the view (the same object, so a
    write through the view is a write into ``node``); one that changes mode is a copy.
    The graph's modules and containers are new objects. A variable reachable at two
    paths that would be copied raises ``ValueError`` (it would become two) unless
    ``allow_duplicates=True``.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> view = nnx.with_vars(model, ref=True)
        >>> view.kernel.ref, model.kernel.ref, isinstance(view.kernel.get_raw_value(), jax.Ref)
        (True, False, True)
        >>> frozen = nnx.with_vars(view, mutable=False)
        >>> frozen.kernel.mutable, frozen.kernel.ref, nnx.with_vars(view, ref=True) is view
        (False, False, False)
    """
    attrs = _mode_attrs(hijax, ref, mutable)
    predicate = to_predicate(only)

    def changes(path: tuple, value: Any) -> bool:
        return isinstance(value, Variable) and bool(attrs) and predicate(path, value) and \
            any(_attr(value, k) != v for k, v in attrs.items())

    if isinstance(node, Variable):
        return _in_mode(node, (), attrs) if changes((), node) else node  # type: ignore[return-value]
    if not allow_duplicates:
        for paths in find_duplicates(node):
            value = _at(node, paths[0])
            if changes(tuple(paths[0]), value):
                listed = "\n  ".join("/".join(map(str, p)) for p in paths)
                raise ValueError(
                    f"with_vars: Found duplicate at paths:\n  {listed}\none "
                    f"{type(value).__name__} is reachable at each of them, and changing its "
                    "mode would make it two copies. Hint: pass allow_duplicates=True (each "
                    "path then gets the same copy), or filter it out with only=.")
    graphdef_, state_ = split(node, graph=True)
    paths, leaves = state_._flat()
    done: dict = {}
    new_leaves = []
    for path, leaf in zip(paths, leaves):
        if changes(path, leaf):
            if id(leaf) not in done:
                done[id(leaf)] = _in_mode(leaf, path, attrs)
            leaf = done[id(leaf)]
        new_leaves.append(leaf)
    return merge(graphdef_, State._from_flat(paths, new_leaves))


def _mode_attrs(hijax: bool | None, ref: bool | None, mutable: bool | None) -> dict:
    attrs: dict = {}
    if hijax is not None:
        attrs["hijax"] = bool(hijax)
    if ref is not None:
        attrs["ref"] = bool(ref)
    if mutable is not None:
        attrs["mutable"] = bool(mutable)
    return attrs


def _attr(var: Variable, key: str) -> bool:
    if key == "mutable":
        return var.mutable
    return bool(var.get_metadata(key, False))


def _in_mode(var: Variable, path: tuple, attrs: dict) -> Variable:
    """A copy of ``var`` in the mode ``attrs`` asks for (see :func:`with_vars`)."""
    metadata = var.get_metadata(exclude_required=True)
    flags = {k: bool(var.get_metadata(k, False)) for k in ("hijax", "ref")}
    flags.update({k: v for k, v in attrs.items() if k in flags})
    if attrs.get("mutable") is False:  # plain arrays, unless ref/hijax are asked too
        flags = {k: attrs.get(k, False) for k in ("hijax", "ref")}
        metadata["mutable"] = False
    elif attrs.get("mutable") is True:
        metadata.pop("mutable", None)
        if not (flags["hijax"] or flags["ref"]):
            flags["ref"] = True
    elif flags["hijax"] or flags["ref"]:
        metadata.pop("mutable", None)
    metadata.update({k: True for k, v in flags.items() if v})
    if var.get_metadata("eager_sharding", True) is False:
        metadata["eager_sharding"] = False
    new = new_with_mode(type(var), var.get_raw_value(), metadata)
    if metadata.get("mutable") is False:
        object.__setattr__(new, "_nnx_path", path)
    return new


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
