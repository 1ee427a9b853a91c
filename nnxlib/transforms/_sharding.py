"""Sharding specifications for transform arguments that hold modules.

A module argument's arrays can be placed by one sharding for all of them, by a
:class:`StateSharding` that maps filters to shardings (first match wins), or by a
``State`` of shardings with the module's paths. These are resolved once per traced
signature into one sharding per array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from nnxlib.filters import to_predicate
from nnxlib.graph import is_node_or_variable
from nnxlib.state import State
from nnxlib.transforms.axes import PrefixMapping, TreeState
from nnxlib.variables import Variable

__all__ = ["StateSharding", "leaf_shardings", "constrain", "constrain_outputs",
           "argument_of_leaves"]


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
            return _resolve(self._by_path, path, leaf)
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


def _resolve(spec: Any, path: tuple, leaf: Any) -> Any:
    if spec is None or isinstance(spec, jax.sharding.Sharding):
        return spec
    if isinstance(spec, StateSharding):
        return spec.resolve(path, leaf)
    if isinstance(spec, TreeState):
        return spec.axis_for(path, leaf, "in_shardings")
    if isinstance(spec, State):
        node: Any = spec
        for key in path:
            node = node[key]
        # jax.tree.map over a model's state keeps the Variable boxes around shardings
        return node.get_value() if isinstance(node, Variable) else node
    raise TypeError(
        f"Invalid sharding spec {type(spec).__name__} for the module state at "
        f"{'/'.join(map(str, path))!r}. Expected a jax.sharding.Sharding, a StateSharding "
        "or a State of shardings."
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
        value_shardings = [
            _resolve(spec_for(roots[path[0]]), path[1:], leaf)
            for path, leaf in zip(ext.plan.graphdef.paths, ext.plan.template)
        ]
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
