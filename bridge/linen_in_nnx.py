"""``ToNNX``: a Flax Linen module used as an nnxlib module.

Linen modules need a sample input to create their variables, so a ``ToNNX`` wrapper
starts empty and is initialised by :func:`lazy_init` (or its ``.lazy_init`` method). Its
variables then are nnxlib variables held as attributes that mirror the Linen variable
tree (``model.Dense_0.kernel``), of the kind of their collection, and every later call
runs Linen's ``apply`` on them and writes what the Linen module changed (batch statistics,
caches, sown values, counters, variables of those collections it creates) back in place.
Parameters are created by ``lazy_init`` only.

Example:
    >>> import jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import nnxlib as nnx
    >>> from bridge import ToNNX
    >>> model = ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
    >>> model.kernel.shape, type(model.kernel).__name__
    ((3, 4), 'Param')
    >>> model(jnp.ones((2, 3))).shape
    (2, 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import flax.errors
import flax.linen as nn
import jax
from flax.core import DenyList

import nnxlib
from bridge.context import MissingKey, initializing, lazy_init_scope
from bridge.variables import linen_vars_to_nnx_attrs, nnx_attrs_to_linen_vars, to_nnx_var
from nnxlib import errors

__all__ = ["ToNNX", "lazy_init"]

# What a call writes back by default: every collection but the parameters, which only
# lazy_init creates (a missing one is flax's ScopeParamNotFoundError, as in flax.nnx).
_WRITABLE = DenyList("params")

# Attributes of the wrapper itself; a Linen variable tree may not use these names.
_OWN_ATTRIBUTES = ("module", "rngs", "linen_collections")


def lazy_init(fn: nnxlib.Module | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` so that every ``ToNNX`` it calls creates its variables.

    ``fn`` is a module (called with the arguments) or a method of one; the module is
    returned. A method of a ``ToNNX`` (``model.encode``) initialises only what that
    method needs. For any other callable its result is returned.

    Example:
        >>> import jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import ToNNX, lazy_init
        >>> class Head(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.body = ToNNX(nn.Dense(8), rngs=rngs)
        ...         self.out = nnx.Linear(8, 1, rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.out(self.body(x))
        >>> model = lazy_init(Head(nnx.Rngs(0)), jnp.ones((1, 5)))
        >>> model.body.kernel.shape
        (5, 8)
    """
    with lazy_init_scope():
        result = fn(*args, **kwargs)
    if isinstance(fn, nnxlib.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nnxlib.Module) else result


class _LinenMethod:
    """``ToNNX.<name>``: calls the wrapper with Linen's ``method=<name>``."""

    __slots__ = ("__self__", "name")

    def __init__(self, owner: "ToNNX", name: str):
        self.__self__ = owner
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__self__(*args, method=self.name, **kwargs)

    def __repr__(self) -> str:
        return f"<ToNNX method {self.name!r} of {type(self.__self__.module).__name__}>"


def _flat(tree: Mapping, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    items = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items.extend(_flat(value, prefix + (key,)))
        else:
            items.append((prefix + (key,), value))
    return items


class ToNNX(nnxlib.Module):
    """An nnxlib module running a Flax Linen module.

    Args:
        module: the Linen module (unbound, as you would call ``init`` on it).
        rngs: streams feeding Linen's RNG collections: each stream of the same name
            (``params``, ``dropout``, ...; ``default`` serves as ``params``) gives one
            key per call, so dropout masks change from call to call. The wrapper keeps
            a fork of them (as nnxlib's layers do).

    Calls take Linen's arguments plus ``rngs=`` (an ``nnx.Rngs`` or a dict of keys for
    this call), ``method=`` (a method name of the Linen module) and ``mutable=``: by
    default every collection but ``params`` that the Linen module writes is updated in
    the wrapper (parameters are created by ``lazy_init`` only: one it did not create is
    flax's ``ScopeParamNotFoundError``); a list of names narrows it, ``False`` updates
    nothing, ``True`` also lets the call create parameters. Methods of the Linen module
    are forwarded: ``model.encode(x)`` is ``model(x, method='encode')``.

    Example:
        >>> import jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import ToNNX
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x, train: bool = True):
        ...         x = nn.Dense(3)(x)
        ...         return nn.BatchNorm(use_running_average=not train)(x)
        >>> net = ToNNX(Net(), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((4, 2)))
        >>> sorted(net.BatchNorm_0)
        ['bias', 'mean', 'scale', 'var']
        >>> _ = net(jnp.arange(8.0).reshape(4, 2))       # updates the batch statistics
        >>> bool(net.BatchNorm_0.mean[...].any())
        True
    """

    def __init__(self, module: nn.Module, rngs: nnxlib.Rngs | None = None):
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"ToNNX: expected a flax.linen Module instance, got "
                f"{type(module).__name__}. Hint: ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)); "
                "to wrap an nnxlib module for Linen use bridge.ToLinen instead."
            )
        self.module = module
        # Own streams, forked like nnxlib's layers fork theirs: created under vmap with
        # split keys, each wrapper keeps its own stack of keys.
        self.rngs = rngs.fork() if isinstance(rngs, nnxlib.Rngs) else rngs
        self.linen_collections: tuple[str, ...] | None = None  # None until initialised

    def lazy_init(self, *args: Any, **kwargs: Any) -> "ToNNX":
        """Create the variables by running the Linen module on sample inputs.

        Example:
            >>> import jax.numpy as jnp
            >>> import flax.linen as nn
            >>> import nnxlib as nnx
            >>> from bridge import ToNNX
            >>> ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3))).bias.shape
            (2,)
        """
        return lazy_init(self, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: forward Linen methods.
        module = self.__dict__.get("module") if not name.startswith("_") else None
        if module is not None and callable(getattr(type(module), name, None)):
            return _LinenMethod(self, name)
        raise AttributeError(
            f"ToNNX has no attribute {name!r}"
            + ("" if module is None else
               f" and {type(module).__name__} has no method {name!r}")
            + (". It is not initialised yet: call lazy_init first."
               if self.__dict__.get("linen_collections", ()) is None else ".")
        )

    # ------------------------------------------------------------------ calling
    def __call__(self, *args: Any, rngs: Any = None, method: Any = None,
                 mutable: Any = None, **kwargs: Any) -> Any:
        if self.linen_collections is None:
            if not initializing():
                raise errors.LazyInitError(
                    f"ToNNX({type(self.module).__name__}) was called before its variables "
                    "were created. Expected an initialised wrapper. Hint: call "
                    "model.lazy_init(sample_input) (or bridge.lazy_init(model, "
                    "sample_input)) once before using it."
                )
            return self._initialize(args, kwargs, rngs, method)
        variables = nnx_attrs_to_linen_vars(self._variable_attrs())
        if mutable is None:  # inside lazy_init what is still missing is created
            mutable = True if initializing() else _WRITABLE
        with self._rng_errors("apply"), self._param_errors(method):
            result = self.module.apply(variables, *args, rngs=self._draw_keys(rngs),
                                       method=method, mutable=mutable, **kwargs)
        if mutable is False:
            return result
        out, updates = result
        self._write_back(updates)
        return out

    def _initialize(self, args: tuple, kwargs: dict, rngs: Any, method: Any) -> Any:
        with self._rng_errors("lazy_init"):
            out, variables = self.module.init_with_output(
                self._draw_keys(rngs), *args, method=method, **kwargs)
        attributes = linen_vars_to_nnx_attrs(variables)
        for name in attributes:
            self._check_free(name)
        for name, value in attributes.items():
            setattr(self, name, value)
        self.linen_collections = tuple(sorted(variables))
        return out

    def _variable_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _OWN_ATTRIBUTES}

    def _check_free(self, name: str) -> None:
        if name in _OWN_ATTRIBUTES:
            raise errors.GraphStructureError(
                f"ToNNX({type(self.module).__name__}): the Linen variable or submodule "
                f"name {name!r} is also an attribute of the wrapper ({', '.join(_OWN_ATTRIBUTES)})."
                " Expected other names. Hint: give that Linen submodule or variable "
                "another name (name=...)."
            )

    def _draw_keys(self, rngs: Any) -> dict[str, Any]:
        """One key per stream for this call (streams advance, so keys never repeat)."""
        source = self.rngs if rngs is None else rngs
        if source is None:
            return {}
        if isinstance(source, nnxlib.Rngs):
            # Streams the enclosing Linen apply did not provide (inside ToLinen) are
            # skipped; 'default' stands in for 'params' only when there is none.
            streams = {name: stream for name, stream in source.items()
                       if not isinstance(stream.key.get_value(), MissingKey)}
            if "default" in streams:
                default = streams.pop("default")
                streams.setdefault("params", default)
            return {name: stream() for name, stream in streams.items()}
        if isinstance(source, Mapping):
            return dict(source)
        return {"params": jax.random.key(source) if isinstance(source, int) else source}

    @contextlib.contextmanager
    def _rng_errors(self, where: str) -> Iterator[None]:
        """Linen's missing-RNG error, said in nnxlib's terms (which stream, where)."""
        try:
            yield
        except flax.errors.InvalidRngError as exc:
            raise errors.MissingRngStreamError(
                f"ToNNX({type(self.module).__name__}).{where}: the Linen module asked for "
                f"a random stream that was not given ({exc}). Expected an nnx.Rngs with "
                "that stream (or 'params'/'default', which Linen falls back to). Hint: "
                "ToNNX(module, rngs=nnx.Rngs(0, dropout=1)) or pass rngs=nnx.Rngs(...) to "
                "the call."
            ) from exc

    @contextlib.contextmanager
    def _param_errors(self, method: Any) -> Iterator[None]:
        """A parameter ``lazy_init`` did not create: flax's error, with the fix."""
        try:
            yield
        except flax.errors.ScopeParamNotFoundError as exc:
            ran = "" if method is None else f" (method {getattr(method, '__name__', method)!r})"
            exc.add_note(
                f"ToNNX({type(self.module).__name__}){ran}: the Linen module asked for a "
                "parameter its lazy_init did not create; parameters are created only by "
                "lazy_init. Hint: run bridge.lazy_init(model, sample_input) on this call "
                "(or on each method you call) first, or pass mutable=True to create it "
                "here."
            )
            raise

    def _write_back(self, updates: Mapping[str, Any]) -> None:
        """Put ``apply``'s updated collections into the variables, in place.

        Existing variables get new values (no structural change); variables the Linen
        module created in this call are added. Everything is checked before anything
        is written, so an error leaves the wrapper as it was.
        """
        writes, created = [], []
        for col, tree in updates.items():
            for path, value in _flat(tree):
                current = self._find(path)
                raw = value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value
                if isinstance(current, nnxlib.Variable):
                    kind_col = nnxlib.variable_name_from_type(type(current),
                                                              allow_register=True)
                    if kind_col != col:
                        raise errors.GraphStructureError(
                            f"ToNNX({type(self.module).__name__}): Linen wrote "
                            f"{nnxlib.errors.format_path(path)} in collection {col!r}, but "
                            f"the wrapper holds it as a {type(current).__name__} "
                            f"(collection {kind_col!r}). Hint: one path, one collection."
                        )
                    if raw is not current.get_value():
                        writes.append((current, raw))
                elif current is None:
                    self._check_free(path[0])
                    created.append((path, to_nnx_var(col, value)))
                else:
                    raise errors.GraphStructureError(
                        f"ToNNX({type(self.module).__name__}): Linen wrote a variable at "
                        f"{nnxlib.errors.format_path(path)}, where the wrapper holds a "
                        f"{type(current).__name__}. Hint: one name per variable/submodule."
                    )
        for variable, raw in writes:
            variable.set_value(raw)
        for path, variable in created:
            self._attach(path, variable)
        if created:
            names = {nnxlib.variable_name_from_type(type(v)) for _, v in created}
            if not names <= set(self.linen_collections):
                self.linen_collections = tuple(sorted(set(self.linen_collections) | names))

    def _find(self, path: tuple) -> Any:
        node: Any = self._variable_attrs()
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    def _attach(self, path: tuple, variable: nnxlib.Variable) -> None:
        if len(path) == 1:
            setattr(self, path[0], variable)
            return
        if path[0] not in self.__dict__:
            setattr(self, path[0], {})
        node = self.__dict__[path[0]]
        for key in path[1:-1]:
            if key not in node:
                node[key] = {}
            node = node[key]
        node[path[-1]] = variable
