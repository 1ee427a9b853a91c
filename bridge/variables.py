"""Variable conversion between Linen collections and nnxlib variables, metadata included.

A Linen variable lives in a *collection* (``'params'``, ``'batch_stats'``, ...) as a plain
array or wrapped in an axis-metadata box (``nn.Partitioned``, ``nn.LogicallyPartitioned``,
or any ``nn.meta.AxisMetadata``). An nnxlib variable carries its collection as its *kind*
(``Param``, ``BatchStat``, ...) and its metadata as a dict. The functions here convert one
into the other without losing anything:

* ``nn.Partitioned(v, names, mesh)`` -> ``out_sharding=names`` (and ``mesh``), plus
  ``sharding_rules`` mapping each of its mesh axes to itself, so that logical-axis rules
  never rename them;
* ``nn.LogicallyPartitioned(v, names, mesh, rules)`` -> ``out_sharding``,
  ``sharding_rules`` and ``mesh``;
* the box type is remembered (metadata ``linen_meta_type``), so converting back builds the
  same box with the same fields; the Linen box given is never modified;
* any other box is kept whole (metadata ``linen_box``) and re-filled on the way back;
* an nnxlib variable with metadata of its own becomes an :class:`NNXMeta` box, which
  follows ``nn.scan``/``nn.vmap`` axes (``metadata_params={nn.PARTITION_NAME: ...}``).

Example:
    >>> import jax.numpy as jnp
    >>> import flax.linen as nn
    >>> from bridge import to_nnx_var, to_linen_var
    >>> box = nn.LogicallyPartitioned(jnp.ones((2, 3)), ("embed", "mlp"))
    >>> var = to_nnx_var("params", box)
    >>> type(var).__name__, var.out_sharding
    ('Param', ('embed', 'mlp'))
    >>> back = to_linen_var(var)
    >>> type(back).__name__, back.names
    ('LogicallyPartitioned', ('embed', 'mlp'))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax

import nnxlib
from nnxlib import errors

__all__ = [
    "NNXMeta",
    "PARTITION_NAME",
    "is_vanilla_variable",
    "to_linen_var",
    "to_nnx_var",
    "get_col_name",
    "linen_vars_to_nnx_attrs",
    "nnx_attrs_to_linen_vars",
    "with_partitioning",
    "variable_to_logically_partitioned",
    "sharding_names_of",
    "sort_variable_types",
]

#: Metadata key naming the axis a scan/vmap adds (the same string as ``nn.PARTITION_NAME``).
PARTITION_NAME: str = nn.PARTITION_NAME

# The keys a Linen-side NNXMeta box may hold sharding names under (older flax.nnx
# versions wrote sharding_names); nnxlib variables keep them as out_sharding only.
_SHARDING_KEYS = ("out_sharding", "sharding_names", "sharding")
# The box types whose fields map onto nnxlib metadata keys one by one.
_FIELD_BOXES = (nn.Partitioned, nn.LogicallyPartitioned)


def sharding_names_of(variable: nnxlib.Variable, where: str = "") -> tuple | None:
    """The sharding names of ``variable`` (its ``out_sharding`` metadata as a tuple: the
    spec of a ``NamedSharding``), or None when it has none.

    ``where`` names the variable in errors (kept for callers; reading cannot fail now
    that a variable has one sharding key).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge.variables import sharding_names_of
        >>> sharding_names_of(nnx.Param(jnp.ones(2), out_sharding=("embed",)))
        ('embed',)
        >>> sharding_names_of(nnx.Param(jnp.ones(2))) is None
        True
    """
    names = variable.get_metadata("out_sharding", None)
    if names is None:
        return None
    names = getattr(names, "sharding", names)  # a jax Format: its sharding
    names = getattr(names, "spec", names)  # a NamedSharding: its spec
    return tuple(names)


def is_vanilla_variable(vs: nnxlib.Variable) -> bool:
    """True when a variable carries no metadata, so Linen can hold its bare value.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import is_vanilla_variable
        >>> is_vanilla_variable(nnx.Param(jnp.ones(2)))
        True
        >>> is_vanilla_variable(nnx.Param(jnp.ones(2), out_sharding=("embed",)))
        False
    """
    return not any(value is not None for value in vs.get_metadata(exclude_required=True).values())


def _with_axis(names: Sequence, index: int, name: Any) -> tuple:
    names = list(names)
    while len(names) < index:
        names.append(None)
    names.insert(index, name)
    return tuple(names)


class _MetadataKey:
    """Hashable, value-comparing stand-in for a metadata dict (pytree aux data)."""

    __slots__ = ("metadata",)

    def __init__(self, metadata: dict):
        self.metadata = metadata

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.metadata)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _MetadataKey):
            return False
        mine, theirs = self.metadata, other.metadata
        if mine.keys() != theirs.keys():
            return False
        try:
            return all(mine[k] is theirs[k] or bool(mine[k] == theirs[k]) for k in mine)
        except Exception:  # values whose == is not a truth value
            return False


class NNXMeta(nn.meta.AxisMetadata):
    """A Linen box holding an nnxlib variable's value, kind and metadata.

    It is what :func:`to_linen_var` gives for a variable with metadata that no Linen box
    type describes. ``nn.get_partition_spec`` reads its sharding names, and ``nn.scan`` /
    ``nn.vmap`` with ``metadata_params={nn.PARTITION_NAME: name}`` insert (and remove)
    ``name`` in them at the transformed axis.

    Example:
        >>> import jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import NNXMeta
        >>> box = NNXMeta(nnx.Param, jnp.ones((2, 3)), {"out_sharding": ("a", "b")})
        >>> stacked = box.add_axis(0, {nn.PARTITION_NAME: "layers"})
        >>> tuple(stacked.get_partition_spec())
        ('layers', 'a', 'b')
        >>> stacked.remove_axis(0, {nn.PARTITION_NAME: "layers"}).metadata
        {'out_sharding': ('a', 'b')}
    """

    __slots__ = ("var_type", "value", "metadata")

    def __init__(self, var_type: type[nnxlib.Variable], value: Any, metadata: Mapping):
        self.var_type = var_type
        self.value = value
        self.metadata = dict(metadata)

    def unbox(self) -> Any:
        return self.value

    def replace_boxed(self, val: Any) -> "NNXMeta":
        return NNXMeta(self.var_type, val, self.metadata)

    def _renamed(self, rename: Callable[[tuple], tuple]) -> "NNXMeta":
        metadata = dict(self.metadata)
        for key in _SHARDING_KEYS:
            if metadata.get(key) is not None:
                metadata[key] = rename(tuple(metadata[key]))
        return NNXMeta(self.var_type, self.value, metadata)

    def add_axis(self, index: int, params: dict[Any, Any]) -> "NNXMeta":
        name = (params or {}).get(PARTITION_NAME)
        return self._renamed(lambda names: _with_axis(names, index, name))

    def remove_axis(self, index: int, params: dict[Any, Any]) -> "NNXMeta":
        name = (params or {}).get(PARTITION_NAME)

        def drop(names: tuple) -> tuple:
            # Only the name this transform inserted goes: removing twice is a no-op.
            if index < len(names) and names[index] == name:
                return names[:index] + names[index + 1:]
            return names

        return self._renamed(drop)

    def get_partition_spec(self) -> jax.sharding.PartitionSpec:
        """The sharding names as a ``PartitionSpec`` (empty when there are none).

        Example:
            >>> import nnxlib as nnx
            >>> from bridge import NNXMeta
            >>> tuple(NNXMeta(nnx.Param, 0.0, {"out_sharding": ("x",)}).get_partition_spec())
            ('x',)
        """
        names = sharding_names_of(self.to_nnx_variable())
        return jax.sharding.PartitionSpec(*(names or ()))

    def to_nnx_variable(self) -> nnxlib.Variable:
        """The nnxlib variable this box describes.

        Example:
            >>> import nnxlib as nnx
            >>> from bridge import NNXMeta
            >>> NNXMeta(nnx.BatchStat, 1.0, {"note": "x"}).to_nnx_variable().note
            'x'
        """
        return self.var_type(self.value, **self.metadata)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NNXMeta):
            return NotImplemented
        return (self.var_type is other.var_type and _MetadataKey(self.metadata)
                == _MetadataKey(other.metadata) and self.value is other.value)

    __hash__ = None  # type: ignore[assignment]  (holds an array, like Linen's boxes)

    def __repr__(self) -> str:
        return (f"NNXMeta(var_type={self.var_type.__name__}, value={self.value!r}, "
                f"metadata={self.metadata!r})")


jax.tree_util.register_pytree_with_keys(
    NNXMeta,
    lambda box: (((jax.tree_util.GetAttrKey("value"), box.value),),
                 (box.var_type, _MetadataKey(box.metadata))),
    lambda aux, children: NNXMeta(aux[0], children[0], aux[1].metadata),
    lambda box: ((box.value,), (box.var_type, _MetadataKey(box.metadata))),
)


def variable_to_logically_partitioned(variable: nnxlib.Variable) -> Any:
    """An ``nn.LogicallyPartitioned`` box for a variable with sharding names, else its value.

    Names come from ``out_sharding``; ``mesh`` and ``sharding_rules`` (or ``rules``) go to the box's fields. When the metadata has
    ``PARTITION_NAME`` (set by a scan over layers), that name is inserted at
    ``param_scan_axis`` (``Param``, default 0; 0 for other kinds) unless already there.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import variable_to_logically_partitioned, PARTITION_NAME
        >>> v = nnx.Param(jnp.ones((4, 2, 3)), out_sharding=("embed", "mlp"),
        ...               **{PARTITION_NAME: "layers"})
        >>> variable_to_logically_partitioned(v).names
        ('layers', 'embed', 'mlp')
        >>> variable_to_logically_partitioned(nnx.Param(1.0))
        1.0
    """
    names = sharding_names_of(variable)
    value = variable.get_value()
    if names is None:
        return value
    metadata = variable.get_metadata(exclude_required=True)
    partition = metadata.get(PARTITION_NAME)
    if partition is not None and partition not in names:
        axis = metadata.get("param_scan_axis", 0) if isinstance(variable, nnxlib.Param) else 0
        names = _with_axis(names, axis, partition)
    rules = metadata.get("sharding_rules", metadata.get("rules"))
    return nn.LogicallyPartitioned(value, names, mesh=metadata.get("mesh"), rules=rules)


def with_partitioning(fn: Callable[..., Any], names: Sequence, mesh: Any = None
                      ) -> Callable[..., Any]:
    """Linen's ``nn.with_partitioning`` for nnxlib layers: the variable made from the
    initializer's output has these sharding names and becomes an ``nn.Partitioned`` box
    when the layer is wrapped with :class:`~bridge.ToLinen`.

    Example:
        >>> import jax
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import with_partitioning, to_linen_var
        >>> init = with_partitioning(nnx.initializers.ones, ("embed",))
        >>> box = to_linen_var(nnx.Param(init(jax.random.key(0), (4,))))
        >>> type(box).__name__, box.names
        ('Partitioned', ('embed',))
    """
    return nnxlib.with_partitioning(fn, tuple(names), mesh, linen_meta_type=nn.Partitioned)


def to_nnx_var(col: str, x: Any) -> nnxlib.Variable:
    """Convert the Linen value ``x`` of collection ``col`` into an nnxlib variable.

    The kind is the one registered for ``col`` (``'params'`` -> ``Param``, an unknown
    name gets a new registered kind); box fields become metadata (see the module
    docstring). ``x`` is never modified.

    Example:
        >>> import jax.numpy as jnp
        >>> import flax.linen as nn
        >>> from bridge import to_nnx_var
        >>> v = to_nnx_var("batch_stats", nn.Partitioned(jnp.zeros(3), ("embed",)))
        >>> type(v).__name__, v.out_sharding, v.linen_meta_type.__name__
        ('BatchStat', ('embed',), 'Partitioned')
    """
    kind = nnxlib.variable_type_from_name(col, allow_register=True)
    if isinstance(x, NNXMeta):
        if nnxlib.variable_name_from_type(x.var_type, allow_register=True) != col:
            raise errors.GraphStructureError(
                f"An NNXMeta box of kind {x.var_type.__name__} was found in collection "
                f"{col!r}, whose kind is {kind.__name__}. Expected the box in collection "
                f"{nnxlib.variable_name_from_type(x.var_type)!r}. Hint: keep NNXMeta boxes "
                "in the collection they were written to."
            )
        return x.to_nnx_variable()
    if type(x) in _FIELD_BOXES:
        metadata: dict[str, Any] = {"out_sharding": tuple(x.names),
                                    "linen_meta_type": type(x)}
        if x.mesh is not None:
            metadata["mesh"] = x.mesh
        if type(x) is nn.Partitioned:
            # Partitioned names are mesh axes, not logical names: rules of their own,
            # mapping each to itself, keep active logical rules from renaming them.
            metadata["sharding_rules"] = _identity_rules(x.names)
        elif x.rules is not None:
            metadata["sharding_rules"] = x.rules
        return kind(x.value, **metadata)
    if isinstance(x, nn.meta.AxisMetadata):
        # A box type without a field mapping: keep an empty copy of it, refill on the way
        # back. replace_boxed returns a new box; ``x`` itself is left as it was.
        return kind(x.unbox(), linen_box=x.replace_boxed(None))
    return kind(x)


def _identity_rules(names: Sequence) -> tuple:
    axes: list[str] = []
    for entry in names:
        for axis in entry if isinstance(entry, (tuple, list)) else (entry,):
            if isinstance(axis, str) and axis not in axes:
                axes.append(axis)
    return tuple((axis, axis) for axis in axes)


_BOX_KEYS = frozenset({"out_sharding", "mesh", "sharding_rules", "rules", "linen_meta_type"})


def to_linen_var(vs: nnxlib.Variable) -> Any:
    """Convert an nnxlib variable into the value Linen stores for it.

    A variable that came from a Linen box becomes the same box again; a variable
    without metadata becomes its bare value; any other becomes an :class:`NNXMeta`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import to_linen_var
        >>> to_linen_var(nnx.Param(jnp.zeros(2)))
        Array([0., 0.], dtype=float32)
        >>> type(to_linen_var(nnx.Param(jnp.zeros(2), note="x"))).__name__
        'NNXMeta'
    """
    metadata = vs.get_metadata(exclude_required=True)
    value = vs.get_value()
    box = metadata.get("linen_box")
    if box is not None and len(metadata) == 1:
        return box.replace_boxed(value)
    box_type = metadata.get("linen_meta_type")
    if box_type is not None and set(metadata) <= _BOX_KEYS:
        names = sharding_names_of(vs)
        fields: dict[str, Any] = {"mesh": metadata.get("mesh")}
        if issubclass(box_type, nn.LogicallyPartitioned):
            fields["rules"] = metadata.get("sharding_rules", metadata.get("rules"))
        return box_type(value, names if names is not None else (), **fields)
    if is_vanilla_variable(vs):
        return value
    return NNXMeta(type(vs), value, metadata)


def get_col_name(keypath: Sequence[Any]) -> str:
    """The Linen collection named by the first entry of a key path into a variables dict.

    Accepts JAX key entries (``DictKey``, ``GetAttrKey``) or plain strings.

    Example:
        >>> import jax
        >>> from bridge import get_col_name
        >>> paths = jax.tree_util.tree_flatten_with_path({"batch_stats": {"mean": 0.0}})[0]
        >>> get_col_name(paths[0][0])
        'batch_stats'
    """
    if not keypath:
        raise ValueError(
            "get_col_name: the key path is empty; expected a path whose first entry is "
            "the collection name (e.g. ('params', 'Dense_0', 'kernel'))."
        )
    first = keypath[0]
    for attribute in ("key", "name"):
        if hasattr(first, attribute):
            return str(getattr(first, attribute))
    return str(first)


def _flat_items(tree: Mapping, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path, leaf)`` pairs of a nested mapping (mappings are nodes, all else leaves)."""
    items = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items.extend(_flat_items(value, prefix + (key,)))
        else:
            items.append((prefix + (key,), value))
    return items


def _nested(pairs: list[tuple[tuple, Any]]) -> dict:
    root: dict = {}
    for path, value in pairs:
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


def linen_vars_to_nnx_attrs(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Turn Linen variables ``{collection: tree}`` into one nested dict of nnxlib variables.

    The collection level goes away (it is the variables' kind). The same path in two
    collections cannot be represented and raises, naming it.

    Example:
        >>> import jax.numpy as jnp
        >>> from bridge import linen_vars_to_nnx_attrs
        >>> attrs = linen_vars_to_nnx_attrs({"params": {"bn": {"scale": jnp.ones(2)}},
        ...                                  "batch_stats": {"bn": {"mean": jnp.zeros(2)}}})
        >>> {k: type(v).__name__ for k, v in sorted(attrs["bn"].items())}
        {'mean': 'BatchStat', 'scale': 'Param'}
    """
    seen: dict[tuple, str] = {}
    pairs = []
    for col, tree in variables.items():
        if not isinstance(tree, Mapping):
            raise errors.GraphStructureError(
                f"Collection {col!r} holds a {type(tree).__name__}, expected a mapping of "
                "variable names to values. Hint: pass Linen variables as returned by "
                "init: {'params': {...}, 'batch_stats': {...}}."
            )
        for path, value in _flat_items(tree):
            if path in seen:
                raise errors.GraphStructureError(
                    f"The variable {errors.format_path(path)} is in both collection "
                    f"{seen[path]!r} and collection {col!r}; nnxlib keeps one variable per "
                    "path, of one kind. Hint: rename one of them in the Linen module."
                )
            seen[path] = col
            pairs.append((path, to_nnx_var(col, value)))
    return _nested(pairs)


def nnx_attrs_to_linen_vars(nnx_attrs: Mapping[str, Any],
                            metadata_fn: Callable[[nnxlib.Variable], Any] | None = to_linen_var
                            ) -> dict:
    """Turn a nested dict (or ``State``) of nnxlib variables into ``{collection: tree}``.

    Each variable goes to the collection of its kind, converted by ``metadata_fn``
    (``None`` keeps bare values).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> from bridge import nnx_attrs_to_linen_vars
        >>> tree = {"bn": {"scale": nnx.Param(jnp.ones(2)), "mean": nnx.BatchStat(jnp.zeros(2))}}
        >>> out = nnx_attrs_to_linen_vars(tree)
        >>> sorted(out), sorted(out["params"]["bn"])
        (['batch_stats', 'params'], ['scale'])
    """
    pairs = []
    for path, variable in _flat_items(nnx_attrs):
        if not isinstance(variable, nnxlib.Variable):
            raise errors.GraphStructureError(
                f"{errors.format_path(path)} holds a {type(variable).__name__}, expected an nnxlib "
                "Variable (its kind names the Linen collection). Hint: wrap the value in "
                "nnx.Param / nnx.BatchStat / ... ."
            )
        col = nnxlib.variable_name_from_type(type(variable), allow_register=True)
        value = variable.get_value() if metadata_fn is None else metadata_fn(variable)
        pairs.append(((col, *path), value))
    return _nested(pairs)


def sort_variable_types(types: Iterable[type]) -> list[type]:
    """``types`` as a list with every class before its base classes, so that the first
    ``isinstance`` match in it is the most specific type (``Param`` subclasses before
    ``Param``, ``Param`` before ``Variable``). Classes deeper in the hierarchy come
    first; classes equally deep keep their given order.

    Example:
        >>> import nnxlib as nnx
        >>> from bridge.variables import sort_variable_types
        >>> class Fast(nnx.Param):
        ...     pass
        >>> [t.__name__ for t in sort_variable_types([nnx.Variable, nnx.Param, Fast])]
        ['Fast', 'Param', 'Variable']
    """
    return sorted(types, key=lambda t: -len(t.__mro__))
