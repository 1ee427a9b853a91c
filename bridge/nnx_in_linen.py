"""``ToLinen``: an nnxlib module used as a Flax Linen module.

The nnxlib module is built once, in Linen's ``init``, with ``nnx.Rngs`` fed from the Linen
RNG streams; its variables are stored in the Linen collections of their kinds (``Param``
in ``'params'``, ``BatchStat`` in ``'batch_stats'``, ...) under Linen-style names
(``layers/0/kernel`` becomes ``layers_0/kernel``, as Linen names list submodules), boxed
by ``metadata_fn``. Nothing else is stored: no graph definition collection.

In ``apply`` the module is put back together from the Linen variables and a cached
structure (its ``GraphDef``, learned once per class and constructor arguments), so
``apply`` neither constructs the module nor allocates its parameters again. Variables in
collections that ``apply`` may mutate are written back after the call, new ones
included.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> from bridge import ToLinen
    >>> layer = ToLinen(nnx.Linear, args=(3, 4))
    >>> y, variables = layer.init_with_output(jax.random.key(0), jnp.ones((1, 3)))
    >>> y.shape, variables["params"]["kernel"].shape, list(variables)
    ((1, 4), (3, 4), ['params'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import flax.errors
import flax.linen as nn
import jax
import numpy as np

import nnxlib
from bridge.context import MissingKey, lazy_init_scope, linen_rngs_dict, running_in
from bridge.variables import to_linen_var, to_nnx_var
from nnxlib import errors

__all__ = ["ToLinen", "to_linen", "to_linen_class", "linen_name"]

# Collections Linen's ``init`` does not keep by default: variables of these kinds
# created while initialising are not part of the stored structure.
_NOT_KEPT_AT_INIT = ("intermediates",)


def linen_name(path: Sequence[Any]) -> tuple[str, ...]:
    """The Linen variable path for an nnxlib state path: list indices join the name before
    them with ``_`` (``('layers', 0, 'kernel')`` -> ``('layers_0', 'kernel')``), as
    Linen names the submodules of a list attribute.

    Example:
        >>> from bridge import linen_name
        >>> linen_name(("blocks", 2, "mlp", "kernel"))
        ('blocks_2', 'mlp', 'kernel')
    """
    out: list[str] = []
    for key in path:
        if isinstance(key, int) and not isinstance(key, bool) and out:
            out[-1] = f"{out[-1]}_{key}"
        else:
            out.append(str(key))
    return tuple(out)


class _Structure(NamedTuple):
    """What ``apply`` needs to rebuild a module: its graph definition and, per leaf (in
    ``graphdef.paths`` order), where its value comes from."""

    graphdef: nnxlib.GraphDef
    # ("var", linen_path, collection) | ("key", tag, None) | ("count", tag, None)
    leaves: tuple
    counts: dict  # collection -> number of variables in it


_STRUCTURES: dict[Any, _Structure] = {}


def _describe(module: nnxlib.Module, owner: str) -> _Structure:
    graphdef, state = nnxlib.split(module, graph=True)
    by_path = dict(nnxlib.to_flat_state(state))
    leaves, counts, seen = [], {}, {}
    for path in graphdef.paths:
        leaf = by_path[path]
        if isinstance(leaf, nnxlib.RngKey):
            leaves.append(("key", leaf.tag, None))
        elif isinstance(leaf, nnxlib.RngCount):
            leaves.append(("count", leaf.tag, None))
        elif isinstance(leaf, nnxlib.Variable):
            col = nnxlib.variable_name_from_type(type(leaf), allow_register=True)
            name = linen_name(path)
            if (col, name) in seen:
                raise errors.GraphStructureError(
                    f"{owner}: {errors.format_path(path)} and {errors.format_path(seen[col, name])} both "
                    f"map to the Linen variable {col}/{'/'.join(name)}. Expected distinct "
                    "Linen names. Hint: rename the attribute that ends in _<number>."
                )
            seen[col, name] = path
            counts[col] = counts.get(col, 0) + 1
            leaves.append(("var", name, col))
        else:
            raise errors.GraphStructureError(
                f"{owner}: {errors.format_path(path)} holds a bare array, which has no Linen "
                "collection. Expected a Variable. Hint: wrap it, e.g. "
                "self.x = nnx.Variable(array) or nnx.BatchStat(array)."
            )
    return _Structure(graphdef, tuple(leaves), counts)


_ZERO_COUNT = np.zeros((), np.uint32)


def _hashable(value: Any) -> Any:
    """Constructor arguments as a cache key: mappings and lists become tuples."""
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_hashable(v) for v in value))
    return value


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def _unbox(x: Any) -> Any:
    return x.unbox() if isinstance(x, nn.meta.AxisMetadata) else x


class ToLinen(nn.Module):
    """A Linen module running an nnxlib module.

    Attributes:
        nnx_class: the nnxlib module class (or any callable returning a module); not an
            instance.
        args: positional arguments of its constructor.
        kwargs: keyword arguments of its constructor.
        skip_rng: don't pass ``rngs=`` to the constructor.
        metadata_fn: turns each variable into the value Linen stores (default
            :func:`~bridge.to_linen_var`; ``None`` stores bare values).
        abstract_init: when ``apply`` needs the module's structure and ``init`` did not
            run in this process (e.g. variables restored from a checkpoint), build it
            abstractly (``nnx.eval_shape``: no parameter is allocated); ``False`` runs the
            constructor for real, for constructors that cannot be traced.

    Call it like the nnxlib module; ``nnx_method='name'`` calls another method, and the
    module's methods are forwarded (``wrapper.attend(x)``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import ToLinen
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         x = ToLinen(nnx.Linear, args=(2, 8))(x)
        ...         return nn.Dense(1)(nn.relu(x))
        >>> variables = Net().init(jax.random.key(0), jnp.ones((1, 2)))
        >>> sorted(variables["params"])
        ['Dense_0', 'ToLinen_0']
        >>> Net().apply(variables, jnp.ones((5, 2))).shape
        (5, 1)
    """

    nnx_class: Callable[..., Any]
    args: Sequence = ()
    kwargs: Mapping[str, Any] = nn.FrozenDict({})
    skip_rng: bool = False
    metadata_fn: Callable[[nnxlib.Variable], Any] | None = to_linen_var
    abstract_init: bool = dataclasses.field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        cls = self.nnx_class
        if isinstance(cls, nnxlib.Module) or not callable(cls):
            raise TypeError(
                f"{type(self).__name__}: nnx_class must be an nnxlib module class, got "
                f"{'an instance of ' + type(cls).__name__ if isinstance(cls, nnxlib.Module) else repr(cls)}"
                ". The wrapper builds the module itself, inside Linen's init. Hint: "
                "ToLinen(nnx.Linear, args=(4, 3)) or bridge.to_linen(nnx.Linear, 4, 3), "
                "not ToLinen(nnx.Linear(4, 3, rngs=...))."
            )
        super().__post_init__()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            cls = self.__dict__.get("nnx_class")
            if name.startswith("_") or not callable(getattr(cls, name, None)):
                raise
        return functools.partial(self.__call__, nnx_method=name)

    # ------------------------------------------------------------------ calling
    @nn.compact
    def __call__(self, *args: Any, nnx_method: str | Callable | None = None,
                 **kwargs: Any) -> Any:
        initializing = self.is_initializing()
        module = self._construct() if initializing else self._restore(args, kwargs, nnx_method)
        method = self._method(module, nnx_method)
        with running_in(self):
            if initializing:
                # init returns the variables as built, as flax.nnx's ToLinen does: what
                # the call changes in them (a counter, running statistics) is not kept,
                # while variables the call creates (lazily built layers) are.
                built = nnxlib.clone(nnxlib.state(module, graph=True), graph=True)
                with lazy_init_scope():
                    out = method(*args, **kwargs)
                nnxlib.update(module, built)
            else:
                out = method(*args, **kwargs)
        if initializing:
            self._remember(module)
        if initializing or self.scope.mutable:
            self._store(module)
        return out

    def _owner(self) -> str:
        return f"{type(self).__name__} {self.name!r} ({getattr(self.nnx_class, '__name__', '?')})"

    def _cache_key(self) -> Any:
        key = (self.nnx_class, _hashable(tuple(self.args)), _hashable(dict(self.kwargs)),
               self.skip_rng)
        try:
            hash(key)
        except TypeError:  # unhashable constructor arguments: no reuse across calls
            return None
        return key

    def _method(self, module: Any, nnx_method: Any) -> Callable:
        if nnx_method is None:
            return module
        if callable(nnx_method):
            return functools.partial(nnx_method, module)
        method = getattr(module, nnx_method, None)
        if not callable(method):
            raise AttributeError(
                f"{self._owner()}: nnx_method={nnx_method!r} is not a method of "
                f"{type(module).__name__}. Hint: pass the name of one of its methods."
            )
        return method

    def _build(self, stream_keys: dict[str, Any]) -> Any:
        kwargs = dict(self.kwargs)
        if not self.skip_rng:
            kwargs["rngs"] = nnxlib.Rngs(**stream_keys)
        return self.nnx_class(*self.args, **kwargs)

    def _construct(self) -> Any:
        """The real module, built once, in ``init``, from the Linen RNG streams."""
        keys = linen_rngs_dict(self)
        # An nnxlib layer asks for streams by name ("dropout"); Linen answers a missing
        # name from "params". Providing them up front keeps each stream's tag.
        if "params" in keys:
            keys.setdefault("dropout", self.make_rng("dropout"))
            keys.setdefault("default", keys["params"])
        with self._rng_errors():
            return self._build(keys)

    def _remember(self, module: Any) -> None:
        """Cache the structure of the module as ``apply`` will see it."""
        key = self._cache_key()
        if key is not None and key not in _STRUCTURES:
            _STRUCTURES[key] = _describe(_without_unkept(module, self), self._owner())

    def _structure(self, args: tuple, kwargs: dict, nnx_method: Any) -> _Structure:
        key = self._cache_key()
        cached = _STRUCTURES.get(key) if key is not None else None
        if cached is not None:
            return cached
        names = sorted({*self.scope.rngs, "params", "dropout", "default"})

        def skeleton() -> Any:
            # Built, and called once so that lazily created parts (nested ToNNX) exist.
            module = self._build({name: 0 for name in names})
            with lazy_init_scope():
                self._method(module, nnx_method)(*args, **kwargs)
            return _without_unkept(module, None)

        module = nnxlib.eval_shape(skeleton) if self.abstract_init else skeleton()
        structure = _describe(module, self._owner())
        if key is not None:
            _STRUCTURES[key] = structure
        return structure

    def _restore(self, args: tuple, kwargs: dict, nnx_method: Any) -> Any:
        """The module rebuilt from the Linen variables (no construction, no allocation)."""
        structure = self._structure(args, kwargs, nnx_method)
        variables = self.variables
        values, missing = [], []
        for kind, where, col in structure.leaves:
            if kind == "var":
                node = variables.get(col)
                for name in where:
                    node = node.get(name) if isinstance(node, Mapping) else None
                if node is None:
                    missing.append(f"{col}/{'/'.join(where)}")
                values.append(_unbox(node))
            elif kind == "key":
                values.append(self._stream_key(where))
            else:
                values.append(_ZERO_COUNT)
        if missing:
            raise errors.StateMismatchError(
                f"{self._owner()}: the Linen variables lack {len(missing)} variable(s) the "
                f"nnxlib module has: {missing[:8]}. Expected the collections created by "
                "init. Hint: pass every collection init returned (e.g. {'params': ..., "
                "'batch_stats': ...}) to apply."
            )
        module = nnxlib.merge(structure.graphdef,
                              nnxlib.from_flat_state(zip(structure.graphdef.paths, values)))
        self._add_extras(module, structure, variables)
        return module

    def _add_extras(self, module: Any, structure: _Structure, variables: Mapping) -> None:
        """Variables Linen holds that the structure lacks (e.g. created by an earlier
        ``apply``) are added to the module, where their Linen names say."""
        for col, tree in variables.items():
            count = len(jax.tree_util.tree_leaves(tree, is_leaf=_is_box))
            if count == structure.counts.get(col, 0):
                continue
            known = {where for kind, where, c in structure.leaves if kind == "var" and c == col}
            for path, value in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)[0]:
                where = tuple(str(getattr(k, "key", k)) for k in path)
                if where not in known:
                    _attach(module, where, to_nnx_var(col, value), self._owner())

    def _stream_key(self, tag: str) -> Any:
        available = self.scope.rngs
        if tag in available or "params" in available:
            return self.make_rng(tag)
        return MissingKey(tag, self._owner())

    def _store(self, module: Any) -> None:
        """Write the module's variables into the mutable Linen collections."""
        groups: dict[str, dict[str, Any]] = {}
        writable: dict[str, bool] = {}
        metadata_fn = self.metadata_fn
        for path, variable in nnxlib.to_flat_state(nnxlib.state(module, graph=True)):
            if not isinstance(variable, nnxlib.Variable) or isinstance(variable, nnxlib.RngState):
                continue
            col = nnxlib.variable_name_from_type(type(variable), allow_register=True)
            allowed = writable.get(col)
            if allowed is None:
                allowed = writable[col] = self.is_mutable_collection(col)
            if not allowed:
                continue
            node = groups.setdefault(col, {})
            name = linen_name(path)
            for key in name[:-1]:
                node = node.setdefault(key, {})
            node[name[-1]] = (metadata_fn(variable) if metadata_fn is not None
                              else variable.get_value())
        for col, tree in groups.items():
            for top, value in tree.items():
                self.put_variable(col, top, value)

    @contextlib.contextmanager
    def _rng_errors(self) -> Iterator[None]:
        """Missing streams while building the module, said in terms of the Linen call."""
        try:
            yield
        except (flax.errors.InvalidRngError, AttributeError) as exc:
            if (isinstance(exc, AttributeError)
                    and not isinstance(exc, errors.MissingRngStreamError)):
                raise
            raise errors.MissingRngStreamError(
                f"{self._owner()}: building the nnxlib module needs a random stream Linen "
                f"was not given ({exc}). Hint: init(jax.random.key(0), ...) gives "
                "'params'; pass others as init({'params': k1, 'dropout': k2}, ...)."
            ) from exc


def _without_unkept(module: Any, wrapper: ToLinen | None) -> Any:
    """Drop variables of collections Linen's init does not keep (sown values)."""
    def unkept(path: tuple, value: Any) -> bool:
        if not isinstance(value, nnxlib.Variable) or isinstance(value, nnxlib.RngState):
            return False
        col = nnxlib.variable_name_from_type(type(value), allow_register=True)
        if wrapper is not None:
            return not wrapper.is_mutable_collection(col)
        return col in _NOT_KEPT_AT_INIT

    if any(unkept(p, v) for p, v in nnxlib.iter_graph(module, graph=True)):
        module = nnxlib.clone(module, graph=True)
        nnxlib.pop(module, unkept)
    return module


def _attach(module: Any, where: tuple[str, ...], variable: nnxlib.Variable, owner: str) -> None:
    """Put ``variable`` at the Linen path ``where`` (``layers_0`` may be ``layers[0]``)."""
    node = module
    for name in where[:-1]:
        node = _child(node, name, where, owner)
    last = where[-1]
    if isinstance(node, dict):
        node[last] = variable
    else:
        setattr(node, last, variable)


def _child(node: Any, name: str, where: tuple, owner: str) -> Any:
    children = dict(nnxlib.iter_children(node))
    if name in children:
        return children[name]
    base, _, index = name.rpartition("_")
    if index.isdigit() and isinstance(children.get(base), list):
        items = children[base]
        if int(index) < len(items):
            return items[int(index)]
    raise errors.StateMismatchError(
        f"{owner}: the Linen variable {'/'.join(where)} has no place in the nnxlib "
        f"module ({name!r} is not a submodule of {type(node).__name__}). Hint: apply with "
        "the variables init returned for this module."
    )


def to_linen(nnx_class: Callable[..., Any], *args: Any,
             metadata_fn: Callable[[nnxlib.Variable], Any] | None = to_linen_var,
             name: str | None = None, skip_rng: bool = False, abstract_init: bool = True,
             **kwargs: Any) -> ToLinen:
    """``ToLinen(nnx_class, args, kwargs, ...)`` with the constructor arguments written
    as in a call.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import to_linen
        >>> layer = to_linen(nnx.Linear, 3, 2, use_bias=False)
        >>> list(layer.init(jax.random.key(0), jnp.ones((1, 3)))["params"])
        ['kernel']
    """
    return ToLinen(nnx_class, args=tuple(args), kwargs=nn.FrozenDict(kwargs),
                   skip_rng=skip_rng, metadata_fn=metadata_fn,
                   abstract_init=abstract_init, name=name)


_WRAPPER_FIELDS = ("nnx_class", "args", "kwargs", "skip_rng", "metadata_fn",
                   "abstract_init", "parent", "name")


def _accept_constructor_arguments(generated_init: Callable) -> Callable:
    """Wrap a generated dataclass ``__init__`` so that constructor arguments of the
    nnxlib class can be passed directly; they override the preset ones."""

    @functools.wraps(generated_init)
    def __init__(self: ToLinen, *args: Any, **kwargs: Any) -> None:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in _WRAPPER_FIELDS}
        if args:
            fields["args"] = tuple(args)
        if kwargs:
            base = fields.get("kwargs", type(self).__dataclass_fields__["kwargs"].default)
            fields["kwargs"] = nn.FrozenDict({**base, **kwargs})
        generated_init(self, **fields)

    return __init__


class _PresetToLinen(ToLinen):
    """Base of the classes :func:`to_linen_class` makes (and of Linen's transformed
    versions of them): constructor arguments of the nnxlib class are accepted directly.

    Example:
        >>> from bridge.nnx_in_linen import _PresetToLinen
        >>> issubclass(_PresetToLinen, ToLinen)
        True
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__init__ = _accept_constructor_arguments(cls.__init__)


def to_linen_class(base_nnx_class: type, base_metadata_fn: Callable | None = to_linen_var,
                   base_skip_rng: bool = False, **partial_kwargs: Any) -> type[ToLinen]:
    """A Linen module class for ``base_nnx_class``, with some constructor arguments preset.

    Instances take the nnxlib constructor's arguments directly (keywords override the
    preset ones) plus Linen's ``name=``; auto-names read like ``LinearToLinen_0``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import to_linen_class
        >>> LinenLinear = to_linen_class(nnx.Linear, use_bias=False)
        >>> layer = LinenLinear(in_features=4, out_features=3)
        >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 4)))
        >>> LinenLinear.__name__, list(variables["params"])
        ('LinearToLinen', ['kernel'])
    """
    if isinstance(base_nnx_class, nnxlib.Module) or not callable(base_nnx_class):
        raise TypeError(
            f"to_linen_class: expected an nnxlib module class, got {base_nnx_class!r}. "
            "Hint: to_linen_class(nnx.Linear), not to_linen_class(nnx.Linear(...))."
        )
    name = f"{getattr(base_nnx_class, '__name__', 'Module')}ToLinen"
    namespace = {
        "__annotations__": {"nnx_class": Callable[..., Any], "kwargs": Mapping[str, Any],
                            "skip_rng": bool, "metadata_fn": Any},
        "nnx_class": base_nnx_class,
        "kwargs": nn.FrozenDict(partial_kwargs),
        "skip_rng": base_skip_rng,
        "metadata_fn": base_metadata_fn,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"Linen wrapper of {name[:-len('ToLinen')]} (made by to_linen_class).",
    }
    return type(name, (_PresetToLinen,), namespace)
