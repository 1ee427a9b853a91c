"""``vmap``: vectorize a function of modules over a batch axis.

A module argument's state is mapped or broadcast leaf by leaf, as ``in_axes`` says (an
axis for all of it, or a :class:`~nnxlib.StateAxes` per filter). Inside, the function
sees one member: a module whose arrays have the mapped axis removed. State changed
inside comes back on the axis it went in on; modules created inside (a stack of layers,
an ensemble) come back with their arrays stacked on ``out_axes``.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> @nnx.split_rngs(splits=3)
    ... @nnx.vmap(in_axes=0, out_axes=0)
    ... def make_ensemble(rngs):
    ...     return nnx.Linear(2, 4, rngs=rngs)
    >>> ensemble = make_ensemble(nnx.Rngs(0))
    >>> ensemble.kernel.shape
    (3, 2, 4)
    >>> nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, jnp.ones((5, 2))).shape
    (3, 5, 4)
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, NamedTuple

import jax

from nnxlib.errors import format_path
from nnxlib.graph import is_node_or_variable
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _axes, _lift
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms.axes import STATE_PREFIXES, Carry, StateAxes, TreeState

__all__ = ["vmap"]


class _Layout(NamedTuple):
    """How one argument signature is mapped (computed once per signature)."""

    graph_axes: list  # per graph leaf of the joint plan
    other_axes: list  # per non-graph leaf
    root_specs: list  # per input graph root: its in_axes entry
    leaf_of_index: dict  # variable index -> graph leaf position
    leaf_of_path: dict  # path -> graph leaf position
    names: list  # per graph leaf: a readable location
    other_names: list  # per non-graph leaf
    graphdef: Any = None  # of the joint plan (None without graph arguments)
    root_names: list = []  # per input graph root: a readable location


class _Entry(NamedTuple):
    vmapped: Callable
    layout: _Layout
    cell: list  # filled at trace time: names of the outputs per bucket


def _bind(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> tuple:
    """Move keyword arguments to their positions when the signature allows it."""
    if not kwargs or signature is None:
        return args, kwargs
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    if bound.kwargs:  # keyword-only or **kwargs: keep them as keywords
        return args, kwargs
    params = list(signature.parameters.values())
    last = max(i for i, p in enumerate(params) if p.name in bound.arguments or i < len(args))
    bound.apply_defaults()
    values = bound.args
    if any(p.kind is p.VAR_POSITIONAL for p in params[:last + 1]):
        return args, kwargs
    return tuple(values[:last + 1]), {}


def _signature(f: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(f)
    except (TypeError, ValueError):
        return None


def _axes_prefix(in_axes: Any, args: tuple, kwargs: dict, where: str) -> tuple:
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if isinstance(in_axes, tuple) and len(in_axes) != len(args):
        raise ValueError(
            f"{where}: in_axes={in_axes!r} has {len(in_axes)} entries but the function was "
            f"called with {len(args)} positional arguments. Hint: give one entry per "
            "positional argument, or a single axis for all of them."
        )
    return in_axes, {k: 0 for k in kwargs}


def _validate(axes: Any, where: str) -> set:
    """Check an axes prefix for vmap; return the set of axes it uses."""
    used: set = {None}
    for entry in jax.tree_util.tree_leaves(axes, is_leaf=_axes.is_prefix_leaf):
        if isinstance(entry, TreeState):
            # module-shaped prefixes also hold the module's static values: entries are
            # checked when a variable's entry is looked up
            used.update(a for _, a in entry.state.flat_state()
                        if isinstance(a, int) and not isinstance(a, bool))
        elif isinstance(entry, StateAxes):
            for f, axis in entry.items():
                if axis is Carry:
                    raise ValueError(
                        f"{where}: nnx.Carry (for filter {f!r}) is only meaningful in "
                        "nnx.scan. Hint: use an int axis or None in vmap."
                    )
                # (a StateAxes may hold shardings, for jit: not axes)
                _axes._check_axis(axis, f"{where}: StateAxes entry for filter {f!r}",
                                  allow_carry=False)
                used.add(axis)
        elif entry is Carry:
            raise ValueError(f"{where}: nnx.Carry is only meaningful in nnx.scan.")
        else:
            _axes._check_axis(entry, where, allow_carry=False)
            used.add(entry)
    return used


def _layout(ext: _lift.Extracted, args: tuple, kwargs: dict, in_axes: Any,
            name: str = "vmap") -> _Layout:
    prefix = _axes_prefix(in_axes, args, kwargs, name)
    specs = _axes.prefix_leaves(prefix, (args, kwargs), is_node_or_variable, f"{name} in_axes")
    names = _axes.leaf_names((args, kwargs), is_node_or_variable)
    chosen = set(ext.node_positions)
    other_axes, other_names = [], []
    for i, spec in enumerate(specs):
        if i in chosen:
            continue
        other_names.append(names[i])
        if isinstance(spec, STATE_PREFIXES):
            raise ValueError(
                f"{name} in_axes: {spec!r} is given for {names[i]}, which is not a module or "
                "variable. Hint: StateAxes only applies to graph objects; use an int or "
                "None for arrays."
            )
        other_axes.append(spec)
    root_specs = [specs[p] for p in ext.node_positions]
    root_names = [names[p] for p in ext.node_positions]
    if ext.plan is None:
        return _Layout([], other_axes, root_specs, {}, {}, [], other_names)
    graphdef, template = ext.plan.graphdef, ext.plan.template
    graph_axes = _axes.graph_leaf_axes(graphdef, template, root_specs, root_names,
                                       f"{name} in_axes", allow_carry=False)
    leaf_of_index = {d.index: j for j, (_, d) in
                     enumerate(_axes.iter_def_leaves(graphdef.root)) if d.kind == "variable"}
    leaf_of_path = {p: j for j, p in enumerate(graphdef.paths)}
    leaf_names = [root_names[p[0]] + _axes._suffix(p[1:]) for p in graphdef.paths]
    return _Layout(graph_axes, other_axes, root_specs, leaf_of_index, leaf_of_path,
                   leaf_names, other_names, graphdef, root_names)


def _sent_axes(info: _lift.OutInfo, send: list, layout: _Layout, in_roots: int,
               out_roots: list, name: str = "vmap") -> tuple[list, list]:
    """The out axis and a readable location for each graph value sent out."""
    if info.fast:
        if info.out_defs and layout.graphdef is not None:
            _check_returned_inputs(info, layout, in_roots, out_roots, name)
        axes = [layout.graph_axes[j] for j in info.changed]
        names = [layout.names[j] for j in info.changed]
        position = len(axes)
        for k, d in enumerate(info.out_defs):
            for path, leaf_def in _axes.iter_def_leaves(d):
                where = f"{name} out_axes for out{_axes._suffix(path)}"
                leaf = _axes.probe(leaf_def, send[position])
                axes.append(_axes.resolve(out_roots[k], path, leaf, where, False))
                names.append(f"output {k}{_axes._suffix(path)}")
                position += 1
        return axes, names
    axes, names = [], []
    position = 0
    for i, d in info.joint.root.attributes:  # type: ignore[union-attr]
        for path, leaf_def in _axes.iter_def_leaves(d, (i,)):
            j = (layout.leaf_of_index.get(leaf_def.index) if leaf_def.kind == "variable"
                 else layout.leaf_of_path.get(path))
            if j is not None:
                axes.append(layout.graph_axes[j])
                names.append(layout.names[j])
            else:
                spec = layout.root_specs[i] if i < in_roots else out_roots[i - in_roots]
                label = "in_axes" if i < in_roots else "out_axes"
                leaf = _axes.probe(leaf_def, send[position])
                axes.append(_axes.resolve(spec, path[1:], leaf,
                                          f"{name} {label} for new state", False))
                names.append(f"new state {format_path(path)}")
            position += 1
    return axes, names


def _check_returned_inputs(info: _lift.OutInfo, layout: _Layout, in_roots: int,
                           out_roots: list, name: str) -> None:
    """State the function returns from its inputs goes out on the axis it came in on:
    an out_axes entry that says otherwise is an error, not a silent choice."""
    def axis_at(root: int, path: tuple, leaf: Any) -> Any:
        if root < in_roots:
            return _axes.resolve(layout.root_specs[root], path, leaf, f"{name} in_axes",
                                 False)
        return _axes.resolve(out_roots[root - in_roots], path, leaf, f"{name} out_axes",
                             False)

    names = list(layout.root_names) + [f"out{k}" for k in range(len(info.out_defs))]
    # stand-ins built from the definitions: a cached layout holds no live Variable
    template = [_axes.probe(d, None) for _, d in _axes.iter_def_leaves(layout.graphdef.root)]
    _axes.check_shared_entries(layout.graphdef, template, layout.graph_axes, axis_at,
                               names, f"{name} out_axes", show=_axes._axis_repr,
                               more=info.out_defs)


_BATCHED_NONE = re.compile(r"out_axes\[1\]\[(\d+)\]\[(\d+)\]")


def vmap(f: Callable | None = None, *, in_axes: Any = 0, out_axes: Any = 0,
         axis_name: Any = None, axis_size: int | None = None, spmd_axis_name: Any = None,
         transform_metadata: Any = None, graph: bool | None = None,
         graph_updates: bool | None = None) -> Any:
    """Vectorize ``f`` over an axis of its arguments, modules included.

    ``in_axes``: an int, None, or a tuple with one entry per positional argument (nested
    like the argument). For a module, the entry is an axis for all its state, ``None`` to
    broadcast it, or a :class:`~nnxlib.StateAxes` mapping filters to axes. Keyword
    arguments are moved to their positions when possible (otherwise mapped on axis 0).
    ``out_axes``: the same for the outputs; modules created inside come out with their
    state on that axis. State changed inside is written back on the axis it came in
    with; a broadcast (``None``) variable may only change to a value that is the same
    for every member. ``axis_name``, ``axis_size`` and ``spmd_axis_name`` are passed to
    ``jax.vmap``. ``transform_metadata={nnx.PARTITION_NAME: name}`` removes ``name`` from
    the sharding metadata of mapped state on the way in and adds it on the way out.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> @nnx.vmap(in_axes=(None, 0), out_axes=0)
        ... def forward(model, x):   # x: one example, shape (2,)
        ...     return model(x)
        >>> forward(model, jnp.ones((5, 2))).shape
        (5, 3)
    """
    if transform_metadata is None:
        transform_metadata = {}
    mode = resolve_mode(graph, graph_updates)
    in_axes = prefix_argument(in_axes, "in_axes", "nnx.vmap", mode)
    out_axes = prefix_argument(out_axes, "out_axes", "nnx.vmap", mode)
    options = dict(graph=mode.graph, graph_updates=mode.updates, in_axes=in_axes,
                   out_axes=out_axes, axis_name=axis_name,
                   axis_size=axis_size, spmd_axis_name=spmd_axis_name,
                   transform_metadata=transform_metadata)
    if f is None:
        return lambda fn: vmap(fn, **options)
    check_function(f, "nnx.vmap")

    def map_fn(pure: Callable, in_axes: Any, out_axes: Any) -> Callable:
        return jax.vmap(pure, in_axes=in_axes, out_axes=out_axes, axis_name=axis_name,
                        axis_size=axis_size, spmd_axis_name=spmd_axis_name)

    return mapped(f, in_axes, out_axes, mode, transform_metadata, "vmap", map_fn)


def mapped(f: Callable, in_axes: Any, out_axes: Any, mode: Any, transform_metadata: Any,
           name: str, map_fn: Callable[[Callable, Any, Any], Callable]) -> Callable:
    """The mapping transform ``name`` of ``f``: ``map_fn(pure, in_axes, out_axes)`` is
    ``jax.vmap`` (or ``jax.pmap``) of the pure function of leaf values; everything
    else (state axes leaf by leaf, write-back, new modules) is shared."""
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    used = (_validate(in_axes, f"{name} in_axes") | _validate(out_axes, f"{name} out_axes")
            | {0})
    buckets = [None] + sorted(a for a in used if a is not None)
    bucket_of = {a: b for b, a in enumerate(buckets)}
    metadata = dict(transform_metadata)
    tag = _axes.check_transform_metadata(metadata, name)
    signature = _signature(f)
    entries: dict = {}
    where = f"nnx.{name}"

    def make_entry(ext: _lift.Extracted, args: tuple, kwargs: dict) -> _Entry:
        layout = _layout(ext, args, kwargs, in_axes, name)
        key = ext.key
        cell: list = []
        in_roots = len(ext.node_positions)

        def pure(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            if tag:
                _axes.strip_mapped_axes(rebuilt, layout, metadata)
            call_args, call_kwargs = rebuilt.tree
            out = f(*call_args, **call_kwargs)
            out_roots, other_specs = _axes.out_specs(out_axes, out, name, "an int or None")
            if tag:
                _axes.restore_mapped_axes(rebuilt, layout, metadata, out, out_roots,
                                          f"{name} axes for new state")
            info, send, other_out = _lift.collect(rebuilt, key, out, mode, where,
                                                  _lift.ARGS_KWARGS)
            axes, names = _sent_axes(info, send, layout, in_roots, out_roots, name)
            lists: list = [[] for _ in buckets]
            labels: list = [[] for _ in buckets]
            places = []
            for value, axis, label in zip(send + other_out, axes + other_specs,
                                          names + [f"output leaf {i}" for i in
                                                   range(len(other_out))]):
                b = bucket_of[axis]
                places.append((b, len(lists[b])))
                lists[b].append(value)
                labels[b].append(label)
            cell[:] = [labels]
            return _lift.StaticBox((info, tuple(places), len(send))), lists

        vmapped = map_fn(pure, (layout.graph_axes, layout.other_axes), (0, buckets))
        return _Entry(vmapped, layout, cell)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _bind(signature, args, kwargs)
        ext = _lift.extract((args, kwargs), mode, where, _lift.ARGS_KWARGS)
        entry = entries.get(ext.key)
        if entry is None:
            entry = entries[ext.key] = make_entry(ext, args, kwargs)
        try:
            box, lists = entry.vmapped(ext.values, ext.others)
        except ValueError as e:
            explained = _explain(e, entry, ext, name)
            if explained is e:
                raise
            raise explained from e
        info, places, num_send = box.value
        flat = [lists[b][i] for b, i in places]
        return _lift.apply_outputs(ext.plan, info, flat[:num_send], flat[num_send:])

    return wrapper


def _explain(error: ValueError, entry: _Entry, ext: _lift.Extracted,
             name: str = "vmap") -> ValueError:
    """Name the state behind jax's errors about mapped inputs and broadcast outputs."""
    message = str(error)
    layout = entry.layout
    if "rank" in message or "inconsistent sizes" in message:
        template = ext.plan.template if ext.plan is not None else []
        items = [(layout.names[j], ext.values[j], a, template[j])
                 for j, a in enumerate(layout.graph_axes) if a is not None]
        items += [(layout.other_names[i], x, a, x)
                  for i, (x, a) in enumerate(zip(ext.others, layout.other_axes))
                  if a is not None]
        explained = _axes.explain_mapped_shapes(items, name)
        return ValueError(explained) if explained else error
    cell = entry.cell
    if not cell or "out_axes" not in message or "None" not in message:
        return error
    match = _BATCHED_NONE.search(message)
    if match is not None:
        names = [cell[0][int(match.group(1))][int(match.group(2))]]
    else:
        names = cell[0][0][:5]
    if not names:
        return error
    if all(n.startswith("output") for n in names):
        return ValueError(
            f"{name}: {' or '.join(names)} has out_axes None (broadcast) but differs between "
            "the mapped members. Hint: give it an int axis in out_axes."
        )
    where = names[0].rsplit(".", 1)[-1]
    return ValueError(
        f"{name}: {' or '.join(names)} is broadcast (axis None) but its new value differs "
        "between the mapped members, so it cannot be written back as one value (at vmap "
        f"state {where!r}: got axis spec None but output was batched on axis 0). Hint: map "
        "that state (an int axis in in_axes, or nnx.StateAxes({filter: 0, ...: None})), or "
        "leave it unchanged inside the function."
    )
