"""Sharding metadata -> ``PartitionSpec`` -> placed arrays (the pure helpers of spmd).

This private module sits at the variables layer because ``Variable.__init__`` needs it:
a variable created with sharding metadata while a mesh is known is placed with that
sharding at once. Everything here works on plain metadata dicts and arrays; the public
names are re-exported by :mod:`nnxlib.spmd`.

Three ideas live here:

- **Logical axis rules** (a thread-local context, plus ``sharding_rules`` metadata),
  resolved the way ``flax.linen`` resolves them: rules are tried in order, the first
  rule for a logical name whose mesh axes are still free wins, a mesh axis is used at
  most once per array, and a logical name no rule maps stays replicated.
- **The spec of one variable**, validated against its shape and mesh, with errors that
  name the variable.
- **Placement** of a new value: ``device_put`` for concrete arrays, a sharding
  constraint for traced ones (inside ``jit``, ``eval_shape``, ``vmap``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental.layout import Format
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from nnxlib._flags import BoolSetting
from nnxlib.errors import ShardingError

#: The metadata key that holds a variable's sharding annotation (flax 0.12's).
SHARDING_KEY = "out_sharding"
#: Its older spellings: accepted where metadata is given, stored as ``out_sharding``.
SHARDING_ALIASES = ("sharding", "sharding_names")


class _Context(threading.local):
    def __init__(self) -> None:
        self.rules: tuple = ()


_CONTEXT = _Context()


# ------------------------------------------------------------------------- rules
def check_rules(rules: Any, where: str = "logical_axis_rules") -> tuple:
    """Validate rules and return them as a tuple of ``(logical name, mesh axes)``."""
    if isinstance(rules, dict):
        rules = tuple(rules.items())
    try:
        pairs = tuple((name, axes) for name, axes in rules)
    except (TypeError, ValueError):
        raise ShardingError(
            f"{where}: expected a sequence of (logical name, mesh axes) pairs, got "
            f"{rules!r}. Hint: rules look like [('batch', 'data'), ('mlp', 'model'), "
            "('embed', None)]."
        ) from None
    for name, axes in pairs:
        flat = axes if isinstance(axes, (tuple, list)) else (axes,)
        if not isinstance(name, str) or not all(a is None or isinstance(a, str)
                                                for a in flat):
            raise ShardingError(
                f"{where}: the rule {(name, axes)!r} is malformed: expected a logical "
                "name (str) mapped to a mesh axis name, a tuple of them, or None."
            )
    return tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in pairs)


def get_logical_axis_rules() -> tuple:
    """The logical axis rules of the innermost ``logical_axis_rules`` context."""
    return _CONTEXT.rules


class logical_axis_rules:  # noqa: N801  (flax's name; used as a context manager)
    """Context in which logical axis names are mapped to mesh axes by ``rules``."""

    def __init__(self, rules: Any):
        self.rules = check_rules(rules)
        self._saved: list = []

    def __enter__(self) -> tuple:
        self._saved.append(_CONTEXT.rules)
        _CONTEXT.rules = self.rules
        return self.rules

    def __exit__(self, *exc: Any) -> None:
        _CONTEXT.rules = self._saved.pop()


class _Unassigned:
    """A logical name that no rule has mapped (yet); replicated in the end."""

    def __repr__(self) -> str:
        return "<unassigned>"


_UNASSIGNED = _Unassigned()


def _mesh_axes_in(entries: Any) -> set:
    out: set = set()
    for entry in entries:
        for axis in entry if isinstance(entry, (tuple, list)) else (entry,):
            if isinstance(axis, str):
                out.add(axis)
    return out


def logical_to_mesh_axes(names: Sequence[Any], rules: Any = None) -> PartitionSpec:
    """Resolve logical axis names to a mesh ``PartitionSpec`` with Linen precedence.

    Rules are tried in order; a rule applies to its logical name if that name is in
    ``names``, the name is still unassigned, and none of the rule's mesh axes is used yet
    by this array. Names no rule assigns are replicated (``None``); entries that are not
    strings (``None``, tuples) are kept as they are. ``rules`` defaults to the active
    ``logical_axis_rules`` context.
    """
    names = tuple(names)
    rules = get_logical_axis_rules() if rules is None else check_rules(rules)
    repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if repeated:
        raise ShardingError(
            f"the logical axis names {names!r} repeat {repeated}: an array dimension "
            "name may appear only once. Hint: give each dimension its own logical name."
        )
    result: list = [_UNASSIGNED if isinstance(n, str) else n for n in names]
    for logical, mesh_axes in rules:
        if logical not in names:
            continue
        position = names.index(logical)
        if result[position] is not _UNASSIGNED:
            continue
        if _mesh_axes_in([mesh_axes]) & _mesh_axes_in(result):
            continue  # a mesh axis shards at most one dimension of an array
        result[position] = mesh_axes
    return PartitionSpec(*(None if r is _UNASSIGNED else r for r in result))


# ----------------------------------------------------------------- eager sharding
def using_eager_sharding() -> bool:
    """Whether new variables with sharding metadata are placed when created."""
    return use_eager_sharding.current()


class use_eager_sharding(BoolSetting):  # noqa: N801  (flax's name)
    """Set eager sharding process-wide (a call), for a ``with`` block, or for the calls
    of a decorated function; flax's default is True."""

    default = True


# ------------------------------------------------------------ the metadata key
def warn_alias(alias: str, where: str) -> None:
    """The ``DeprecationWarning`` for a use of an old spelling of ``out_sharding``."""
    warnings.warn(
        f"{where}: the metadata key {alias!r} is deprecated, use 'out_sharding' instead "
        f"(it is stored as out_sharding).", DeprecationWarning, stacklevel=4)


def canonical_metadata(metadata: Mapping, where: str) -> Any:
    """``metadata`` with ``sharding``/``sharding_names`` moved to ``out_sharding``.

    Returned as it is when it has neither (the common case: no copy). Each alias met
    warns (``DeprecationWarning``); an alias and ``out_sharding`` with different values
    raise :class:`ShardingError`.
    """
    if all(alias not in metadata for alias in SHARDING_ALIASES):
        return metadata
    metadata = dict(metadata)
    for alias in SHARDING_ALIASES:
        if alias not in metadata:
            continue
        value = metadata.pop(alias)
        warn_alias(alias, where)
        if SHARDING_KEY in metadata and not _same_entry(metadata[SHARDING_KEY], value):
            raise ShardingError(
                f"{where}: conflicting sharding metadata: out_sharding="
                f"{metadata[SHARDING_KEY]!r} but {alias}={value!r} (an older name of the "
                "same entry). Hint: give only out_sharding.")
        metadata[SHARDING_KEY] = value
    return metadata


def _same_entry(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list, PartitionSpec)) and isinstance(b, (tuple, list,
                                                                      PartitionSpec)):
        return tuple(a) == tuple(b)
    return a is b or a == b


# --------------------------------------------------------------- one variable's spec
def raw_sharding(metadata: Mapping) -> Any:
    """The ``out_sharding`` entry of ``metadata`` (names, a ``PartitionSpec``, a
    ``NamedSharding`` or a ``Format``), or None when it names no sharding."""
    value = metadata.get(SHARDING_KEY)
    if value is None or (isinstance(value, (tuple, list, PartitionSpec)) and not len(value)):
        return None
    return value


def rules_for(metadata: dict) -> tuple:
    """The rules that apply to a variable: its own ``sharding_rules`` first, then the
    context's (so a variable's own rule for a name takes precedence)."""
    local = metadata.get("sharding_rules")
    local = check_rules(local, "sharding_rules metadata") if local else ()
    return local + get_logical_axis_rules()


def _describe(where: str, metadata: dict, shape: Any) -> str:
    shown = {SHARDING_KEY: metadata[SHARDING_KEY]} if SHARDING_KEY in metadata else {}
    return f"{where} (shape {tuple(shape) if shape is not None else '?'}, {shown})"


def spec_of(metadata: dict, shape: Any, mesh: Any = None, where: str = "variable"
            ) -> PartitionSpec | None:
    """The mesh ``PartitionSpec`` of a variable with ``metadata`` and ``shape``.

    None when the metadata names no sharding. Raises :class:`ShardingError` when the
    spec has the wrong rank, uses a mesh axis twice, or (``mesh`` given) names an axis
    the mesh does not have.
    """
    raw = raw_sharding(metadata)
    if raw is None:
        return None
    if isinstance(raw, Format):
        raw = raw.sharding
    if isinstance(raw, NamedSharding):
        spec, mesh = raw.spec, raw.mesh
        names = tuple(spec)
        rules: tuple = ()
    else:
        names = tuple(raw)
        rules = rules_for(metadata)
        try:
            spec = logical_to_mesh_axes(names, rules) if rules else PartitionSpec(*names)
        except ShardingError as e:
            raise ShardingError(f"{_describe(where, metadata, shape)}: {e}") from None
    if shape is not None and len(names) > len(shape):
        raise ShardingError(
            f"{_describe(where, metadata, shape)}: the sharding has {len(names)} entries "
            f"but the array has only {len(shape)} dimensions. Hint: give at most one "
            "entry per dimension (None for a replicated one; missing trailing entries "
            "are replicated)."
        )
    used: list = []
    for entry in spec:
        for axis in entry if isinstance(entry, (tuple, list)) else (entry,):
            if isinstance(axis, str):
                if axis in used:
                    raise ShardingError(
                        f"{_describe(where, metadata, shape)}: mesh axis {axis!r} is "
                        f"used twice in {spec}; a mesh axis can shard only one dimension "
                        "of an array. Hint: replicate one of them (None)."
                    )
                used.append(axis)
    if mesh is not None and not getattr(mesh, "empty", False):
        check_mesh_axes(spec, names, rules, mesh, where, metadata, shape)
    return spec


def check_mesh_axes(spec: PartitionSpec, names: tuple, rules: tuple, mesh: Any,
                    where: str, metadata: dict, shape: Any) -> None:
    """Every mesh axis of ``spec`` must exist in ``mesh``; say which name caused it."""
    known = tuple(mesh.axis_names)
    for logical, entry in zip(names, spec):
        for axis in entry if isinstance(entry, (tuple, list)) else (entry,):
            if not isinstance(axis, str) or axis in known:
                continue
            if not rules:
                raise ShardingError(
                    f"{_describe(where, metadata, shape)}: {axis!r} is not an axis of "
                    f"the mesh {known}, and no logical axis rule maps it. Hint: map "
                    f"logical names with nnx.logical_axis_rules([({axis!r}, <mesh "
                    "axis or None>), ...]) or sharding_rules metadata, or use mesh "
                    "axis names."
                )
            raise ShardingError(
                f"{_describe(where, metadata, shape)}: the logical name {logical!r} is "
                f"mapped to mesh axis {axis!r}, which the mesh {known} does not have. "
                "Hint: fix the rule, or build the mesh with that axis."
            )


# ---------------------------------------------------------------------- placement
def context_mesh() -> Any:
    """The mesh of ``jax.set_mesh`` (concrete outside a trace, abstract inside), or None."""
    abstract = jax.sharding.get_abstract_mesh()
    if abstract.empty:
        return None
    try:
        return jax.sharding.get_mesh()
    except ValueError:  # inside jit only the abstract mesh is known
        return abstract


def place_new(value: Any, metadata: dict, where: str = "new variable") -> Any:
    """Place a new variable's value by its sharding metadata, if a mesh is known.

    Without a mesh (none in the metadata, no ``jax.set_mesh``) the value is returned as
    it is: sharding stays metadata. Only arrays are placed.
    """
    eager = metadata.get("eager_sharding")
    if not (using_eager_sharding() if eager is None else eager):
        return value
    raw = raw_sharding(metadata)
    if raw is None or not isinstance(value, (jax.Array, np.ndarray)):
        return value
    given = raw.sharding if isinstance(raw, Format) else raw
    mesh = given.mesh if isinstance(given, NamedSharding) else metadata.get("mesh")
    if mesh is None:
        mesh = context_mesh()
    if mesh is None:
        return value
    spec = spec_of(metadata, np.shape(value), mesh, where)
    sharding = NamedSharding(mesh, spec)
    if isinstance(raw, Format):  # a layout too: device_put and the constraint take it
        check_axis_types(sharding, where)
        target = Format(raw.layout, sharding)
        if isinstance(value, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(value, target)
        return jax.device_put(value, target)
    return put(value, sharding, where)


def check_axis_types(sharding: NamedSharding, where: str) -> dict:
    """The axis types of ``sharding``'s mesh; a spec that names both ``Auto`` and
    ``Explicit`` axes raises (no one placement step gives it inside ``jit``)."""
    mesh = sharding.mesh
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    named = {types[a] for a in _mesh_axes_in(sharding.spec) if a in types}
    if AxisType.Auto in named and AxisType.Explicit in named:
        raise ShardingError(
            f"{where}: the sharding {sharding.spec} names both Auto and Explicit axes of "
            f"the mesh {dict(zip(mesh.axis_names, map(str, mesh.axis_types)))}; a value "
            "cannot be placed on such a mix in one step. Hint: give the mesh one axis "
            "type, or "
            "shard this value over axes of one type only.")
    return types


def put(value: Any, sharding: NamedSharding, where: str = "value") -> Any:
    """``value`` placed with ``sharding``: moved if concrete, constrained if traced (or
    if only the abstract mesh is known: inside ``vmap``, ``scan`` and other traces a
    constant is constrained like a traced value)."""
    types = check_axis_types(sharding, where)
    if not isinstance(value, jax.core.Tracer) and isinstance(sharding.mesh, Mesh):
        return jax.device_put(value, sharding)
    mesh = sharding.mesh
    named = _mesh_axes_in(sharding.spec)
    if all(types[a] == AxisType.Auto for a in named):
        if named or all(t == AxisType.Auto for t in mesh.axis_types):
            return jax.lax.with_sharding_constraint(value, sharding)
    if not jax.sharding.get_abstract_mesh().empty:
        return jax.sharding.reshard(value, sharding)
    if isinstance(mesh, Mesh):
        # Without jax.set_mesh around the trace, reshard cannot lower; the same devices
        # with Auto axes give the same layout through a sharding constraint.
        mesh = Mesh(mesh.devices, mesh.axis_names,
                    axis_types=(AxisType.Auto,) * len(mesh.axis_names))
        sharding = NamedSharding(mesh, sharding.spec)
    return jax.lax.with_sharding_constraint(value, sharding)
