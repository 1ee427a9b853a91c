"""Sharding: from variable metadata to ``PartitionSpec`` s, ``NamedSharding`` s and placement.

A variable says how it should be split across devices with sharding metadata: one entry
per dimension, each a mesh axis name, a *logical* axis name, or None (replicated).
:func:`with_partitioning` attaches it through an initializer. Logical names (``'embed'``,
``'mlp'``, ``'batch'``) are mapped to mesh axes by :class:`logical_axis_rules` (a context)
or by ``sharding_rules`` metadata, with ``flax.linen``'s precedence: rules are tried in
order, the first rule for a name whose mesh axes are still free wins, a mesh axis shards
at most one dimension of an array, and a name no rule maps is replicated.

**Eager sharding.** A variable created with sharding metadata while a mesh is known
(``jax.set_mesh(mesh)``, or ``mesh=`` metadata) is placed with that sharding at once:
``device_put`` eagerly, a sharding constraint under ``jit``/``eval_shape``. Without a
mesh, sharding stays metadata and creation works (flax.nnx raises there instead); place
the state later with :func:`get_named_sharding`. Turn it off with
``use_eager_sharding(False)``.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
    >>> init = nnx.with_partitioning(nnx.initializers.ones, ("embed", "mlp"))
    >>> rules = [("embed", None), ("mlp", "model")]
    >>> with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    ...     layer = nnx.Linear(8, 16, kernel_init=init, rngs=nnx.Rngs(0))
    >>> layer.kernel[...].sharding.spec
    P(None, 'model')
    >>> [s.data.shape for s in layer.kernel[...].addressable_shards][:2]
    [(8, 4), (8, 4)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from nnxlib import _placement
from nnxlib._placement import (
    get_logical_axis_rules,
    logical_axis_rules,
    logical_to_mesh_axes,
    use_eager_sharding,
    using_eager_sharding,
)
from nnxlib.errors import format_path
from nnxlib.state import State, map_state
from nnxlib.variables import Variable, with_metadata, with_partitioning

__all__ = [
    "with_partitioning",
    "with_metadata",
    "logical_axis_rules",
    "get_logical_axis_rules",
    "logical_to_mesh_axes",
    "get_partition_spec",
    "get_named_sharding",
    "with_sharding_constraint",
    "use_eager_sharding",
    "using_eager_sharding",
    "var_defaults",
    "VarDefaults",
]

# Docstrings for the names defined in the private helper (one implementation, public
# documentation here).
logical_axis_rules.__doc__ = """Map logical axis names to mesh axes inside a ``with`` block.

``rules`` is a sequence of ``(logical name, mesh axes)`` pairs (mesh axes: a name, a
tuple of names, or None), resolved with ``flax.linen``'s precedence (see
:func:`logical_to_mesh_axes`). Variables created inside, and :func:`get_partition_spec`
called inside, use them.

Example:
    >>> import nnxlib as nnx
    >>> with nnx.logical_axis_rules([("batch", "data"), ("mlp", "model")]):
    ...     nnx.logical_to_mesh_axes(("batch", "embed", "mlp"))
    P('data', None, 'model')
"""
get_logical_axis_rules.__doc__ = """The rules of the innermost :class:`logical_axis_rules`.

Example:
    >>> import nnxlib as nnx
    >>> with nnx.logical_axis_rules([("mlp", "model")]):
    ...     nnx.spmd.get_logical_axis_rules()
    (('mlp', 'model'),)
"""
logical_to_mesh_axes.__doc__ = """Resolve logical names to a mesh ``PartitionSpec``
exactly as ``flax.linen.logical_to_mesh_axes`` does.

Rules are tried in order. A rule applies if its logical name is one of ``names``, that
name is not assigned yet, and none of its mesh axes already shards another dimension
of this array. Names no rule assigns become None (replicated). ``rules`` defaults to
the active :class:`logical_axis_rules`.

Example:
    >>> import nnxlib as nnx
    >>> rules = [("batch", "X"), ("features", "X"), ("heads", "Y"), ("batch", "Z")]
    >>> nnx.logical_to_mesh_axes(("batch", "length", "heads", "features"), rules)
    P('X', None, 'Y', None)
"""
use_eager_sharding.__doc__ = """Turn eager sharding of new variables on or off.

Called, it sets the default; used in a ``with`` block, it applies inside the block only.
Eager sharding is on by default.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> mesh = jax.make_mesh((8,), ("model",))
    >>> init = nnx.with_partitioning(nnx.initializers.ones, (None, "model"))
    >>> with jax.set_mesh(mesh), nnx.use_eager_sharding(False):
    ...     layer = nnx.Linear(2, 8, kernel_init=init, rngs=nnx.Rngs(0))
    ...     nnx.using_eager_sharding()
    False
    >>> layer.kernel[...].addressable_shards[0].data.shape, nnx.using_eager_sharding()
    ((2, 8), True)
"""
using_eager_sharding.__doc__ = """Whether new variables with sharding metadata are placed
when they are created (and a mesh is known).

Example:
    >>> import nnxlib as nnx
    >>> nnx.using_eager_sharding()
    True
"""


# ------------------------------------------------------------------ spec of a tree
def _key_name(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _is_variable(x: Any) -> bool:
    return isinstance(x, Variable)


def _shape_of(value: Any) -> tuple | None:
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(value, (int, float, complex, bool, np.generic)):
        return ()
    return None if shape is None else tuple(shape)


def variable_spec(var: Variable, path: tuple = (), mesh: Any = None) -> PartitionSpec | None:
    """The mesh ``PartitionSpec`` of one variable (``P()`` when it has no sharding).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> v = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", None),
        ...               sharding_rules=[("embed", "data")])
        >>> nnx.spmd.variable_spec(v)
        P('data', None)
    """
    metadata = var._metadata
    value = var._raw_value
    shape = _shape_of(value)
    if mesh is None:
        mesh = metadata.get("mesh")
    where = f"{type(var).__name__} at {format_path(path)}" if path else type(var).__name__
    spec = _placement.spec_of(metadata, shape, mesh, where)
    if spec is not None:
        return spec
    return PartitionSpec() if shape is not None else None


def _map_variables(f: Callable[[tuple, Any], Any], tree: Any) -> Any:
    if isinstance(tree, State):  # its own paths (its pytree keys are flat indices)
        return map_state(f, tree)

    def visit(keypath: tuple, x: Any) -> Any:
        return f(tuple(_key_name(k) for k in keypath), x)

    return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=_is_variable)


def get_partition_spec(tree: Any) -> Any:
    """The ``PartitionSpec`` of every variable (and array) of ``tree``.

    ``tree`` is a ``State`` (``nnx.state(model)``), a module, or any pytree holding
    variables. Each variable is replaced by a copy holding its spec, resolved with the
    active :class:`logical_axis_rules` and its own ``sharding_rules``; plain arrays get
    ``P()`` and other leaves None.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
        >>> model = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
        >>> with nnx.logical_axis_rules([("embed", None), ("mlp", "model")]):
        ...     specs = nnx.get_partition_spec(nnx.state(model))
        >>> specs["kernel"].value, specs["bias"].value
        (P(None, 'model'), P())
    """
    def f(path: tuple, x: Any) -> Any:
        if isinstance(x, Variable):
            return x.replace(variable_spec(x, path))
        return PartitionSpec() if hasattr(x, "shape") else None

    return _map_variables(f, tree)


def get_named_sharding(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """:func:`get_partition_spec` turned into ``NamedSharding`` s on ``mesh``.

    Every mesh axis a spec names must exist in ``mesh`` (a :class:`ShardingError`
    naming the variable otherwise).

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
        >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        >>> model = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
        >>> shardings = nnx.get_named_sharding(nnx.state(model), mesh)
        >>> shardings["kernel"].value.spec
        P(None, 'model')
        >>> placed = jax.device_put(nnx.state(model), shardings)
        >>> placed["kernel"].value.addressable_shards[0].data.shape
        (4, 2)
    """
    def f(path: tuple, x: Any) -> Any:
        if isinstance(x, Variable):
            spec = variable_spec(x, path, mesh)
            return x.replace(None if spec is None else NamedSharding(mesh, spec))
        return NamedSharding(mesh, PartitionSpec()) if hasattr(x, "shape") else None

    return _map_variables(f, tree)


def with_sharding_constraint(x: Any, spec: Any, mesh: Any = None) -> Any:
    """Constrain an activation (or pytree of them) to ``spec``, logical names allowed.

    ``spec`` is a ``PartitionSpec`` or a tuple of names (mesh axes, or logical names
    resolved by the active :class:`logical_axis_rules`), or a ``NamedSharding``. The
    mesh is ``mesh`` or the one of ``jax.set_mesh``. Inside ``jit`` this is a sharding
    constraint (``reshard`` for Explicit mesh axes); outside, a ``device_put``. With no
    mesh at all it returns ``x`` unchanged (as ``flax.linen.with_logical_constraint``
    does), so the same model code runs on one device and on a mesh.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
        >>> with jax.set_mesh(mesh), nnx.logical_axis_rules([("batch", "data")]):
        ...     y = nnx.jit(lambda x: nnx.with_sharding_constraint(x * 2, ("batch", None)))(
        ...         jnp.ones((4, 3)))
        >>> y.sharding.spec
        P('data', None)
    """
    if isinstance(spec, NamedSharding):
        return jax.tree.map(lambda a: _placement.put(a, spec), x)
    mesh = mesh if mesh is not None else _placement.context_mesh()
    if mesh is None:
        return x
    metadata = {"out_sharding": tuple(spec)}

    def constrain(a: Any) -> Any:
        resolved = _placement.spec_of(metadata, _shape_of(a), mesh,
                                      "with_sharding_constraint input")
        return _placement.put(a, NamedSharding(mesh, resolved))

    return jax.tree.map(constrain, x)


# -------------------------------------------------------------------- var_defaults
class VarDefaults(Mapping):
    """The defaults new variables are created with (see :func:`var_defaults`).

    nnxlib variables are always plain (no ``hijax``/``ref`` variants); the default that
    matters here is ``eager_sharding``.

    Example:
        >>> import nnxlib as nnx
        >>> dict(nnx.var_defaults())
        {'hijax': False, 'ref': False, 'eager_sharding': True}
    """

    def __init__(self, eager_sharding: bool):
        self._values = {"hijax": False, "ref": False, "eager_sharding": eager_sharding}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"VarDefaults({self._values!r})"


class _VarDefaultsScope:
    """``with var_defaults(eager_sharding=...)`` or ``@var_defaults(...)``."""

    def __init__(self, eager_sharding: bool | None):
        self.eager_sharding = eager_sharding
        self._contexts: list = []

    def __enter__(self) -> VarDefaults:
        if self.eager_sharding is not None:
            context = _EagerScope(self.eager_sharding)
            context.__enter__()
            self._contexts.append(context)
        return var_defaults()

    def __exit__(self, *exc: Any) -> None:
        if self.eager_sharding is not None:
            self._contexts.pop().__exit__(*exc)

    def __call__(self, fun: Callable) -> Callable:
        import functools

        @functools.wraps(fun)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fun(*args, **kwargs)

        return wrapper


class _EagerScope:
    """Pushes an eager-sharding value for a block without touching the global default."""

    def __init__(self, value: bool):
        self.value = value

    def __enter__(self) -> None:
        _placement._CONTEXT.eager.append(self.value)

    def __exit__(self, *exc: Any) -> None:
        _placement._CONTEXT.eager.pop()


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None,
                 eager_sharding: bool | None = None) -> Any:
    """Read the variable-creation defaults, or set them for a block.

    With no argument: the current :class:`VarDefaults`. With arguments: a context
    manager (also a decorator) that sets them inside. ``hijax=True`` and ``ref=True``
    (flax.nnx's mutable-array variables) are not supported by nnxlib and raise.

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.var_defaults(eager_sharding=False):
        ...     nnx.var_defaults().eager_sharding
        False
        >>> nnx.var_defaults()["eager_sharding"]
        True
    """
    if hijax is None and ref is None and eager_sharding is None:
        return VarDefaults(using_eager_sharding())
    for name, value in (("hijax", hijax), ("ref", ref)):
        if value:
            raise NotImplementedError(
                f"var_defaults({name}=True): nnxlib variables are plain boxes; flax.nnx's "
                f"{name} variables are not provided. Hint: nnx.jit and the other "
                "transforms already propagate variable updates."
            )
    return _VarDefaultsScope(eager_sharding)
