"""``shard_map``: map a function of modules over the shards of a device mesh.

A thin layer over ``jax.shard_map``. ``in_specs`` has one entry per positional argument
(or one spec for all of them). For a module argument the entry is

* a ``PartitionSpec`` for every array of the module (``P()`` replicates it),
* an :class:`~nnxlib.StateSharding` (or a :class:`~nnxlib.StateAxes`, as ``nnx.prefix``
  builds) mapping filters to ``PartitionSpec`` s (first match wins; unmatched arrays
  are replicated), or
* a ``State`` of ``PartitionSpec`` s with the module's paths (for a ``State``
  argument, a ``State`` spec is a pytree prefix of it, as in ``jax.shard_map``).

Inside, the function sees each module rebuilt from its local shards. Every array of the
module arguments comes back out with its input spec and is written into the caller's
variables, so state changed inside (for example statistics reduced with ``pmean``) is
visible afterwards; values changed per device must be made equal across the mesh axes
their spec replicates over (``check_vma`` verifies this). ``out_specs`` is a prefix of
the function's output (variables and ``State`` s count as pytrees of arrays); returning
a module argument gives back the caller's module.

Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.sharding import PartitionSpec as P
    >>> import nnxlib as nnx
    >>> mesh = jax.sharding.Mesh(jax.devices(), ("data",))
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> f = nnx.shard_map(lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("data")),
    ...                   out_specs=P("data"))
    >>> y = f(model, jnp.ones((16, 2)))
    >>> y.shape, len(y.sharding.device_set)
    ((16, 3), 8)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnxlib.errors import format_path
from nnxlib.graph import is_graph_node, is_node_or_variable
from nnxlib.graph.mode import Mode, resolve_mode
from nnxlib.state import State
from nnxlib.transforms import _axes, _full_state, _lift
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms._sharding import StateSharding, resolve_entry
from nnxlib.transforms._tree_mode import raise_returned_input
from nnxlib.transforms.axes import StateAxes, TreeState

__all__ = ["shard_map"]


class _Pair:
    """A spec and the argument subtree it covers (a pytree leaf)."""

    __slots__ = ("spec", "sub")

    def __init__(self, spec: Any, sub: Any):
        self.spec, self.sub = spec, sub


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (PartitionSpec, StateSharding, StateAxes, State,
                                    TreeState))


def _is_plain_spec(x: Any) -> bool:
    return x is None or isinstance(x, PartitionSpec)


def _pairs(spec: Any, arg: Any) -> list:
    """``_Pair`` s of ``spec`` (a prefix of ``arg``) and the subtrees they cover; a
    ``State`` spec covering a ``State`` (not a module) is a prefix of it."""
    pairs = jax.tree.map(_Pair, spec, arg, is_leaf=_is_spec_leaf)
    out = []
    for pair in jax.tree_util.tree_leaves(pairs, is_leaf=lambda x: isinstance(x, _Pair)):
        if isinstance(pair.spec, State) and not is_graph_node(pair.sub):
            inner = jax.tree.map(_Pair, pair.spec, pair.sub, is_leaf=_is_plain_spec)
            out += jax.tree_util.tree_leaves(inner, is_leaf=lambda x: isinstance(x, _Pair))
        else:
            out.append(pair)
    return out


def _as_partition_spec(spec: Any, where: str) -> PartitionSpec:
    if spec is None:
        return PartitionSpec()
    if isinstance(spec, PartitionSpec):
        return spec
    raise TypeError(
        f"shard_map: {where} needs a PartitionSpec, got {type(spec).__name__}. "
        "StateSharding and State specs apply to module arguments only."
    )


def _resolve(spec: Any, path: tuple, leaf: Any, where: str) -> PartitionSpec:
    # A path a State spec does not list is replicated.
    found = resolve_entry(spec, path, leaf, missing=PartitionSpec())
    return _as_partition_spec(found, f"the state at {where}")


def _leaf_specs(in_specs: Any, args: tuple, ext: _lift.Extracted) -> tuple[list, list]:
    """One PartitionSpec per graph leaf value and per other leaf of ``args``."""
    per_arg = in_specs if isinstance(in_specs, (tuple, list)) else (in_specs,) * len(args)
    if len(per_arg) != len(args):
        raise ValueError(
            f"shard_map: in_specs has {len(per_arg)} entries but the function got "
            f"{len(args)} positional arguments. Hint: give one spec per argument."
        )
    flat_specs: list = []  # per leaf of args flattened with graph objects as leaves
    for i, (spec, arg) in enumerate(zip(per_arg, args)):
        try:
            pairs = _pairs(spec, arg)
        except ValueError as error:
            raise ValueError(
                f"shard_map: in_specs[{i}] is not a prefix of argument {i}: {error}"
            ) from None
        for pair in pairs:
            n = len(jax.tree_util.tree_leaves(pair.sub, is_leaf=is_node_or_variable))
            flat_specs += [pair.spec] * n
    positions = set(ext.node_positions)
    other_specs = [_as_partition_spec(s, f"argument leaf {p}")
                   for p, s in enumerate(flat_specs) if p not in positions]
    if ext.plan is None:
        return [], other_specs
    root_specs = [flat_specs[p] for p in ext.node_positions]
    graphdef, template = ext.plan.graphdef, ext.plan.template
    value_specs = [
        _resolve(root_specs[path[0]], path[1:], leaf, format_path(path[1:]))
        for path, leaf in zip(graphdef.paths, template)
    ]
    names = _axes.leaf_names((args, {}), is_node_or_variable)
    _axes.check_shared_entries(
        graphdef, template, value_specs,
        lambda root, path, leaf: _resolve(root_specs[root], path, leaf, format_path(path)),
        [names[p] for p in ext.node_positions], "shard_map in_specs", "spec")
    return value_specs, other_specs


def shard_map(f: Callable[..., Any] | None = None, *, mesh: Any, in_specs: Any,
              out_specs: Any, axis_names: Any = frozenset(), check_vma: bool = True,
              check_rep: bool | None = None, auto: Any = None, graph: bool | None = None,
              graph_updates: bool | None = None) -> Any:
    """``jax.shard_map`` for functions whose arguments hold modules.

    ``in_specs`` gives one spec per positional argument (see the module docstring for
    module arguments); ``out_specs`` is a ``PartitionSpec`` prefix of the output.
    ``axis_names`` are the mesh axes the function is manual over (all by default);
    ``auto`` (the older spelling) names the axes left automatic instead. ``check_rep``
    is the older name of ``check_vma``. Keyword arguments are not supported. Usable as
    a decorator.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jax.sharding import PartitionSpec as P
        >>> import nnxlib as nnx
        >>> mesh = jax.sharding.Mesh(jax.devices(), ("data",))
        >>> counter = nnx.Variable(jnp.array(0.0))
        >>> @nnx.shard_map(mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
        ... def total(counter, x):
        ...     s = jax.lax.psum(x.sum(), "data")
        ...     counter[...] += s          # the same on every device
        ...     return s
        >>> float(total(counter, jnp.arange(16.0))), float(counter[...])
        (120.0, 120.0)
    """
    mode = resolve_mode(graph, graph_updates)
    in_specs = prefix_argument(in_specs, "in_specs", "nnx.shard_map", mode)
    out_specs = prefix_argument(out_specs, "out_specs", "nnx.shard_map", mode)
    if f is None:
        return functools.partial(shard_map, graph=mode.graph, graph_updates=mode.updates,
                                 mesh=mesh, in_specs=in_specs,
                                 out_specs=out_specs, axis_names=axis_names,
                                 check_vma=check_vma, check_rep=check_rep, auto=auto)
    check_function(f, "nnx.shard_map")
    if check_rep is not None:
        check_vma = check_rep
    if auto is not None:
        axis_names = frozenset(mesh.axis_names) - frozenset(auto)
    entries: dict = {}

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(
                f"shard_map: keyword arguments {sorted(kwargs)} are not supported; pass "
                "every argument positionally (in_specs has one entry per argument)."
            )
        ext = _lift.extract(args, mode, "nnx.shard_map")
        key = ext.key
        mapped = entries.get(key)
        if mapped is None:
            value_specs, other_specs = _leaf_specs(in_specs, args, ext)
            # jax.jit caches the trace and the compiled program (eager shard_map
            # would re-trace and run op by op on every call).
            # (out_shardings: the outputs keep out_specs as written, P(None) included,
            # as eager jax.shard_map gives them; jax.jit alone would normalise them.)
            mapped = entries[key] = jax.jit(jax.shard_map(
                _make_pure(f, key, mode), mesh=mesh, in_specs=(value_specs, other_specs),
                out_specs=(value_specs, out_specs), axis_names=frozenset(axis_names),
                check_vma=check_vma), out_shardings=(None, _named(mesh, out_specs)))
        values, out = mapped(ext.values, ext.others)
        _full_state.write_values(ext.plan, range(len(values)), values)
        if ext.plan is None:
            return out
        objects = ext.plan.objects
        return jax.tree.map(
            lambda x: objects[x.value[1]] if isinstance(x, _lift.StaticBox) else x, out,
            is_leaf=lambda x: isinstance(x, _lift.StaticBox))

    return wrapper


def _named(mesh: Any, specs: Any) -> Any:
    if not isinstance(mesh, Mesh):  # an AbstractMesh: jax.jit takes no sharding on it
        return None
    return jax.tree.map(lambda p: None if p is None else NamedSharding(mesh, p), specs,
                        is_leaf=_is_plain_spec)


def _make_pure(f: Callable, key: tuple, mode: Mode) -> Callable:
    def pure(values: list, others: list) -> tuple:
        rebuilt = _lift.rebuild(key, values, others)
        out = f(*rebuilt.tree)
        index_of = {id(obj): index for index, obj in rebuilt.objects.items()}

        def mark(x: Any) -> Any:
            if is_graph_node(x):
                index = index_of.get(id(x))
                if index is None:
                    raise TypeError(
                        f"shard_map: the function returned a new {type(x).__name__}; only "
                        "arrays, variables, States and the module arguments themselves "
                        "can be returned. Hint: return nnx.state(module) instead."
                    )
                if not mode.updates:
                    raise_returned_input("nnx.shard_map", mode, type(x).__name__)
                return _lift.StaticBox(("node", index))
            return x

        out = jax.tree.map(mark, out, is_leaf=is_graph_node)
        out = _full_state.detach(out, "shard_map")
        return _full_state.full_values(rebuilt, key, "shard_map"), out

    return pure
