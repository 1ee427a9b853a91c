"""Lifting stateful functions to pure ones: the machinery every transform shares.

A transform sees ``fn(*args)`` whose arguments may hold modules and variables. It

1. **extracts** them: the pytree of arguments is flattened with graph objects as
   leaves; those objects get one joint, cached split plan (so shared references across
   arguments survive) whose leaf *values* become plain arrays (:func:`extract`);
2. inside the JAX transform, **rebuilds** fresh objects from the arrays
   (:func:`rebuild`), calls ``fn``, and **collects** what changed
   (:func:`collect`): if the inputs' structure is unchanged, only the leaves whose
   value object was replaced are returned (known at trace time); otherwise every leaf
   plus the new structure is returned;
3. outside, **applies** the result (:func:`apply_outputs`): changed values are written
   into the caller's own ``Variable`` objects with one loop, a changed structure is
   merged into the caller's objects in place, and modules returned by ``fn`` are rebuilt
   (or resolved to the caller's objects when ``fn`` returned an input).

Static facts found at trace time travel out of the JAX transform as pytree aux data
(:class:`StaticBox`), so they are cached by JAX together with the trace.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
from jax.core import Tracer

from nnxlib.graph import _write_into_pytree
from nnxlib.graph._graphdef import (
    GraphDef,
    Plan,
    PytreeDef,
    _Flattener,
    _read_child,
    build,
    is_node_or_variable,
    plan_for_many,
)
from nnxlib.graph.mode import GRAPH, Mode
from nnxlib.transforms._tree_mode import Trace, check_inputs, check_outputs, root_labels
from nnxlib.variables import Variable, _refs, _tracking, expire_variable, put_raw
from nnxlib.variables._arrays import same_aval
from nnxlib.variables._raw import is_ref_mode

__all__ = ["Extracted", "extract", "rebuild", "collect", "apply_outputs", "StaticBox",
           "OutInfo", "ARGS_KWARGS"]

#: Labels of the items of an ``(args, kwargs)`` tree, for error messages.
ARGS_KWARGS = ("args", "kwargs")


class Extracted(NamedTuple):
    """Arguments split into graph leaves and ordinary pytree leaves."""

    treedef: Any  # of the whole argument tree, graph objects as leaves
    node_positions: tuple  # leaf positions that are graph objects
    plan: Plan | None  # joint plan over those objects
    values: list  # current leaf values of the objects (arrays, not Variables)
    others: list  # the remaining (non-graph) leaves

    @property
    def key(self) -> tuple:
        """Everything static about the arguments (hashable; cache key for traces)."""
        return (self.treedef, self.node_positions,
                None if self.plan is None else self.plan.graphdef)


def extract(tree: Any, mode: Mode = GRAPH, where: str = "",
            names: tuple | None = None, refs: bool = False) -> Extracted:
    """Flatten ``tree``; split the graph objects in it with one joint, cached plan.

    In tree mode (``mode.graph`` False) the objects must form a tree; ``where`` and
    ``names`` (labels of ``tree``'s top-level items, e.g. ``("args", "kwargs")``) word
    the error. Ref-backed variables give their values (arrays), or with ``refs=True``
    their ``jax.Ref`` s themselves (``jax.jit`` takes refs and mutates them in place).
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_node_or_variable)
    positions = tuple([i for i, leaf in enumerate(leaves) if is_node_or_variable(leaf)])
    if not positions:
        return Extracted(treedef, (), None, [], leaves)
    plan = plan_for_many(tuple(leaves[i] for i in positions))
    if not mode.graph:
        check_inputs(plan.graphdef, tree, positions, names, where)
    values = plan_values(plan)
    if not refs and plan.has_refs():
        values = [_refs.read(v) for v in values]
    if len(positions) == len(leaves):
        others = []
    else:
        chosen = set(positions)
        others = [leaf for i, leaf in enumerate(leaves) if i not in chosen]
    return Extracted(treedef, positions, plan, values, others)


def plan_values(plan: Plan) -> list:
    """The raw values of a plan's leaves, in leaf order."""
    if not plan.slots:  # the common case: every leaf is a Variable
        try:
            return list(map(_GET_RAW, plan.template))
        except AttributeError:  # a raw array inside a tuple attribute (it has no slot)
            pass
    values = [_raw(v) for v in plan.template]
    for position, owner, key, _ in plan.slots:
        values[position] = _read_child(owner, key)
    return values


_GET_RAW = operator.attrgetter("_raw_value")


def _raw(v: Any) -> Any:
    return v._raw_value if isinstance(v, Variable) else v


# ------------------------------------------------------------------ inside a trace
class Rebuilt(NamedTuple):
    """Fresh objects made from traced values, plus what ``collect`` needs."""

    tree: Any
    nodes: tuple
    objects: dict  # index -> fresh object
    in_values: list


def rebuild(key: tuple, values: list, others: list) -> Rebuilt:
    """Recreate the argument tree with fresh objects holding ``values`` (tracers)."""
    treedef, positions, graphdef = key
    objects: dict = {}
    if graphdef is None:
        return Rebuilt(jax.tree_util.tree_unflatten(treedef, others), (), objects, values)
    nodes = graphdef.build_fresh(values, objects)
    leaves = list(others)
    for position, node in zip(positions, nodes):
        leaves.insert(position, node)
    return Rebuilt(jax.tree_util.tree_unflatten(treedef, leaves), nodes, objects, values)


class OutInfo(NamedTuple):
    """Static description of a lifted function's outputs (hashable)."""

    fast: bool  # input structure unchanged: only changed values come back
    changed: tuple  # fast: input leaf positions whose value was replaced
    joint: GraphDef | None  # slow: new structure of inputs + returned objects
    out_defs: tuple  # fast: definitions of graph objects returned by fn
    num_inputs: int  # number of input graph roots
    out_treedef: Any  # of fn's output, graph objects as leaves
    out_positions: tuple  # leaf positions of graph objects in fn's output
    # with graph updates off only Variables are written back: an array attribute of an
    # input object is pytree data, and a function's change to it is lost as in JAX
    write_raw: bool = True


class StaticBox:
    """A pytree with no children whose aux data is a static value (here OutInfo)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jax.tree_util.register_pytree_node(
    StaticBox, lambda box: ((), box.value), lambda value, _: StaticBox(value))


def collect(rebuilt: Rebuilt, key: tuple, out: Any, mode: Mode = GRAPH,
            where: str = "", names: tuple | None = None) -> tuple[OutInfo, list, list]:
    """After ``fn`` ran on rebuilt objects: what changed, as ``(info, values, leaves)``.

    ``values`` are graph leaf values to send out; ``leaves`` are ``out``'s other leaves.
    With graph updates off (``mode``), a structural change or an aliased output raises.
    """
    graphdef = key[2]
    out_leaves, out_treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node_or_variable)
    out_positions = tuple(i for i, x in enumerate(out_leaves) if is_node_or_variable(x))
    seed = {id(obj): index for index, obj in rebuilt.objects.items()}
    flat = _Flattener(seed, first_index=_next_index(graphdef))
    roots = (*rebuilt.nodes, *(out_leaves[i] for i in out_positions))
    root_defs = tuple((i, flat.flatten(r, (i,))) for i, r in enumerate(roots))
    num_inputs = len(rebuilt.nodes)
    if out_positions:
        _check_not_captured(flat, rebuilt, out, out_positions, where)
    values = [_raw(v) for v in flat.leaves]
    in_values = rebuilt.in_values
    n = 0 if graphdef is None else graphdef.num_leaves
    new_in_root = PytreeDef(tuple, root_defs[:num_inputs])
    if not mode.updates:
        check_outputs(mode, where, Trace(
            None if graphdef is None else graphdef.root, new_in_root,
            tuple(d for _, d in root_defs[num_inputs:]),
            lambda: root_labels(rebuilt.tree, key[1], names),
            lambda: root_labels(out, out_positions, None, "out")))
    unchanged = graphdef is None or new_in_root == graphdef.root
    if unchanged:
        changed = tuple(i for i in range(n) if values[i] is not in_values[i])
        # A value whose shape or dtype changed is a structural change (graph definitions
        # record leaf shapes): the slow path rebuilds, which records it outside.
        unchanged = all(same_aval(values[i], in_values[i]) for i in changed)
    if unchanged:
        send = [values[i] for i in changed] + values[n:]
        info = OutInfo(True, changed, None, tuple(d for _, d in root_defs[num_inputs:]),
                       num_inputs, out_treedef, out_positions, mode.updates)
    else:
        joint = GraphDef(PytreeDef(tuple, root_defs), tuple(flat.paths), tuple(flat.avals))
        send = values
        info = OutInfo(False, (), joint, (), num_inputs, out_treedef, out_positions)
    if any(map(_refs.holds_refs, send)):  # refs cannot leave a trace: their values do
        send = [_refs.read(v) for v in send]
    chosen = set(out_positions)
    others = [x for i, x in enumerate(out_leaves) if i not in chosen]
    expire(rebuilt.objects.values())
    expire(flat.objects.values())
    return info, send, others


def _check_not_captured(flat: _Flattener, rebuilt: Rebuilt, out: Any, out_positions: tuple,
                        where: str) -> None:
    """An object returned by the function must be an input or made inside it: one made
    by eager code and captured (a closure) would come back as a detached copy."""
    if _tracking.current_trace() == _tracking.EAGER:
        return  # the function ran eagerly (jax.custom_vjp's primal): nothing to tell
    inputs = rebuilt.objects
    for index, obj in flat.objects.items():
        if index in inputs or obj._nnx_trace != _tracking.EAGER:
            continue
        labels = root_labels(out, out_positions, None, "out")
        raise ValueError(
            f"{where or 'transform'}: the output {labels[0] if len(labels) == 1 else labels} "
            f"holds a {type(obj).__name__} that was captured from outside the function "
            "(Cannot return captured Variable; Cannot extract graph node from different "
            "trace level). Its state is not traced here, so what came back would be a "
            "detached copy.\nHint: pass the module to the transformed function as an "
            "argument and return that, or create it inside the function.")


def _next_index(graphdef: GraphDef | None) -> int:
    return 0 if graphdef is None else _max_index(graphdef.root) + 1


def _max_index(d: Any) -> int:
    kind = d.kind
    if kind in ("node", "variable"):
        own = d.index
    else:
        own = -1
    if kind in ("node", "pytree"):
        return max([own, *(_max_index(v) for _, v in d.attributes)])
    return own


def expire(objects: Any) -> None:
    """Mark objects built inside a finished trace: any later use raises a clear error."""
    for obj in objects:
        if isinstance(obj, Variable):
            expire_variable(obj)
        else:
            object.__setattr__(obj, "_nnx_trace", _tracking.EXPIRED)


# ------------------------------------------------------------------------- outside
def apply_outputs(plan: Plan | None, info: OutInfo, values: list, others: list) -> Any:
    """Write changed state back into the caller's objects and rebuild ``fn``'s output."""
    if info.fast:
        changed = info.changed
        if changed:
            if any(isinstance(v, Tracer) for v in values[:len(changed)]):
                _check_write_back(plan, changed)  # type: ignore[arg-type]
            targets = _write_targets(plan, info)  # type: ignore[arg-type]
            if targets is not None:  # all Variables: one C-level loop
                list(map(_SET_RAW, targets, values))
            else:
                template = plan.template  # type: ignore[union-attr]
                for i, value in zip(changed, values):
                    target = template[i]
                    if isinstance(target, Variable):
                        put_raw(target, value)
                    elif info.write_raw:
                        _write_slot(plan, i, value)
        if info.out_defs:
            rest = iter(values[len(changed):])
            objects: dict = {}
            existing = plan.objects if plan is not None else {}
            out_nodes = [build(d, rest, objects, existing) for d in info.out_defs]
        else:
            out_nodes = []
    else:
        existing = plan.objects if plan is not None else {}
        if plan is not None:
            for obj in existing.values():
                _check_owner(obj)
        rebuilt = build(info.joint.root, iter(values), {}, existing)  # type: ignore[union-attr]
        out_nodes = list(rebuilt[info.num_inputs:])
    if not info.out_positions:
        return jax.tree_util.tree_unflatten(info.out_treedef, others)
    leaves = list(others)
    for position, node in zip(info.out_positions, out_nodes):
        leaves.insert(position, node)
    return jax.tree_util.tree_unflatten(info.out_treedef, leaves)


_SET_RAW = Variable._raw_value.__set__  # type: ignore[attr-defined]


def _check_owner(obj: Any) -> None:
    trace = obj._nnx_trace
    if trace is not None and trace != _tracking.current_trace():
        _tracking.check_trace(obj, "write the transform's results into the value")


def _check_write_back(plan: Plan, changed: tuple) -> None:
    """Traced results (the transform runs inside another one) may only go into objects
    of the current trace: a module captured by closure from outside the enclosing
    transform would otherwise keep its tracers. Checked before anything is written."""
    template = plan.template
    for i in changed:
        target = template[i]
        if isinstance(target, Variable):
            _check_owner(target)


def _write_targets(plan: Plan, info: OutInfo) -> list | None:
    """The Variables to assign, in output order, cached per (plan, trace result).

    None when some target is a raw array attribute (written through its owner).
    """
    cached = plan.writers
    if cached is not None and cached[0] is info:
        return cached[1]
    template = plan.template
    targets = [template[i] for i in info.changed]
    if not all(isinstance(t, Variable) and not is_ref_mode(t._metadata) for t in targets):
        targets = None  # type: ignore[assignment]  (raw arrays or ref-backed variables)
    if not plan.holds_root_leaf():  # a cached root would be a cycle back to the root
        plan.writers = (info, targets)
    return targets


def _write_slot(plan: Plan, position: int, value: Any) -> None:
    for slot_position, owner, key, set_raw in plan.slots:
        if slot_position == position:
            set_raw(owner, key, value)
            plan.template[position] = value
            return
    # No slot: a raw array inside an immutable container (a tuple attribute). Rebuild the
    # container on its owner (this stamps the owner, so the plan is walked again).
    path = plan.graphdef.paths[position]
    root = plan.objects[plan.graphdef.root.attributes[path[0]][1].index]
    _write_into_pytree(root, path[1:], value)
    plan.template[position] = value
