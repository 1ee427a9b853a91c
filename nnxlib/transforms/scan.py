"""``scan``: loop a function of modules over a leading axis, compiled as one body.

Each argument is a *carry* (``nnx.Carry``: threaded from step to step), *scanned* (an
int axis: step ``i`` sees slice ``i``) or *broadcast* (``None``: every step sees all
of it). For modules, a :class:`~nnxlib.StateAxes` chooses per filter. The classic use
is scan-over-layers: parameters of ``L`` identical layers stacked on axis 0 (made with
``vmap``), applied one after the other by a loop whose body holds one layer's ops.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> @nnx.split_rngs(splits=4)
    ... @nnx.vmap(in_axes=0, out_axes=0)
    ... def make_layers(rngs):
    ...     return nnx.Linear(3, 3, rngs=rngs)
    >>> layers = make_layers(nnx.Rngs(0))      # kernels stacked: (4, 3, 3)
    >>> @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    ... def forward(x, layer):
    ...     return jnp.tanh(layer(x))
    >>> forward(jnp.ones((2, 3)), layers).shape
    (2, 3)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnxlib.errors import format_path
from nnxlib.graph import is_node_or_variable
from nnxlib.graph._graphdef import build
from nnxlib.graph.mode import resolve_mode
from nnxlib.rngs import RngState
from nnxlib.transforms import _axes, _lift
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms.axes import STATE_PREFIXES, Carry, StateAxes
from nnxlib.transforms.vmap import _signature
from nnxlib.variables import Variable

__all__ = ["scan"]


class _Layout(NamedTuple):
    """How one argument signature is split into carry, scanned and broadcast parts."""

    graph_axes: list  # per graph leaf: int, None or Carry
    other_axes: list  # per non-graph leaf: int, None or Carry
    root_specs: list
    leaf_of_index: dict
    leaf_of_path: dict
    names: list  # per graph leaf
    other_names: list  # per non-graph leaf
    carry_graph: tuple  # graph leaf positions carried
    scan_graph: tuple  # (position, axis) of scanned graph leaves
    carry_other: tuple
    scan_other: tuple
    carry_treedef: Any  # of the carry argument (graph objects as leaves), or None
    carry_nodes: tuple  # leaf positions inside the carry argument that are graph objects


def _carry_position(axes: Any, where: str) -> Any:
    """``'all'`` for ``axes is Carry``, the top-level index holding Carry, or None."""
    if axes is Carry:
        return "all"
    found = None
    if isinstance(axes, (tuple, list)):
        for i, entry in enumerate(axes):
            if entry is Carry:
                if found is not None:
                    raise ValueError(
                        f"scan: {where}={axes!r} marks more than one argument as nnx.Carry "
                        f"(Found multiple Carry definitions in {where}). Hint: put "
                        "everything that is carried into one argument (a tuple)."
                    )
                found = i
    nested = [x for x in jax.tree_util.tree_leaves(
        [e for i, e in enumerate(axes) if i != found] if isinstance(axes, (tuple, list))
        else axes, is_leaf=_axes.is_prefix_leaf) if x is Carry]
    if nested:
        raise ValueError(
            f"scan: nnx.Carry must be a top-level entry of {where}, found it nested in "
            f"{axes!r}. Hint: {where}=(nnx.Carry, 0) carries the whole first argument; use "
            "nnx.StateAxes({filter: nnx.Carry, ...}) to carry part of a module."
        )
    return found


def _validate(in_axes: Any, out_axes: Any) -> None:
    for entry in jax.tree_util.tree_leaves(in_axes, is_leaf=_axes.is_prefix_leaf):
        if not isinstance(entry, STATE_PREFIXES):  # their entries: checked when read
            _axes._check_axis(entry, "scan in_axes", allow_carry=True)
        elif isinstance(entry, StateAxes):  # (it may hold shardings, for jit: not axes)
            for f, axis in entry.items():
                _axes._check_axis(axis, f"scan in_axes: StateAxes entry for filter {f!r}",
                                  allow_carry=True)
        # a TreeState also holds a module's static values: its entries are checked when
        # a variable's entry is looked up
    for entry in jax.tree_util.tree_leaves(out_axes, is_leaf=_axes.is_prefix_leaf):
        if entry is None:
            raise ValueError(
                f"scan: out_axes={out_axes!r} contains None, but scan outputs cannot be "
                "broadcast (Cannot broadcast output state): each step makes its own "
                "value. Hint: use an int axis (the outputs are stacked) or nnx.Carry."
            )
        if isinstance(entry, StateAxes):
            for f, axis in entry.items():
                if axis is None or axis is Carry:
                    raise ValueError(
                        f"scan: out_axes entry {entry!r} gives {_axes._axis_repr(axis)} for "
                        f"filter {f!r} (Cannot broadcast output state. Got StateAxes); state "
                        "created inside the loop can only be stacked. Hint: use an int axis "
                        "for every filter in out_axes."
                    )
        elif entry is not Carry and not isinstance(entry, STATE_PREFIXES):
            _axes._check_axis(entry, "scan out_axes", allow_carry=False)


def _bind(signature: Any, args: tuple, kwargs: dict) -> tuple:
    if not kwargs:
        return args
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            bound = None
        if bound is not None and not bound.kwargs:
            bound.apply_defaults()
            return tuple(bound.args)
    raise TypeError(
        f"scan: keyword arguments {sorted(kwargs)} cannot be moved to positions of the "
        "scanned function's signature, and in_axes describes positional arguments only. "
        "Hint: pass them positionally."
    )


def _layout(ext: _lift.Extracted, args: tuple, in_axes: Any, in_carry: Any) -> _Layout:
    if isinstance(in_axes, (tuple, list)):
        if len(in_axes) != len(args):
            raise ValueError(
                f"scan: in_axes={in_axes!r} has {len(in_axes)} entries but the function was "
                f"called with {len(args)} positional arguments. Hint: give one entry per "
                "argument, e.g. in_axes=(nnx.Carry, 0)."
            )
        prefix = tuple(in_axes)
    else:
        prefix = in_axes
    specs = _axes.prefix_leaves(prefix, args, is_node_or_variable, "scan in_axes")
    names = _axes.leaf_names(args, is_node_or_variable, top="args")
    chosen = set(ext.node_positions)
    other_axes, other_names = [], []
    for i, spec in enumerate(specs):
        if i in chosen:
            continue
        if isinstance(spec, STATE_PREFIXES):
            raise ValueError(
                f"scan in_axes: {spec!r} is given for {names[i]}, which is not a module or "
                "variable. Hint: StateAxes only applies to graph objects; use an int, None "
                "or nnx.Carry for arrays."
            )
        other_axes.append(spec)
        other_names.append(names[i])
    root_specs = [specs[p] for p in ext.node_positions]
    root_names = [names[p] for p in ext.node_positions]
    graph_axes: list = []
    leaf_of_index: dict = {}
    leaf_of_path: dict = {}
    leaf_names: list = []
    if ext.plan is not None:
        graphdef, template = ext.plan.graphdef, ext.plan.template
        graph_axes = _axes.graph_leaf_axes(graphdef, template, root_specs, root_names,
                                           "scan in_axes", allow_carry=True)
        leaf_of_index = {d.index: j for j, (_, d) in
                         enumerate(_axes.iter_def_leaves(graphdef.root))
                         if d.kind == "variable"}
        leaf_of_path = {p: j for j, p in enumerate(graphdef.paths)}
        leaf_names = [root_names[p[0]] + _axes._suffix(p[1:]) for p in graphdef.paths]
    carry_treedef, carry_nodes = None, ()
    if in_carry is not None:
        c = 0 if in_carry == "all" else in_carry
        leaves, carry_treedef = jax.tree_util.tree_flatten(args[c], is_leaf=is_node_or_variable)
        carry_nodes = tuple(i for i, x in enumerate(leaves) if is_node_or_variable(x))
    return _Layout(
        graph_axes, other_axes, root_specs, leaf_of_index, leaf_of_path, leaf_names,
        other_names,
        tuple(j for j, a in enumerate(graph_axes) if a is Carry),
        tuple((j, a) for j, a in enumerate(graph_axes) if a is not Carry and a is not None),
        tuple(i for i, a in enumerate(other_axes) if a is Carry),
        tuple((i, a) for i, a in enumerate(other_axes) if a is not Carry and a is not None),
        carry_treedef, carry_nodes)


class _Entry(NamedTuple):
    """Per argument structure: its layout and the loop, traced as is or compiled."""

    layout: _Layout
    traced: Callable  # (values, others) -> loop outputs, for use inside a trace
    compiled: Callable  # the same under jax.jit, for eager calls (traced once)


def _all_concrete_arrays(values: list, others: list) -> bool:
    """True when every input is a concrete array: then compiling the loop changes
    nothing but speed (Python values stay Python values only outside jit)."""
    for x in (*values, *others):
        if not isinstance(x, (jax.Array, np.ndarray)) or isinstance(x, jax.core.Tracer):
            return False
    return True


class _Promote(Exception):
    """Raised out of a trace: these broadcast leaves changed, so trace again with them
    carried. Tracing with every broadcast variable carried would cost loop state (and a
    copy per step) for the parameters that never change, so only the changed ones are."""

    def __init__(self, positions: list):
        super().__init__(positions)
        self.positions = positions


def _promoted(layout: _Layout, positions: list) -> _Layout:
    """``layout`` with the broadcast graph leaves at ``positions`` carried instead."""
    graph_axes = list(layout.graph_axes)
    for j in positions:
        graph_axes[j] = Carry
    return layout._replace(graph_axes=graph_axes, carry_graph=tuple(
        j for j, a in enumerate(graph_axes) if a is Carry))


class _Router:
    """Inside the body: where each value sent out goes (carry slot, stacked ys, or kept)."""

    def __init__(self, layout: _Layout, carry_in: list, in_values: list,
                 rng_leaves: frozenset):
        self.layout = layout
        self.slot = {j: s for s, j in enumerate(layout.carry_graph)}
        self.carry_out = list(carry_in)
        self.in_values = in_values
        self.rng_leaves = rng_leaves  # leaf positions holding RNG state
        self.ys: list = []
        self.sources: list = []
        self.promote: list = []  # broadcast leaves found changed

    def stack(self, value: Any, axis: int) -> None:
        self.sources.append(("y", len(self.ys), axis))
        self.ys.append(value)

    def input_leaf(self, j: int, value: Any) -> None:
        role = self.layout.graph_axes[j]
        unchanged = value is self.in_values[j]
        if role is Carry:
            s = self.slot[j]
            self.carry_out[s] = value
            self.sources.append(("c", s))
        elif unchanged:
            self.sources.append(("k", j))
        elif role is not None:
            self.stack(value, role)
        elif j in self.rng_leaves:
            self.sources.append(("k", j))  # broadcast RNG state: every step sees one key
        else:
            # A broadcast variable changed: like a Python loop (and flax.nnx), the next
            # step sees the change, so it has to travel in the carry (see _Promote).
            self.promote.append(j)

    def new_leaf(self, spec: Any, path: tuple, leaf: Any, value: Any, where: str) -> None:
        axis = _axes.resolve(spec, path, leaf, where, allow_carry=True)
        if isinstance(axis, int) and axis is not Carry:
            self.stack(value, axis)
            return
        kind = "carried" if axis is Carry else "broadcast"
        raise ValueError(
            f"scan: a {type(leaf).__name__} was created at {format_path(path)!r} inside "
            f"the scanned function in state that is {kind}; only scanned (stacked) state can "
            "gain new variables inside the loop, because the carry must keep its structure "
            "from step to step. Hint: create the variable before calling the scan."
        )


def _route(router: _Router, info: _lift.OutInfo, send: list, in_roots: int,
           out_roots: list) -> None:
    layout = router.layout
    if info.fast:
        for j, value in zip(info.changed, send):
            router.input_leaf(j, value)
        position = len(info.changed)
        for k, d in enumerate(info.out_defs):
            for path, leaf_def in _axes.iter_def_leaves(d):
                value = send[position]
                router.new_leaf(out_roots[k], path, _axes.probe(leaf_def, value), value,
                                "scan out_axes")
                position += 1
        return
    position = 0
    for i, d in info.joint.root.attributes:  # type: ignore[union-attr]
        for path, leaf_def in _axes.iter_def_leaves(d, (i,)):
            value = send[position]
            position += 1
            j = (layout.leaf_of_index.get(leaf_def.index) if leaf_def.kind == "variable"
                 else layout.leaf_of_path.get(path))
            if j is not None:
                router.input_leaf(j, value)
                continue
            spec = layout.root_specs[i] if i < in_roots else out_roots[i - in_roots]
            router.new_leaf(spec, path[1:], _axes.probe(leaf_def, value), value,
                            "scan axes for new state")


def _split_out(out: Any, out_axes: Any, out_carry: Any) -> tuple[Any, Any]:
    """``(carry, ys_tree)``: the carried part of ``f``'s output and the rest."""
    if out_carry is None:
        return None, out
    if out_carry == "all":
        return out, None
    if not isinstance(out, tuple) or len(out) != len(out_axes):
        raise ValueError(
            f"scan: out_axes={out_axes!r} describes a tuple of {len(out_axes)} outputs, but "
            f"the scanned function returned {type(out).__name__}"
            f"{' of length ' + str(len(out)) if isinstance(out, tuple) else ''}. Hint: "
            "return (carry, y) to match out_axes=(nnx.Carry, 0)."
        )
    return out[out_carry], out[:out_carry] + (None,) + out[out_carry + 1:]


def _check_carry(layout: _Layout, carry_in: Any, carry_out: Any) -> list:
    """The new non-graph carry leaves; the carried modules must be the same objects."""
    leaves, treedef = jax.tree_util.tree_flatten(carry_out, is_leaf=is_node_or_variable)
    if treedef != layout.carry_treedef:
        raise ValueError(
            f"scan: the carry returned by the scanned function has structure {treedef}, but "
            f"the carry passed in has structure {layout.carry_treedef}; they must match so "
            "the next step can take it. Hint: return the carry in the same form you take it."
        )
    in_leaves = jax.tree_util.tree_leaves(carry_in, is_leaf=is_node_or_variable)
    for p in layout.carry_nodes:
        if leaves[p] is not in_leaves[p]:
            raise ValueError(
                f"scan: the carry returned by the scanned function holds a "
                f"{type(leaves[p]).__name__} where the carry passed in held a "
                f"{type(in_leaves[p]).__name__} (carry leaf {p}); carried modules and "
                "variables are updated in place, so the same objects must be returned "
                "(Carry references must be the same between iterations; scan Variable "
                "identity must be preserved across iterations). "
                "Hint: return the module (or variable) you received, not a new one."
            )
    nodes = set(layout.carry_nodes)
    return [x for i, x in enumerate(leaves) if i not in nodes]


def scan(f: Callable | None = None, *, length: int | None = None, reverse: bool = False,
         unroll: int | bool = 1, _split_transpose: bool = False,
         in_axes: Any = (Carry, 0), out_axes: Any = (Carry, 0),
         transform_metadata: Any = None, graph: bool | None = None,
         graph_updates: bool | None = None) -> Any:
    """Loop ``f`` over slices of its arguments, like ``jax.lax.scan``, modules included.

    ``in_axes`` has one entry per positional argument: ``nnx.Carry`` for the carry (at
    most one; passed from step to step, and returned), an int axis to scan over, or
    ``None`` to give every step the whole value. Entries nest like the arguments, and a
    module's entry may be a :class:`~nnxlib.StateAxes` (per filter: int, None or
    ``nnx.Carry``). ``in_axes=nnx.Carry`` means ``f`` takes and returns only the carry.
    ``out_axes`` describes ``f``'s output the same way (``nnx.Carry`` at the carry's
    position, ints where per-step outputs are stacked); if ``in_axes`` has a Carry, so must
    ``out_axes``. The result has ``f``'s output form, with the final carry in place of the
    per-step carry.

    Module state behaves as in a Python loop: carried state is updated step by step;
    changes to scanned state (e.g. BatchNorm statistics of stacked layers) come back
    stacked; broadcast state must not change (broadcast RNG state may: every step draws
    the same keys, as in flax). ``length``, ``reverse``, ``unroll`` and
    ``_split_transpose`` are passed to ``jax.lax.scan``; ``transform_metadata`` works as in
    :func:`~nnxlib.vmap`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Acc(nnx.Module):
        ...     def __init__(self):
        ...         self.total = nnx.Variable(jnp.array(0.0))
        >>> acc = Acc()
        >>> def step(acc, x):
        ...     acc.total[...] += x
        ...     return acc, acc.total[...]
        >>> acc, partial_sums = nnx.scan(step)(acc, jnp.arange(1.0, 5.0))
        >>> partial_sums, float(acc.total[...])
        (Array([ 1.,  3.,  6., 10.], dtype=float32), 10.0)
    """
    if transform_metadata is None:
        transform_metadata = {}
    mode = resolve_mode(graph, graph_updates)
    in_axes = prefix_argument(in_axes, "in_axes", "nnx.scan", mode)
    out_axes = prefix_argument(out_axes, "out_axes", "nnx.scan", mode)
    options = dict(graph=mode.graph, graph_updates=mode.updates, length=length,
                   reverse=reverse, unroll=unroll,
                   _split_transpose=_split_transpose, in_axes=in_axes, out_axes=out_axes,
                   transform_metadata=transform_metadata)
    if f is None:
        return lambda fn: scan(fn, **options)
    check_function(f, "nnx.scan")
    if isinstance(out_axes, list):
        out_axes = tuple(out_axes)
    in_carry = _carry_position(in_axes, "in_axes")
    out_carry = _carry_position(out_axes, "out_axes")
    if (in_carry is None) != (out_carry is None):
        raise ValueError(
            f"scan: in_axes={in_axes!r} and out_axes={out_axes!r} must both mark a carry "
            "with nnx.Carry, or neither (If one of in_axes or out_axes has Carry, the "
            "other must also have Carry). Hint: in_axes=(nnx.Carry, 0), "
            "out_axes=(nnx.Carry, 0)."
        )
    _validate(in_axes, out_axes)
    metadata = dict(transform_metadata)
    tag = _axes.check_transform_metadata(metadata, "scan")
    signature = _signature(f)
    entries: dict = {}

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = _bind(signature, args, kwargs)
        if in_carry == "all" and len(args) != 1:
            raise ValueError(
                f"scan: with in_axes=nnx.Carry the function takes exactly one argument (the "
                f"carry), but it was called with {len(args)} (When in_axes=Carry, the "
                "function must take exactly one argument). Hint: use "
                "in_axes=(nnx.Carry, 0, ...) to give one entry per argument."
            )
        ext = _lift.extract(args, mode, "nnx.scan")
        entry = entries.get(ext.key)
        if entry is None:
            entry = entries[ext.key] = _entry(ext, _layout(ext, args, in_axes, in_carry))
        while True:
            try:
                return _run(ext, entry, args)
            except _Promote as changed:
                entry = entries[ext.key] = _entry(ext, _promoted(entry.layout,
                                                                 changed.positions))

    def _entry(ext: _lift.Extracted, layout: _Layout) -> _Entry:
        template = ext.plan.template if ext.plan is not None else []
        loop = functools.partial(
            _loop, layout, ext.key, len(ext.node_positions),
            frozenset(j for j, v in enumerate(template) if isinstance(v, RngState)))
        # Called eagerly, the scan is compiled once per structure (and traced once);
        # inside another trace it is traced into it as it is.
        return _Entry(layout, loop, jax.jit(loop))

    def _loop(layout: _Layout, key: tuple, in_roots: int, rng_leaves: frozenset,
              values: list, others: list) -> tuple:
        """The scan itself: a pure function of the leaf values (so eager calls can be
        compiled once per structure and reused)."""

        def body(carry: tuple, xs: tuple) -> tuple:
            carry_graph, carry_other = carry
            scan_graph, scan_other = xs
            step_values, step_others = list(values), list(others)
            for j, v in zip(layout.carry_graph, carry_graph):
                step_values[j] = v
            for (j, _), v in zip(layout.scan_graph, scan_graph):
                step_values[j] = v
            for i, v in zip(layout.carry_other, carry_other):
                step_others[i] = v
            for (i, _), v in zip(layout.scan_other, scan_other):
                step_others[i] = v
            rebuilt = _lift.rebuild(key, step_values, step_others)
            if tag:
                _axes.strip_mapped_axes(rebuilt, layout, metadata)
            call_args = rebuilt.tree
            out = f(*call_args)
            carry_out, ys_tree = _split_out(out, out_axes, out_carry)
            new_carry_other: list = []
            if in_carry is not None:
                carry_in = call_args[0 if in_carry == "all" else in_carry]
                new_carry_other = _check_carry(layout, carry_in, carry_out)
            out_roots, other_specs = _axes.out_specs(out_axes, ys_tree, "scan", "an int axis")
            if tag:
                _axes.restore_mapped_axes(rebuilt, layout, metadata, ys_tree, out_roots,
                                          "scan axes for new state")
            info, send, other_out = _lift.collect(rebuilt, key, ys_tree, mode, "nnx.scan")
            router = _Router(layout, list(carry_graph), step_values, rng_leaves)
            _route(router, info, send, in_roots, out_roots)
            if router.promote:
                raise _Promote(router.promote)
            graph_sources = tuple(router.sources)
            for value, axis in zip(other_out, other_specs):
                router.stack(value, axis)
            other_sources = tuple(router.sources[len(graph_sources):])
            box = _lift.StaticBox((info, graph_sources, other_sources))
            return (router.carry_out, new_carry_other), (box, router.ys)

        init = ([values[j] for j in layout.carry_graph],
                [others[i] for i in layout.carry_other])
        xs = ([_to_front(values[j], a) for j, a in layout.scan_graph],
              [_to_front(others[i], a) for i, a in layout.scan_other])
        (carry_graph, carry_other), (box, ys) = jax.lax.scan(
            body, init, xs, length=length, reverse=reverse, unroll=unroll,
            _split_transpose=_split_transpose)
        return carry_graph, carry_other, box, ys

    def _run(ext: _lift.Extracted, entry: _Entry, args: tuple) -> Any:
        layout = entry.layout
        template = ext.plan.template if ext.plan is not None else []
        values, others = ext.values, ext.others
        for i, _ in layout.scan_other:
            if not hasattr(others[i], "shape"):
                raise ValueError(
                    f"scan: {layout.other_names[i]} is scanned (an int in in_axes) but is a "
                    f"{type(others[i]).__name__}, not an array. Hint: use None to "
                    "broadcast it or nnx.Carry to carry it."
                )
        loop = entry.compiled if _all_concrete_arrays(values, others) else entry.traced
        try:
            carry_graph, carry_other, box, ys = loop(values, others)
        except (ValueError, TypeError, IndexError) as e:
            items = [(layout.names[j], values[j], a, template[j]) for j, a in layout.scan_graph]
            items += [(layout.other_names[i], others[i], a, others[i])
                      for i, a in layout.scan_other]
            explained = _axes.explain_mapped_shapes(items, "scan", length)
            if explained is None:
                raise
            raise ValueError(explained) from e
        info, graph_sources, other_sources = box.value

        def fetch(source: tuple) -> Any:
            if source[0] == "c":
                return carry_graph[source[1]]
            if source[0] == "k":
                return values[source[1]]
            y = ys[source[1]]
            return y if source[2] == 0 else jnp.moveaxis(y, 0, source[2])

        sent = [fetch(s) for s in graph_sources]
        result = _lift.apply_outputs(ext.plan, info, sent, [fetch(s) for s in other_sources])
        if in_carry is None:
            return result
        carry_arg = args[0 if in_carry == "all" else in_carry]
        leaves = jax.tree_util.tree_leaves(carry_arg, is_leaf=is_node_or_variable)
        if layout.carry_nodes and not mode.updates:
            leaves = _fresh_carry(ext, args, leaves, layout.carry_nodes,
                                  dict(zip(info.changed, sent)))
        new_others = iter(carry_other)
        nodes = set(layout.carry_nodes)
        final = jax.tree_util.tree_unflatten(
            layout.carry_treedef,
            [leaf if i in nodes else next(new_others) for i, leaf in enumerate(leaves)])
        if out_carry == "all":
            return final
        return result[:out_carry] + (final,) + result[out_carry + 1:]

    return wrapper


def _fresh_carry(ext: _lift.Extracted, args: tuple, carry_leaves: list, carry_nodes: tuple,
                 final: dict) -> list:
    """Without graph updates the carried objects come out as new objects (the inputs
    keep their array attributes, as pytree data does in JAX) holding the input's
    Variables, which already have their final values, and the carry's final arrays."""
    plan = ext.plan
    template = plan.template  # type: ignore[union-attr]
    leaves = iter([t if isinstance(t, Variable) else final.get(j, ext.values[j])
                   for j, t in enumerate(template)])
    fresh = build(plan.graphdef.root, leaves, {})  # type: ignore[union-attr]
    arg_leaves = jax.tree_util.tree_leaves(args, is_leaf=is_node_or_variable)
    fresh_of = {id(arg_leaves[p]): node for p, node in zip(ext.node_positions, fresh)}
    return [fresh_of.get(id(leaf), leaf) if i in carry_nodes else leaf
            for i, leaf in enumerate(carry_leaves)]


def _to_front(x: Any, axis: int) -> Any:
    return x if axis == 0 else jnp.moveaxis(x, axis, 0)
