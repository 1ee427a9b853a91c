"""``tabulate``: a table of a model's method calls, shapes and variables.

The model is run once on abstract inputs (``jax.eval_shape``: nothing is computed, and
the model is not changed) while the calls of its modules' methods are recorded:
``__call__`` and every public method a module class defines (``block1/forward``).
Each row is one call: the path of the module (plus the method's name, for methods
other than ``__call__``) and its type, its inputs and outputs (arrays as
``float32[2,3]``, nested containers one entry a line), and per variable kind the
module's own variables and the entries and bytes its whole subtree holds. A module
reached by two paths is counted under the first one, and a module called again with
inputs of the same shapes adds no second row. The footer has the totals.

With ``compute_flops``/``compute_vjp_flops`` each recorded call is traced once, as its
own function of the state and inputs it reads, and XLA's cost estimate of that function
(and of its forward and backward pass) fills the flop columns; the caller then runs the
traced program, so every method body still runs exactly once (the time is linear in the
model's size).

The table is drawn by ``rich`` (the ``examples`` extra: ``pip install nnxlib[examples]``),
imported only when ``tabulate`` runs.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import types
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxpr_as_fun

from nnxlib import graph as graphlib
from nnxlib.containers import Dict, List
from nnxlib.graph._graphdef import node_impl
from nnxlib.module import Module, Object
from nnxlib.rngs import RngState
from nnxlib.state import key_order
from nnxlib.variables import Variable

__all__ = ["CallInfo", "tabulate"]


@dataclasses.dataclass
class CallInfo:
    """One recorded call: what ``row_filter`` receives and a table row shows.

    ``type`` is the module's class, ``path`` its path (with the method's name for
    methods other than ``__call__``), ``object_id`` identifies the module,
    ``inputs_repr`` is the text of the inputs column and ``outputs`` the outputs with
    arrays replaced by their ``dtype[shape]`` text.

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.training.tabulate import CallInfo
        >>> CallInfo(0, 1, nnx.Linear, ("layer",), "float32[1,2]", "float32[1,3]").path
        ('layer',)
    """

    call_order: int
    object_id: int
    type: type
    path: tuple
    inputs_repr: str
    outputs: Any
    flops: int | None = None
    vjp_flops: int | None = None


# ------------------------------------------------------------------ text of values
def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _array_text(x: Any) -> str:
    return f"{x.dtype}[{','.join(map(str, x.shape))}]"


def _simple(x: Any) -> Any:
    """``x`` as nested lists and dicts of strings (arrays as ``float32[2,3]``)."""
    if _is_array(x):
        return _array_text(x)
    if isinstance(x, List):
        return [_simple(v) for v in x]
    if isinstance(x, (Dict, Mapping)):
        return _simple_mapping(x)
    if graphlib.is_graph_node(x):
        return f"{type(x).__name__}(...)"
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return {k: _simple(v) for k, v in zip(x._fields, x)}
    if isinstance(x, (list, tuple)):
        return [_simple(v) for v in x]
    if isinstance(x, type):
        return f"type[{x.__name__}]"
    if isinstance(x, str):
        return x
    if x is None or isinstance(x, (int, float, complex)):
        return repr(x)
    children, _ = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if children and children != [((), x)]:  # another registered pytree: by its keys
        return {jax.tree_util.keystr(path, simple=True, separator="/"): _simple(v)
                for path, v in children}
    return repr(x)


def _simple_mapping(x: Mapping) -> dict:
    """Keys in sorted order, as JAX flattens a dict."""
    return {str(k): _simple(x[k]) for k in sorted(x, key=key_order)}


def _lines(value: Any) -> list[str]:
    """Block-style lines (``- item`` for sequences, ``key: value`` for mappings)."""
    if isinstance(value, list):
        if not value:
            return ["[]"]
        out = []
        for item in value:
            sub = _lines(item)
            out += ["- " + sub[0], *("  " + line for line in sub[1:])]
        return out
    if isinstance(value, dict):
        if not value:
            return ["{}"]
        out = []
        for key, item in value.items():
            if isinstance(item, (list, dict)) and item:
                out += [f"{key}:", *("  " + line for line in _lines(item))]
            else:
                out.append(f"{key}: {_lines(item)[0]}")
        return out
    return [str(value)]


def _text(value: Any) -> str:
    """The cell text of a (simple) value; empty for None and empty containers."""
    if value is None or value == "None" or (isinstance(value, (list, dict)) and not value):
        return ""
    return "\n".join(_lines(value))


def _inputs_text(args: tuple, kwargs: dict) -> str:
    parts = []
    if args:
        parts.append(_text(_simple(args[0]) if len(args) == 1 and not kwargs
                           else _simple(list(args))))
    if kwargs:
        parts.append(_text(_simple(kwargs)))
    return "\n".join(p for p in parts if p)


def _bytes_text(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes > scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes:,} B"


# ------------------------------------------------------------------ variables per node
def _kind(value: Any) -> str | None:
    """The column a state leaf is counted in (RNG keys and counts share one)."""
    if isinstance(value, RngState):
        return "RngState"
    if isinstance(value, Variable):
        return type(value).__name__
    if isinstance(value, jax.Array):
        return "Array"
    return None


def _size_and_bytes(value: Any) -> tuple[int, int]:
    raw = value[...] if isinstance(value, Variable) else value
    if not _is_array(raw):
        return 0, 0
    size = int(np.prod(raw.shape, dtype=np.int64))  # a key is one entry
    if jax.dtypes.issubdtype(raw.dtype, jax.dtypes.prng_key):
        raw = jax.random.key_data(raw)  # and is stored as its raw key data
    return size, int(np.prod(raw.shape, dtype=np.int64)) * np.dtype(raw.dtype).itemsize


@dataclasses.dataclass
class _NodeInfo:
    path: tuple
    totals: dict[str, list[int]]     # kind -> [entries, bytes] over the subtree
    own: dict[str, dict[Any, Any]]   # kind -> {attribute: variable} held directly


def _nodes(root: Any) -> list[tuple[tuple, Any]]:
    """Every mutable graph node (module, ``List``, ...) below ``root`` once, depth
    first (first path wins). Immutable containers (tuples, ...) are walked through but
    not listed: one of them may be one object in one graph and two in its copy."""
    seen: set[int] = set()
    out: list[tuple[tuple, Any]] = []

    def visit(path: tuple, node: Any) -> None:
        impl = node_impl(type(node))
        if not impl.pytree:
            seen.add(id(node))
            out.append((path, node))
        for key, child in impl.children(node):
            if id(child) not in seen and node_impl(type(child)) is not None:
                visit((*path, key), child)

    visit((), root)
    return out


def _collect(root: Any) -> dict[int, _NodeInfo]:
    """Per node: its path and variables; a shared node or variable counts under the
    first node that reaches it."""
    infos: dict[int, _NodeInfo] = {}
    counted: set[int] = set()

    def visit(path: tuple, node: Any) -> _NodeInfo:
        info = infos[id(node)] = _NodeInfo(path, {}, {})
        for key, child in node_impl(type(node)).children(node):
            if id(child) in infos or id(child) in counted:
                continue
            kind = _kind(child)
            if kind is not None:
                counted.add(id(child))
                size, n_bytes = _size_and_bytes(child)
                total = info.totals.setdefault(kind, [0, 0])
                total[0] += size
                total[1] += n_bytes
                info.own.setdefault(kind, {})[key] = child
            elif node_impl(type(child)) is not None:
                for kind, (size, n_bytes) in visit((*path, key), child).totals.items():
                    total = info.totals.setdefault(kind, [0, 0])
                    total[0] += size
                    total[1] += n_bytes
        return info

    visit((), root)
    return infos


def _own_text(variables: Mapping[Any, Any]) -> str:
    """``name: dtype[shape]`` per variable, with its metadata (flax's required keys
    left out) under it when it has any."""
    entries: dict[str, Any] = {}
    for name, variable in variables.items():
        raw = variable[...] if isinstance(variable, Variable) else variable
        value = _array_text(raw) if _is_array(raw) else ""
        metadata = (variable.get_metadata(exclude_required=True)
                    if isinstance(variable, Variable) else {})
        if metadata:
            entries[str(name)] = _simple_mapping({"value": value, **metadata})
        elif value:
            entries[str(name)] = value
    return _text(entries)


# ------------------------------------------------------------------ recording calls
_BASES = frozenset({Object, Module, object})


def _recorded_methods(cls: type) -> list[str]:
    """``__call__`` and the public methods of ``cls`` not inherited from nnxlib's base
    classes (``sow``, ``train``, ... are not rows)."""
    names = []
    for name in dir(cls):
        if name.startswith("_") and name != "__call__":
            continue
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is not None and owner not in _BASES and isinstance(
                owner.__dict__[name], types.FunctionType):
            names.append(name)
    return names


class _Recorder:
    """Patches the recorded methods of the model's classes and collects the rows."""

    def __init__(self, infos: dict[int, _NodeInfo], flops: bool, vjp_flops: bool):
        self.infos = infos
        self.flops, self.vjp_flops = flops, vjp_flops
        self.ident: dict[int, int] = {}  # id(copy of a node) -> id(the real node)
        self.rows: list[CallInfo] = []
        self.seen: set[tuple[str, int, str]] = set()
        self.order = itertools.count()

    def pair(self, originals: list, copies: list) -> None:
        """Copies (same structure, same walk order) stand for their originals' nodes."""
        for (_, original), (_, copy) in zip(originals, copies, strict=True):
            self.ident[id(copy)] = self.ident.get(id(original), id(original))

    def wrap(self, cls: type, name: str, original: Callable) -> Callable:
        recorder = self

        def recorded(obj: Any, *args: Any, **kwargs: Any) -> Any:
            real = recorder.ident.get(id(obj))
            # Only the instance's own class records, so super() calls add no rows.
            if real is None or type(obj) is not cls:
                return original(obj, *args, **kwargs)
            inputs = _inputs_text(args, kwargs)
            order = next(recorder.order)
            if (inputs, real, name) in recorder.seen:  # called again alike: one row
                return original(obj, *args, **kwargs)
            recorder.seen.add((inputs, real, name))
            path = recorder.infos[real].path + (() if name == "__call__" else (name,))
            row = CallInfo(order, real, cls, path, inputs, None)
            recorder.rows.append(row)
            if recorder.flops or recorder.vjp_flops:
                out, row.flops, row.vjp_flops = recorder.measured(obj, original, args, kwargs)
            else:
                out = original(obj, *args, **kwargs)
            row.outputs = _simple(out)
            return out

        return recorded

    def measured(self, obj: Any, original: Callable, args: tuple,
                 kwargs: dict) -> tuple[Any, int | None, int | None]:
        """Run ``original(obj, *args, **kwargs)`` as a traced function of the state and
        arrays it reads, and XLA's flop estimates of it; the body runs once."""
        target = (obj, args, kwargs)
        graphdef, state = graphlib.split(target, graph=True)
        obj_graphdef = graphlib.graphdef(obj, graph=True)
        leaves, treedef = jax.tree.flatten(state)
        before = _nodes(target)
        shape: dict[str, Any] = {}

        def pure(*flat: Any) -> list:
            copy = graphlib.merge(graphdef, jax.tree.unflatten(treedef, list(flat)))
            self.pair(before, _nodes(copy))
            out = original(copy[0], *copy[1], **copy[2])
            new_graphdef, new_state = graphlib.split(copy[0], graph=True)
            out_leaves, out_tree = jax.tree.flatten(out, is_leaf=graphlib.is_graph_node)
            traced = [isinstance(x, jax.Array) for x in out_leaves]
            # A changed structure or a graph node returned cannot cross the boundary.
            shape.update(ok=new_graphdef == obj_graphdef and not any(
                graphlib.is_graph_node(x) for x in out_leaves), tree=out_tree, traced=traced,
                static=[None if t else x for x, t in zip(out_leaves, traced)])
            arrays = [x for x, t in zip(out_leaves, traced) if t]
            shape["n_out"] = len(arrays)
            return arrays + jax.tree.leaves(new_state)

        specs = [jax.ShapeDtypeStruct(jnp.shape(x), jax.typeof(x).dtype,
                                      weak_type=getattr(jax.typeof(x), "weak_type", False))
                 for x in leaves]
        try:
            program = jax.jit(pure).trace(*specs)
        except Exception:  # noqa: BLE001  (run as it is instead; a real error recurs)
            shape["ok"] = False
        if not shape.get("ok"):
            return original(obj, *args, **kwargs), None, None
        flops = _cost(lambda: program.lower()) if self.flops else None
        vjp_flops = _cost(lambda: _vjp_program(program.jaxpr, shape["n_out"], specs)) \
            if self.vjp_flops else None
        results = jaxpr_as_fun(program.jaxpr)(*leaves)
        n_out = shape["n_out"]
        graphlib.update(obj, jax.tree.unflatten(jax.tree.structure(graphlib.state(obj)),
                                                results[n_out:]))
        given = iter(results[:n_out])
        out_leaves = [next(given) if t else x for x, t in zip(shape["static"], shape["traced"])]
        return jax.tree.unflatten(shape["tree"], out_leaves), flops, vjp_flops


class _Patch:
    """Context manager: the recorded methods are wrapped inside, restored after."""

    def __init__(self, recorder: _Recorder, classes: Mapping[type, list[str]]):
        self.recorder = recorder
        # looked up before any class is patched, so a wrapper never calls a wrapper
        self.originals = {(cls, name): getattr(cls, name)
                          for cls, names in classes.items() for name in names}
        self.own = {key: key[0].__dict__.get(key[1], _INHERITED) for key in self.originals}

    def __enter__(self) -> None:
        for (cls, name), original in self.originals.items():
            setattr(cls, name, self.recorder.wrap(cls, name, original))

    def __exit__(self, *exc: Any) -> None:
        for (cls, name), previous in self.own.items():
            if previous is _INHERITED:
                delattr(cls, name)
            else:
                setattr(cls, name, previous)


_INHERITED = object()


def _vjp_program(jaxpr: Any, n_out: int, specs: list) -> Any:
    """The forward and backward pass of a traced call: the gradient of its (float)
    outputs with respect to its float inputs."""
    call = jaxpr_as_fun(jaxpr)
    diff = [i for i, s in enumerate(specs) if jnp.issubdtype(s.dtype, jnp.inexact)]

    def forward_backward(*flat: Any) -> Any:
        def f(*wrt: Any) -> list:
            full = list(flat)
            for i, value in zip(diff, wrt):
                full[i] = value
            return [o for o in call(*full)[:n_out] if jnp.issubdtype(o.dtype, jnp.inexact)]

        outs, pullback = jax.vjp(f, *(flat[i] for i in diff))
        return pullback(outs)

    return jax.jit(forward_backward).trace(*specs).lower()


def _cost(lower: Callable[[], Any]) -> int | None:
    """XLA's flop estimate of a lowered program; None where XLA gives none."""
    try:
        analysis = lower().cost_analysis()
    except Exception:  # noqa: BLE001  (no estimate, e.g. nothing to differentiate)
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return None if not analysis or "flops" not in analysis else int(analysis["flops"])


def _every_row(call: CallInfo) -> bool:
    """The default ``row_filter``: every recorded call is shown."""
    return True


def _iter_rows(rows: list[CallInfo], depth: int | None,
               row_filter: Callable[[CallInfo], bool]) -> Iterator[CallInfo]:
    for row in sorted(rows, key=lambda r: r.call_order):
        if (depth is None or len(row.path) <= depth) and row_filter(row):
            yield row


def tabulate(
    obj: Any,
    *input_args: Any,
    depth: int | None = None,
    method: str = "__call__",
    row_filter: Callable[[CallInfo], bool] = _every_row,
    table_kwargs: Mapping[str, Any] = MappingProxyType({}),
    column_kwargs: Mapping[str, Any] = MappingProxyType({}),
    console_kwargs: Mapping[str, Any] = MappingProxyType({}),
    compute_flops: bool = False,
    compute_vjp_flops: bool = False,
    **input_kwargs: Any,
) -> str:
    """Summarise ``obj.method(*input_args, **input_kwargs)`` as a table (a string).

    One row per recorded method call (in call order): ``__call__`` and the public
    methods of module classes, with the path (``block1/forward`` for a method other
    than ``__call__``), type, inputs and outputs, then one column per variable kind
    (``BatchStat``, ``Param``, ``RngState``, ...): the module's own variables (with
    their metadata) and the entries and bytes of its subtree. A shared module is counted
    under its first path, and calling a module again with inputs of the same shapes
    adds no row. The footer gives the totals, the caption the number of entries of all
    variables. Inputs may be arrays or ``jax.ShapeDtypeStruct`` s; nothing is computed
    and ``obj`` is left unchanged.

    Args:
        obj: the model.
        *input_args: positional inputs of ``method``.
        depth: show rows whose path has at most this many entries (None: all).
        method: the method of ``obj`` to run.
        row_filter: keep a row when this returns True for its :class:`CallInfo`.
        table_kwargs: passed to ``rich.table.Table`` (e.g. ``title``).
        column_kwargs: passed to each ``Table.add_column``.
        console_kwargs: passed to ``rich.console.Console`` (e.g. ``width``).
        compute_flops: add a ``flops`` column: XLA's estimate for each call.
        compute_vjp_flops: add a ``vjp_flops`` column: the estimate for the call's
            forward and backward pass.
        **input_kwargs: keyword inputs of ``method``.

    Raises:
        ImportError: ``rich`` is not installed.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
        >>> table = nnx.tabulate(model, jnp.ones((1, 2)), console_kwargs={"width": 200})
        >>> print(table)  # doctest: +SKIP
        >>> "layers/0" in table and "float32[1,4]" in table and "20 (80 B)" in table
        True
    """
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError as e:
        raise ImportError(
            "nnx.tabulate draws its table with the 'rich' package, which is not installed. "
            "Hint: pip install rich (or pip install 'nnxlib[examples]')."
        ) from e
    if not callable(getattr(obj, method, None)):
        raise AttributeError(
            f"tabulate: {type(obj).__name__} has no method {method!r}. Hint: pass the name "
            "of the method to run, e.g. method='__call__'."
        )

    infos = _collect(obj)
    real_nodes = _nodes(obj)
    classes: dict[type, list[str]] = {}
    for _, node in real_nodes:
        if isinstance(node, Module) and type(node) not in classes:
            classes[type(node)] = _recorded_methods(type(node))
    classes.setdefault(type(obj), [])
    if method not in classes[type(obj)] and callable(getattr(type(obj), method, None)):
        classes[type(obj)].append(method)
    recorder = _Recorder(infos, compute_flops, compute_vjp_flops)
    graphdef, state = graphlib.split(obj, graph=True)

    # Arrays (and ShapeDtypeStructs) are traced; anything else stays a Python value.
    leaves, treedef = jax.tree.flatten((input_args, input_kwargs),
                                       is_leaf=graphlib.is_graph_node)
    traced = [_is_array(leaf) for leaf in leaves]

    def run(state: Any, arrays: list) -> None:
        # A copy inside an abstract trace: the real model is neither run nor changed.
        given = iter(arrays)
        args, kwargs = treedef.unflatten(
            [next(given) if t else leaf for leaf, t in zip(leaves, traced)])
        copy = graphlib.merge(graphdef, state)
        recorder.pair(real_nodes, _nodes(copy))
        with _Patch(recorder, classes):
            getattr(copy, method)(*args, **kwargs)  # the rows hold what it returned

    jax.eval_shape(run, state, [leaf for leaf, t in zip(leaves, traced) if t])

    flop_columns = [name for name, wanted in (("flops", compute_flops),
                                              ("vjp_flops", compute_vjp_flops)) if wanted]
    kinds = sorted({kind for info in infos.values() for kind in info.totals})
    table = Table(title=f"{type(obj).__name__} Summary", show_header=True, show_lines=True,
                  show_footer=True, **table_kwargs)
    for header in ("path", "type", "inputs", "outputs", *flop_columns, *kinds):
        table.add_column(header, **column_kwargs)

    def stats(info: _NodeInfo, kind: str) -> str:
        total = info.totals.get(kind)
        return f"{total[0]:,} ({_bytes_text(total[1])})" if total else ""

    for row in _iter_rows(recorder.rows, depth, row_filter):
        info = infos[row.object_id]
        cells = ["/".join(map(str, row.path)), row.type.__name__, row.inputs_repr,
                 _text(row.outputs)]
        cells += ["" if getattr(row, c) is None else str(getattr(row, c))
                  for c in flop_columns]
        for kind in kinds:
            own = _own_text(info.own.get(kind, {}))
            cells.append("\n\n".join(p for p in (own, stats(info, kind)) if p))
        table.add_row(*(Text(c) for c in cells))
    root = infos[id(obj)]
    offset = 3 + len(flop_columns)
    table.columns[offset].footer = Text("Total", justify="right")
    for i, kind in enumerate(kinds):
        table.columns[offset + 1 + i].footer = Text(stats(root, kind))
    size = sum(t[0] for t in root.totals.values())
    n_bytes = sum(t[1] for t in root.totals.values())
    table.caption_style = "bold"
    table.caption = f"\nTotal Parameters: {size:,} ({_bytes_text(n_bytes)})"
    console = Console(file=io.StringIO(), record=True,
                      **{"width": 10_000, "force_terminal": False, **console_kwargs})
    console.print(table)
    return console.export_text()
