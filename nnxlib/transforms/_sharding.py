"""Sharding specifications for transform arguments that hold modules.

A module argument's arrays can be placed by one sharding for all of them, by a
:class:`StateSharding` (or a :class:`~nnxlib.StateAxes`, what ``nnx.prefix`` builds)
that maps filters to shardings (first match wins), or by a ``State`` of shardings with
the module's paths. :func:`resolve_entry` is the one rule for all of them (``jit``'s
``in_shardings``/``out_shardings`` and ``shard_map``'s ``in_specs``); ``jit`` resolves
them once per traced signature into one sharding per array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import PartitionSpec

from nnxlib.filters import to_predicate
from nnxlib.graph import is_graph_node, is_node_or_variable
from nnxlib.state import State
from nnxlib.transforms._axes import check_shared_entries, iter_variables, leaf_names
from nnxlib.transforms.axes import PrefixMapping, StateAxes, TreeState
from nnxlib.variables import Variable

__all__ = ["StateSharding", "leaf_shardings", "constrain", "constrain_outputs",
           "argument_of_leaves", "resolve_entry", "constrain_changed_inputs",
           "constrain_graph_outputs", "place_inputs"]

_SET_RAW = Variable._raw_value.__set__  # type: ignore[attr-defined]


class StateSharding(PrefixMapping):
    """Shardings for a module's state chosen by filters, first match wins.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> mesh = jax.make_mesh((1,), ("data",))
        >>> replicated = jax.sharding.NamedSharding(mesh, jax.P())
        >>> spec = nnx.StateSharding({nnx.Param: replicated, ...: None})
        >>> spec.resolve(("kernel",), nnx.Param(0.0)) is replicated
        True
    """

    def __init__(self, filter_sharding: Any, /):
        # A State of shardings (the model's paths) or filter -> sharding pairs (a
        # mapping or an iterable of pairs), as flax.nnx.StateSharding accepts.
        self._by_path = filter_sharding if isinstance(filter_sharding, State) else None
        pairs = () if self._by_path is not None else (
            filter_sharding.items() if isinstance(filter_sharding, Mapping)
            else filter_sharding)
        self.filter_shardings = dict(pairs)
        self._predicates = [(to_predicate(f), s) for f, s in self.filter_shardings.items()]

    def resolve(self, path: tuple, leaf: Any) -> Any:
        """The sharding for the leaf at ``path`` (None if no filter matches).

        Example:
            >>> import nnxlib as nnx
            >>> from jax.sharding import PartitionSpec as P
            >>> spec = nnx.StateSharding({nnx.Param: P("model"), ...: P()})
            >>> spec.resolve(("kernel",), nnx.Param(0.0)) == P("model")
            True
            >>> spec.resolve(("index",), nnx.Cache(0)) == P()
            True
        """
        if self._by_path is not None:
            return resolve_entry(self._by_path, path, leaf)
        for predicate, sharding in self._predicates:
            if predicate(path, leaf):
                return sharding
        return None

    def __repr__(self) -> str:
        spec = self._by_path if self._by_path is not None else self.filter_shardings
        return f"StateSharding({spec!r})"


def argument_of_leaves(args: tuple, kwargs: dict) -> list:
    """For every leaf of ``(args, kwargs)`` flattened with graph objects as leaves, the
    positional index or keyword name of the argument it came from."""
    owners: list = []
    for i, arg in enumerate(args):
        owners += [i] * len(jax.tree_util.tree_leaves(arg, is_leaf=is_node_or_variable))
    for name in sorted(kwargs):  # the order tree_flatten uses for dict keys
        owners += [name] * len(jax.tree_util.tree_leaves(kwargs[name],
                                                         is_leaf=is_node_or_variable))
    return owners


def resolve_entry(spec: Any, path: tuple, leaf: Any, missing: Any = None) -> Any:
    """The sharding (or ``PartitionSpec``) that the spec of a module argument gives the
    leaf at ``path`` of that module.

    ``spec`` is one sharding or ``PartitionSpec`` for all leaves, a
    :class:`StateSharding` or :class:`~nnxlib.StateAxes` (filters, first match wins),
    a ``State`` of them with the module's paths (``missing`` for a path it does not
    list), or None (no constraint).

    Example:
        >>> import nnxlib as nnx
        >>> from jax.sharding import PartitionSpec as P
        >>> spec = nnx.StateAxes({nnx.PathContains("kernel"): P(None, "model"), ...: P()})
        >>> resolve_entry(spec, ("kernel",), nnx.Param(0.0))
        P(None, 'model')
        >>> resolve_entry(nnx.State({"kernel": P("a")}), ("bias",), nnx.Param(0.0), P())
        P()
    """
    if spec is None or isinstance(spec, (jax.sharding.Sharding, PartitionSpec)):
        return spec
    if isinstance(spec, StateSharding):
        return spec.resolve(path, leaf)
    if isinstance(spec, (StateAxes, TreeState)):
        return spec.axis_for(path, leaf, "sharding prefix")
    if isinstance(spec, State):
        node: Any = spec
        try:
            for key in path:
                node = node[key]
        except (KeyError, IndexError, TypeError):
            return missing
        # jax.tree.map over a model's state keeps the Variable boxes around shardings
        return node.get_value() if isinstance(node, Variable) else node
    raise TypeError(
        f"Invalid sharding spec {type(spec).__name__} for the module state at "
        f"{'/'.join(map(str, path))!r}. Expected a jax.sharding.Sharding, a "
        "PartitionSpec, a StateSharding, a StateAxes or a State of shardings. Hint: "
        "build per-filter shardings with nnx.StateSharding({filter: sharding, ...})."
    )


def leaf_shardings(in_shardings: Any, ext: Any, args: tuple, kwargs: dict,
                   signature: Any) -> tuple[list | None, list | None]:
    """Per-leaf shardings ``(for graph values, for other leaves)`` or ``(None, None)``."""
    if in_shardings is None:
        return None, None
    owners = argument_of_leaves(args, kwargs)
    per_arg = in_shardings if isinstance(in_shardings, (tuple, list)) else None

    def spec_for(owner: Any) -> Any:
        if per_arg is None:
            return in_shardings
        return per_arg[owner] if isinstance(owner, int) and owner < len(per_arg) else None

    value_shardings: list | None = None
    if ext.plan is not None:
        roots = [owners[p] for p in ext.node_positions]
        graphdef, template = ext.plan.graphdef, ext.plan.template
        value_shardings = [
            resolve_entry(spec_for(roots[path[0]]), path[1:], leaf)
            for path, leaf in zip(graphdef.paths, template)
        ]
        names = leaf_names((args, kwargs), is_node_or_variable)
        check_shared_entries(
            graphdef, template, value_shardings,
            lambda root, path, leaf: resolve_entry(spec_for(roots[root]), path, leaf),
            [names[p] for p in ext.node_positions], "jit in_shardings", "sharding")
    chosen = set(ext.node_positions)
    other_owners = [o for i, o in enumerate(owners) if i not in chosen]
    other_shardings = []
    for i, owner in enumerate(other_owners):
        spec = spec_for(owner)
        if spec is not None and not isinstance(spec, jax.sharding.Sharding):
            arg = args[owner] if isinstance(owner, int) else kwargs[owner]
            specs = jax.tree_util.tree_leaves(
                spec, is_leaf=lambda x: x is None or isinstance(x, jax.sharding.Sharding))
            leaves = jax.tree_util.tree_leaves(arg, is_leaf=is_node_or_variable)
            if len(specs) != len(leaves):
                raise ValueError(
                    f"jit: in_shardings for argument {owner!r} has {len(specs)} entries "
                    f"but the argument has {len(leaves)} arrays. Hint: give one sharding "
                    "for the whole argument or a pytree matching it."
                )
            start = other_owners.index(owner)
            spec = specs[i - start]
        other_shardings.append(spec)
    return value_shardings, other_shardings


def constrain(x: Any, sharding: Any) -> Any:
    """Constrain traced ``x`` to ``sharding``.

    ``jax.sharding.reshard`` when the sharding names only ``Explicit`` mesh axes (the
    default of ``jax.make_mesh``; ``with_sharding_constraint`` rejects those),
    ``jax.lax.with_sharding_constraint`` otherwise.
    """
    if isinstance(sharding, jax.sharding.NamedSharding) and _explicit(sharding):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def _explicit(sharding: Any) -> bool:
    mesh = sharding.mesh
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    named = [name for entry in sharding.spec
             for name in (entry if isinstance(entry, tuple) else (entry,))
             if isinstance(name, str)]
    explicit = jax.sharding.AxisType.Explicit
    if any(types.get(name) != explicit for name in named):
        return False
    return any(t == explicit for t in mesh.axis_types)


def constrain_outputs(out: Any, spec: Any) -> Any:
    """Apply :func:`constrain` to the arrays of ``out`` using a prefix ``spec``."""
    if isinstance(spec, jax.sharding.Sharding):
        return jax.tree.map(lambda x: constrain(x, spec)
                            if isinstance(x, jax.Array) else x, out)
    return jax.tree.map(
        lambda s, x: x if s is None else jax.tree.map(lambda a: constrain(a, s), x),
        spec, out, is_leaf=lambda x: x is None or isinstance(x, jax.sharding.Sharding))


# ------------------------------------------------ applied inside and around the trace
def _spec_entry(x: Any) -> bool:
    return x is None or isinstance(x, (jax.sharding.Sharding, PartitionSpec, StateSharding,
                                       StateAxes, TreeState, State))


def _module_entry(x: Any) -> bool:
    return isinstance(x, (StateSharding, StateAxes, TreeState, State))


def _constrain_nodes(pairs: list, keep: set) -> None:
    """Give each variable of each ``(node, spec)`` pair the value constrained to the
    sharding ``spec`` gives it (by path); values whose id is in ``keep`` stay."""
    roots = [node for node, _ in pairs]
    for i, path, var in iter_variables(roots):
        value = var._raw_value
        if id(value) in keep or not isinstance(value, jax.Array):
            continue
        sharding = resolve_entry(pairs[i][1], path, var)
        if sharding is not None:
            _SET_RAW(var, constrain(value, sharding))


def constrain_changed_inputs(tree: Any, in_shardings: Any, in_values: list) -> None:
    """Inside ``jit``'s trace, after the function ran: constrain the variables of the
    module arguments in ``tree`` (``(args, kwargs)``) whose value the function replaced
    (or created) to the sharding ``in_shardings`` gives them, as flax.nnx does with the
    state it returns. Unchanged values (ids in ``in_values``) are left alone: they are
    not returned."""
    args, kwargs = tree
    per_arg = in_shardings if isinstance(in_shardings, (tuple, list)) else None
    # (as leaf_shardings: one spec for all arguments, or one per positional argument)
    owned = list(enumerate(args)) + ([] if per_arg is not None else list(kwargs.items()))
    pairs = []
    for i, arg in owned:
        spec = in_shardings if per_arg is None else (per_arg[i] if i < len(per_arg)
                                                     else None)
        if spec is not None:
            pairs += [(node, spec) for node in jax.tree_util.tree_leaves(
                arg, is_leaf=is_node_or_variable) if is_graph_node(node)]
    if pairs:
        _constrain_nodes(pairs, {id(v) for v in in_values})


def constrain_graph_outputs(out: Any, out_shardings: Any) -> None:
    """Inside the trace: constrain the variables of the modules in ``out`` to the
    shardings their entry of ``out_shardings`` (a prefix of ``out``) gives them."""
    pairs: list = []

    def pair(spec: Any, sub: Any) -> None:
        if spec is not None:
            pairs.extend((node, spec) for node in jax.tree_util.tree_leaves(
                sub, is_leaf=is_node_or_variable) if is_graph_node(node))

    jax.tree_util.tree_map(pair, out_shardings, out, is_leaf=_spec_entry)
    if pairs:
        _constrain_nodes(pairs, set())


def jax_out_shardings(out_shardings: Any) -> Any:
    """``out_shardings`` for ``jax.jit`` (module outputs travel as changed values and
    are constrained inside the trace): entries that only apply to modules become None.

    Example:
        >>> import nnxlib as nnx
        >>> from jax.sharding import PartitionSpec as P
        >>> jax_out_shardings((nnx.StateSharding({...: P()}), P("a")))
        (None, P('a',))
    """
    return jax.tree_util.tree_map(lambda s: None if _module_entry(s) else s,
                                  out_shardings, is_leaf=_spec_entry)


def placements(value_shardings: list | None, template: list) -> tuple | None:
    """``(position, sharding)`` of the graph leaves that are variables with an input
    sharding: what :func:`place_inputs` places (None when there are none)."""
    if value_shardings is None:
        return None
    found = tuple((i, s) for i, (s, leaf) in enumerate(zip(value_shardings, template))
                  if isinstance(s, jax.sharding.Sharding) and isinstance(leaf, Variable))
    return found or None


def place_inputs(values: list, template: list, found: tuple) -> None:
    """Before a ``graph_updates`` call: put each caller's variable value that is not on
    its input sharding there and keep it in the variable (``values`` is updated too), so
    that ``in_shardings`` shards the module as in flax.nnx, where the state returned
    from the call carries them. A value already there costs one comparison."""
    for i, sharding in found:
        value = values[i]
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer) \
                and value.sharding != sharding:
            values[i] = placed = jax.device_put(value, sharding)
            _SET_RAW(template[i], placed)
