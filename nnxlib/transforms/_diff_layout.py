"""The argument layout shared by ``vjp``/``jvp`` and ``custom_vjp``.

A call's arguments are split into graph leaves (module state) and other leaves; the
layout records which are differentiable and how to put values back together.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nnxlib import graph as graphlib
from nnxlib.errors import format_path
from nnxlib.graph import is_graph_node, is_node_or_variable
from nnxlib.graph.mode import GRAPH, Mode
from nnxlib.state import State, to_flat_state
from nnxlib.transforms import _axes, _full_state, _lift
from nnxlib.variables import Variable

_MISSING: Any = object()


# ------------------------------------------------------------- argument layout
class _Layout:
    """Where each leaf of an argument tuple lives (graph objects are roots)."""

    def __init__(self, args: tuple, ext: _lift.Extracted):
        self.ext: _lift.Extracted | None = ext  # (read by _assemble, for vjp)
        node_positions = ext.node_positions
        self.root_at = {p: r for r, p in enumerate(node_positions)}
        owners: list = []
        self.arg_treedefs = []
        self.arg_ranges = []
        for i, arg in enumerate(args):
            leaves, treedef = jax.tree_util.tree_flatten(arg, is_leaf=is_node_or_variable)
            self.arg_treedefs.append(treedef)
            self.arg_ranges.append((len(owners), len(owners) + len(leaves)))
            owners += [i] * len(leaves)
        self.leaf_owner = owners
        self.root_owner = tuple(owners[p] for p in node_positions)
        self.other_index: dict = {}  # flat leaf position -> index among the others
        for p in range(len(owners)):
            if p not in self.root_at:
                self.other_index[p] = len(self.other_index)
        plan = ext.plan
        self.paths = plan.graphdef.paths if plan is not None else ()
        self.template = plan.template if plan is not None else []
        self.path_index = {path: j for j, path in enumerate(self.paths)}
        self.root_leaves: list = [[] for _ in node_positions]
        for j, path in enumerate(self.paths):
            self.root_leaves[path[0]].append(j)
        self.root_defs = ([d for _, d in plan.graphdef.root.attributes]
                          if plan is not None else [])

    def owner_of_leaf(self, j: int) -> int:
        return self.root_owner[self.paths[j][0]]

    def root_value(self, r: int, values: dict) -> Any:
        """The State (or Variable, for a bare variable root) of root ``r``'s entries."""
        js = [j for j in self.root_leaves[r] if j in values]
        if self.root_defs[r].kind == "variable":
            if not js:
                return None
            return self._wrap(js[0], values[js[0]])
        return State._from_flat(tuple(self.paths[j][1:] for j in js),
                                [self._wrap(j, values[j]) for j in js])

    def detach(self) -> None:
        """Keep no live object (for a layout cached across calls, which must not keep a
        deleted model alive): the leaves become stand-ins made from the definitions,
        which carry what :meth:`_wrap` needs (the Variable type and metadata)."""
        self.ext = None
        self.template = [_axes.probe(d, None) for root in self.root_defs
                         for _, d in _axes.iter_def_leaves(root)]

    def _wrap(self, j: int, value: Any) -> Any:
        leaf = self.template[j]
        return leaf.replace(value) if isinstance(leaf, Variable) else value

    def root_entries(self, r: int, item: Any, where: str) -> list:
        """``[(leaf index, value)]`` from a State/module/variable given for root ``r``."""
        if item is None:
            return []
        if is_graph_node(item):
            item = graphlib.state(item, graph=True)
        if isinstance(item, State) or (isinstance(item, dict) and
                                       self.root_defs[r].kind != "variable"):
            pairs = list(to_flat_state(item if isinstance(item, State) else State(item)))
        else:
            pairs = [((), item)]
        entries = []
        for path, value in pairs:
            j = self.path_index.get((r, *path))
            if j is None:
                known = [format_path(self.paths[k][1:]) for k in self.root_leaves[r]]
                raise ValueError(
                    f"{where}: got a value at {'/'.join(map(str, path))!r} for argument "
                    f"{self.root_owner[r]}, which has no state there; its state paths are "
                    f"{known[:8]}. Hint: build it from nnx.state(module) of the same module."
                )
            entries.append((j, _full_state.raw(value)))
        return entries


def _is_inexact(value: Any) -> bool:
    try:
        return bool(jnp.issubdtype(jnp.result_type(value), jnp.inexact))
    except TypeError:
        return False


def _assemble(layout: _Layout, graph_values: dict, other_values: list,
              shaped: bool = False) -> tuple:
    """One entry per argument: States for module roots (``shaped``: modules of the same
    type, as ``jax.vjp`` shapes a pytree's cotangent; leaves without one get float0
    zeros, as integer inputs do in JAX), arrays for the other leaves."""
    flat: list = [None] * len(layout.leaf_owner)
    for p, o in layout.other_index.items():
        flat[p] = other_values[o]
    for p, r in layout.root_at.items():
        if shaped and layout.root_defs[r].kind != "variable":
            full = {j: graph_values[j] if j in graph_values else
                    np.zeros(jnp.shape(layout.ext.values[j]), jax.dtypes.float0)
                    for j in layout.root_leaves[r]}
            root = layout.ext.plan.objects[layout.root_defs[r].index]
            # build_fresh, not merge: float0 leaves are not the leaves' dtypes.
            flat[p] = graphlib.graphdef(root, graph=True).build_fresh(
                [layout._wrap(j, full[j]) for j in layout.root_leaves[r]])
        else:
            flat[p] = layout.root_value(r, graph_values)
    return jax.tree_util.tree_unflatten(layout.ext.treedef, flat)


def _split_aux(out: Any, has_aux: bool, where: str) -> tuple:
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"{where} with has_aux=True expects the function to return a pair "
            f"(output, aux), got {type(out).__name__}."
        )
    return out


def _pure_function(f: Callable, ext: Any, diff: tuple, has_aux: bool, where: str,
                   mode: Mode = GRAPH) -> Callable:
    """``f`` as a pure function ``(diff_values, others) -> (out, aux_outputs)``.

    ``diff_values`` replace the extracted graph values at positions ``diff`` (the ones
    differentiated); the rest keep their current values. The auxiliary outputs carry
    the state changes (and ``f``'s aux) for :func:`_lift.apply_outputs`.
    """
    values, key = ext.values, ext.key

    def pure(diff_values: list, others: list) -> tuple:
        vals = list(values)
        for j, v in zip(diff, diff_values):
            vals[j] = v
        rebuilt = _lift.rebuild(key, vals, others)
        out, aux = _split_aux(f(*rebuilt.tree), has_aux, where)
        out = _full_state.detach(out, where)
        info, send, other_out = _lift.collect(rebuilt, key, aux, mode, f"nnx.{where}")
        return out, (_lift.StaticBox(info), send, other_out)

    return pure
