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
from typing import Any, Callable, Iterator, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from nnxlib.errors import ShardingError, format_path
from nnxlib.state import State, map_state
from nnxlib.variables import SHARDING_KEY, Variable, _placement, with_metadata, with_partitioning
from nnxlib.variables._placement import (
    get_logical_axis_rules,
    logical_axis_rules,
    logical_to_mesh_axes,
    use_eager_sharding,
    using_eager_sharding,
)

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
    "PARTITION_NAME",
    "add_axis",
    "remove_axis",
    "get_var_pspec",
]

#: The ``transform_metadata`` key naming the mapped axis in sharding metadata.
PARTITION_NAME = "partition_name"

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


# ------------------------------------------------------------ axis add/remove
# vmap/scan (and nnx.transform_metadata) add the mapped axis's name to the sharding
# metadata of the variables they map, and remove it for the per-member view.
A = TypeVar("A")


def get_var_pspec(v: Variable) -> PartitionSpec | None:
    """The ``PartitionSpec`` of variable ``v``: its sharding metadata resolved with its
    ``sharding_rules`` and the active :class:`logical_axis_rules` (``P()`` when it has
    none; None for a value that is not an array).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> v = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", "mlp"))
        >>> with nnx.logical_axis_rules([("mlp", "model")]):
        ...     nnx.spmd.get_var_pspec(v)
        P(None, 'model')
        >>> nnx.spmd.get_var_pspec(nnx.Param(jnp.ones(2)))
        P()
    """
    if not isinstance(v, Variable):
        raise TypeError(f"get_var_pspec: expected a Variable, got {type(v).__name__}. "
                        "Hint: use nnx.get_partition_spec for a whole state or module.")
    return variable_spec(v)


def _check_partition_name(transform_metadata: Mapping, where: str) -> None:
    if not isinstance(transform_metadata, Mapping) or PARTITION_NAME not in transform_metadata:
        raise ShardingError(
            f"{where}: transform_metadata={transform_metadata!r} has no {PARTITION_NAME!r} "
            "entry, so there is no axis name to put in the sharding metadata. Hint: pass "
            "{nnx.PARTITION_NAME: 'layers'} (or None for an unnamed axis).")


def _unique_variables(tree: Any) -> list:
    seen: set = set()
    found = []
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=_is_variable):
        if isinstance(leaf, Variable) and id(leaf) not in seen:
            seen.add(id(leaf))
            found.append(leaf)
    return found


def add_axis(tree: A, index: int, transform_metadata: Mapping) -> A:
    """Insert ``transform_metadata[nnx.PARTITION_NAME]`` at position ``index`` of the
    sharding metadata of every variable in ``tree`` (a module, a ``State`` or any
    pytree), in place, and return ``tree``; what ``vmap``/``scan`` do with
    ``transform_metadata`` to the variables they map. Variables without sharding
    metadata are left alone; a variable reached twice is changed once.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> v = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", "mlp"))
        >>> _ = nnx.spmd.add_axis({"w": v}, 0, {nnx.PARTITION_NAME: "layers"})
        >>> v.out_sharding
        ('layers', 'embed', 'mlp')
    """
    _check_partition_name(transform_metadata, "add_axis")
    for var in _unique_variables(tree):
        add_variable_axis(var, index, transform_metadata)
    return tree


def remove_axis(tree: A, index: int, transform_metadata: Mapping) -> A:
    """Undo :func:`add_axis`: remove the partition name at position ``index`` from the
    sharding metadata of every variable in ``tree``, in place, and return ``tree``. A
    different name at that position raises :class:`~nnxlib.errors.ShardingError`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> v = nnx.Param(jnp.ones((4, 2)), out_sharding=("layers", "embed"))
        >>> _ = nnx.spmd.remove_axis([v], 0, {nnx.PARTITION_NAME: "layers"})
        >>> v.out_sharding
        ('embed',)
    """
    _check_partition_name(transform_metadata, "remove_axis")
    for var in _unique_variables(tree):
        remove_variable_axis(var, index, transform_metadata)
    return tree


def _insert(fields: Any, index: int, value: Any) -> Any:
    items = list(fields)
    if index < 0:
        index += len(items) + 1
    while len(items) < index:
        items.append(None)
    items.insert(index, value)
    return _same_kind(fields, items)


def _remove(fields: Any, index: int, value: Any, key: str, var: Variable) -> Any:
    items = list(fields)
    position = index + len(items) if index < 0 else index
    if not 0 <= position < len(items) or items[position] != value:
        found = items[position] if 0 <= position < len(items) else "nothing"
        raise ShardingError(
            f"transform_metadata: expected {value!r} at position {index} of the "
            f"{type(var).__name__}'s {key}={tuple(fields)!r} when mapping over that axis, "
            f"found {found!r}. Hint: the partition name must match the one the state was "
            "created with, at the mapped axis."
        )
    del items[position]
    return _same_kind(fields, items)


def _same_kind(original: Any, items: list) -> Any:
    if isinstance(original, jax.sharding.PartitionSpec):
        return jax.sharding.PartitionSpec(*items)
    return list(items) if isinstance(original, list) else tuple(items)


def _shaped_entries(var: Variable, transform_metadata: Mapping) -> Iterator[tuple]:
    name = transform_metadata[PARTITION_NAME]
    metadata = var._metadata
    if _is_axes_tuple(metadata.get(SHARDING_KEY)):
        yield SHARDING_KEY, name
    for key, value in transform_metadata.items():
        if key != PARTITION_NAME and key != SHARDING_KEY:
            if _is_axes_tuple(metadata.get(key)):
                yield key, value


def _is_axes_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list, jax.sharding.PartitionSpec)) and len(value) > 0


def add_variable_axis(var: Variable, axis: int, transform_metadata: Mapping,
                      quiet: bool = False) -> None:
    """Insert the partition name at ``axis`` in ``var``'s sharding metadata (in place).

    ``quiet`` rewrites the metadata without a structure stamp (objects private to a
    trace); otherwise ``set_metadata`` is used. Metadata entries named in
    ``transform_metadata`` besides the partition name get their own value inserted.

    Example:
        >>> import nnxlib as nnx
        >>> v = nnx.Param(0.0, out_sharding=("embed",))
        >>> add_variable_axis(v, 0, {nnx.PARTITION_NAME: "layers"})
        >>> v.out_sharding
        ('layers', 'embed')
    """
    updates = {key: _insert(var._metadata[key], axis, value)
               for key, value in _shaped_entries(var, transform_metadata)}
    _set(var, updates, quiet)
    var.add_axis(axis, transform_metadata[PARTITION_NAME])


def remove_variable_axis(var: Variable, axis: int, transform_metadata: Mapping,
                         quiet: bool = False) -> None:
    """Remove the partition name at ``axis`` from ``var``'s sharding metadata (in
    place); a different name there raises :class:`~nnxlib.errors.ShardingError`.

    Example:
        >>> import nnxlib as nnx
        >>> v = nnx.Param(0.0, out_sharding=("layers", "embed"))
        >>> remove_variable_axis(v, 0, {nnx.PARTITION_NAME: "layers"})
        >>> v.out_sharding
        ('embed',)
    """
    updates = {key: _remove(var._metadata[key], axis, value, key, var)
               for key, value in _shaped_entries(var, transform_metadata)}
    _set(var, updates, quiet)
    var.remove_axis(axis, transform_metadata[PARTITION_NAME])


def _set(var: Variable, updates: dict, quiet: bool) -> None:
    if not updates:
        return
    if quiet:
        object.__setattr__(var, "_metadata", {**var._metadata, **updates})
    else:
        var.set_metadata(**updates)

