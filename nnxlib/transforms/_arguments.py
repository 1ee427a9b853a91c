"""Checks of a transform's own arguments, made once when the transform is created.

Two kinds of mistakes are caught before anything is traced:

* the function is a bound method of a module (``nnx.jit(model.step)``): the module
  would be captured as a constant, so its state would neither be traced nor updated;
* a *prefix* argument (``in_axes``, ``in_shardings``, ``argnums``, ``in_specs``, ...)
  holds something that cannot be a prefix: a Variable, a graph node in graph mode, or
  a filter-keyed mapping (``StateAxes``, ``StateSharding``, ``DiffState``: the
  ``axes.PrefixMapping`` kinds) where there are no graph updates to apply it to.

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.graph.mode import GRAPH
    >>> check_prefix((0, None), "in_axes", "nnx.vmap", GRAPH)   # fine
    >>> check_prefix(nnx.Param(0), "in_axes", "nnx.vmap", GRAPH)
    Traceback (most recent call last):
    ...
    ValueError: nnx.vmap: `in_axes` holds a Param at <root>. Variables prefixes are not supported...
"""

from __future__ import annotations

from typing import Any

import jax

from nnxlib.graph._graphdef import is_graph_node, node_impl
from nnxlib.graph.mode import Mode
from nnxlib.state import State
from nnxlib.transforms.axes import PrefixMapping, TreeState
from nnxlib.variables import Variable

__all__ = ["check_function", "check_prefix", "prefix_argument"]


def check_function(f: Any, transform: str) -> None:
    """Refuse a bound method of a graph node as the function of ``transform``.

    ``nnx.jit(model.step)`` would close over ``model``: its arrays would be baked into
    the trace as constants and its updates could not flow back. flax.nnx refuses it
    too; the unbound method with the module as an argument does what was meant.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        >>> check_function(nnx.Linear.__call__, "nnx.jit")      # fine
        >>> check_function(model.__call__, "nnx.jit")
        Traceback (most recent call last):
        ...
        ValueError: nnx.jit does not support bound methods: ...
    """
    owner = getattr(f, "__self__", None)
    if owner is None or isinstance(owner, type) or not is_graph_node(owner):
        return
    cls = type(owner).__name__
    name = getattr(f, "__name__", "method")
    raise ValueError(
        f"{transform} does not support bound methods: {cls}.{name} is bound to a {cls} "
        f"instance, which the transform would capture as a constant (its state would "
        f"neither be traced nor updated). Expected a function that takes the module as "
        f"an argument. Hint: {transform}({cls}.{name})(module, ...), with the unbound "
        "method.")


def _is_sharding(x: Any) -> bool:
    # A State of shardings as nnx.get_named_sharding makes it (Variables holding them)
    # is a fine sharding prefix: each variable gives its own entry.
    return isinstance(x, (jax.sharding.Sharding, jax.sharding.PartitionSpec))


def _is_prefix_leaf(x: Any) -> bool:
    return isinstance(x, (Variable, PrefixMapping)) or is_graph_node(x)


def check_prefix(prefix: Any, name: str, transform: str, mode: Mode) -> None:
    """Refuse what cannot be a prefix in ``prefix`` (the argument ``name`` of
    ``transform``): a Variable (unless it holds a sharding, as the State made by
    ``nnx.get_named_sharding`` does); a graph node in graph mode; a
    :class:`PrefixMapping` without graph updates. The messages carry flax.nnx's key phrases.

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.graph.mode import Mode
        >>> check_prefix(nnx.StateAxes({...: 0}), "in_axes", "nnx.vmap", Mode(False, False))
        Traceback (most recent call last):
        ...
        ValueError: nnx.vmap: `in_axes` cannot contain `StateAxes` objects when `graph=False` or `graph_updates=False` (found at <root>)...
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(prefix, is_leaf=_is_prefix_leaf)[0]:
        where = jax.tree_util.keystr(path) or "<root>"
        kind = type(leaf).__name__
        if isinstance(leaf, Variable) and not _is_sharding(leaf._raw_value):
            raise ValueError(
                f"{transform}: `{name}` holds a {kind} at {where}. Variables prefixes "
                "are not supported: a prefix gives one entry for a whole variable, not a "
                f"variable holding the entry.\nExpected: an int, None or a spec. Hint: "
                f"put the entry itself where the {kind} is.")
        if isinstance(leaf, PrefixMapping) and not (mode.graph and mode.updates):
            raise ValueError(
                f"{transform}: `{name}` cannot contain `{kind}` objects when "
                f"`graph=False` or `graph_updates=False` (found at {where}): a {kind} "
                "maps a module's state by filters, which needs graph mode with graph "
                f"updates.\nHint: pass graph=True, graph_updates=True, or use "
                f"nnx.compat.{transform.removeprefix('nnx.')}, or give plain prefixes.")
        if is_graph_node(leaf) and mode.graph:
            raise ValueError(
                f"{transform}: `{name}` holds a {kind} at {where}. Graph nodes are not "
                "allowed as prefixes when graph=True.\nExpected: ints, None, specs or "
                f"filter mappings (nnx.StateAxes, ...). Hint: remove the {kind} from "
                f"`{name}`, or pass graph=False to use a module-shaped prefix.")


def prefix_argument(prefix: Any, name: str, transform: str, mode: Mode) -> Any:
    """:func:`check_prefix`, then the prefix as the transform reads it: in tree mode a
    module-shaped prefix (a module whose variables are replaced by entries, as
    ``nnx.prefix(..., graph=False)`` makes) becomes a per-path ``TreeState``.

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.graph.mode import Mode
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> prefix = nnx.prefix(model, {nnx.Param: 0}, graph=False)
        >>> tree_state = prefix_argument((prefix, None), "in_axes", "nnx.vmap",
        ...                              Mode(False, False))[0]
        >>> tree_state.state["kernel"], tree_state.state["bias"]
        (0, 0)
    """
    check_prefix(prefix, name, transform, mode)
    if mode.graph:
        return prefix
    return jax.tree_util.tree_map(
        lambda x: _tree_state(x) if is_graph_node(x) else x,
        prefix, is_leaf=_is_prefix_leaf)


def _tree_state(node: Any) -> TreeState:
    paths, entries = zip(*_entries(node)) if node_impl(type(node)) else ((), ())
    return TreeState(State._from_flat(tuple(paths), list(entries)))


def _entries(node: Any, path: tuple = ()) -> Any:
    """``(path, entry)`` of a module-shaped prefix, for each value it holds that is not
    itself a node (a variable gives its value)."""
    impl = node_impl(type(node))
    if isinstance(node, Variable):
        yield path, node._raw_value
    elif impl is None:
        yield path, node
    else:
        for key, child in impl.children(node):
            yield from _entries(child, path + (key,))
