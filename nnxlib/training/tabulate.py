"""``tabulate``: a table of a model's submodule calls, shapes and variables.

The model is run once on abstract inputs (``jax.eval_shape``: nothing is computed, and
the model is not changed) while the calls of its submodules are recorded. Each row is
one call: the submodule's path and type, the shapes of its inputs and outputs, and per
variable kind the number of entries and bytes it holds. The last row has the totals.

The table is drawn by ``rich`` (the ``examples`` extra: ``pip install nnxlib[examples]``),
imported only when ``tabulate`` runs.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import numpy as np

from nnxlib import graph as graphlib
from nnxlib.errors import format_path
from nnxlib.module import Module
from nnxlib.rngs import RngState
from nnxlib.state import to_flat_state
from nnxlib.variables import Variable

__all__ = ["CallInfo", "tabulate"]


class CallInfo(NamedTuple):
    """One recorded call: what ``row_filter`` receives and a table row shows.

    Example:
        >>> from nnxlib.training.tabulate import CallInfo
        >>> CallInfo(0, ("layer",), "Linear", "float32[1,2]", "float32[1,3]").path
        ('layer',)
    """

    call_order: int
    path: tuple
    type: str
    inputs: str
    outputs: str
    flops: float | None = None
    vjp_flops: float | None = None
    abstract_inputs: Any = None   # (args, kwargs), arrays as ShapeDtypeStructs


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _flops(node: Any, name: str, abstract_inputs: Any, vjp: bool) -> float | None:
    """XLA's flop estimate for ``node.name(*args, **kwargs)`` (or its forward and
    backward pass), from the lowered program; None where XLA gives none."""
    graphdef, state = graphlib.split(node, graph=True)

    def forward(state: Any, inputs: Any) -> Any:
        args, kwargs = inputs
        return getattr(graphlib.merge(graphdef, state), name)(*args, **kwargs)

    def forward_backward(state: Any, inputs: Any) -> Any:
        out, pullback = jax.vjp(forward, state, inputs)
        return pullback(out)

    try:
        analysis = jax.jit(forward_backward if vjp else forward).lower(
            state, abstract_inputs).cost_analysis()
    except Exception:  # e.g. no gradient through integer outputs: no estimate
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return None if not analysis or "flops" not in analysis else float(analysis["flops"])


def _describe(x: Any) -> str:
    """Shapes instead of values: ``float32[2,3]``; containers keep their brackets."""
    if _is_array(x):
        return f"{x.dtype}[{','.join(map(str, x.shape))}]"
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return f"{type(x).__name__}(" + ", ".join(
            f"{k}={_describe(v)}" for k, v in zip(x._fields, x)) + ")"
    if isinstance(x, (list, tuple)):
        inner = ", ".join(_describe(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in x.items()) + "}"
    return repr(x)


def _arguments(args: tuple, kwargs: dict) -> str:
    parts = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


def _nbytes(value: Any) -> int:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)   # a key is stored as its raw key data
    return int(np.prod(np.shape(value), dtype=np.int64)) * np.dtype(value.dtype).itemsize


def _variable_summary(node: Any) -> dict[str, tuple[int, int, list[str]]]:
    """Per variable kind: entries, bytes, and one ``name: dtype[shape]`` line each."""
    out: dict[str, list] = {}
    for path, variable in to_flat_state(graphlib.state(node, graph=True)):
        value = variable[...] if isinstance(variable, Variable) else variable
        kind = type(variable).__name__ if isinstance(variable, Variable) else "Array"
        if isinstance(variable, RngState):
            kind = "RngState"  # one column for keys and counts, as flax shows them
        count, n_bytes, lines = out.setdefault(kind, [0, 0, []])
        size = int(np.prod(np.shape(value), dtype=np.int64))
        out[kind][0] += size
        out[kind][1] += _nbytes(value)
        lines.append(f"{format_path(path)}: {_describe(value)}")
    return {k: (c, b, lines) for k, (c, b, lines) in out.items()}


@contextlib.contextmanager
def _recording(tracked: dict[int, tuple[tuple, Any]], method: str,
               calls: list[CallInfo | None]) -> Iterator[None]:
    """Wrap the call methods of the classes of the ``tracked`` modules (``id -> (path,
    module)``) so that each call of one of them is recorded; restore them afterwards."""
    own: dict[tuple[type, str], Any] = {}
    for path, node in tracked.values():
        key = (type(node), method if path == () else "__call__")
        if key not in own and callable(getattr(*key, None)):
            own[key] = key[0].__dict__.get(key[1], _INHERITED)

    def wrap(cls: type, original: Callable) -> Callable:
        def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            # Only the instance's own class records, so super() calls add no rows.
            if type(self) is not cls or id(self) not in tracked:
                return original(self, *args, **kwargs)
            path = tracked[id(self)][0]
            order = len(calls)
            calls.append(None)  # reserve the row: a parent comes before its children
            out = original(self, *args, **kwargs)
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if _is_array(a) else a,
                (args, kwargs))
            calls[order] = CallInfo(order, path, cls.__name__, _arguments(args, kwargs),
                                    _describe(out), abstract_inputs=abstract)
            return out
        return recorded

    originals = {key: getattr(*key) for key in own}  # looked up before any is patched
    try:
        for (cls, name), original in originals.items():
            setattr(cls, name, wrap(cls, original))
        yield
    finally:
        for (cls, name), previous in own.items():
            if previous is _INHERITED:
                delattr(cls, name)
            else:
                setattr(cls, name, previous)


_INHERITED = object()


def _every_row(call: CallInfo) -> bool:
    """The default ``row_filter``: every recorded call is shown."""
    return True


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

    One row per submodule call (in call order): path, type, input and output shapes,
    then one column per variable kind (``Param``, ``BatchStat``, ...) with the entries
    and bytes the submodule holds (and, for modules without submodules, each variable's
    shape). A final row gives the totals of the whole object. Inputs may be arrays or
    ``jax.ShapeDtypeStruct`` s; nothing is computed and ``obj`` is left unchanged.

    Args:
        obj: the model.
        *input_args: positional inputs of ``method``.
        depth: show submodules down to this many path entries (None: all).
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
        >>> "layers[0]" in table and "float32[1,4]" in table and "20 (80 B)" in table
        True
    """
    try:
        from rich.console import Console
        from rich.table import Table
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

    real_nodes = {path: node for path, node in graphlib.iter_graph(obj, graph=True)
                  if isinstance(node, Module)}
    graphdef, state = graphlib.split(obj, graph=True)
    calls: list[CallInfo | None] = []

    # Arrays (and ShapeDtypeStructs) are traced; anything else stays a Python value.
    leaves, treedef = jax.tree.flatten((input_args, input_kwargs))
    traced = [_is_array(leaf) for leaf in leaves]

    def run(state: Any, arrays: list) -> Any:
        # A copy inside an abstract trace: the real model is neither run nor changed.
        given = iter(arrays)
        args, kwargs = treedef.unflatten(
            [next(given) if t else leaf for leaf, t in zip(leaves, traced)])
        copy = graphlib.merge(graphdef, state)
        tracked = {id(node): (path, node) for path, node in graphlib.iter_graph(copy, graph=True)
                   if isinstance(node, Module) or path == ()}
        with _recording(tracked, method, calls):
            return getattr(copy, method)(*args, **kwargs)

    jax.eval_shape(run, state, [leaf for leaf, t in zip(leaves, traced) if t])
    recorded = [c for c in calls if c is not None]
    if compute_flops or compute_vjp_flops:
        for i, call in enumerate(recorded):
            node = real_nodes.get(call.path, obj)
            name = method if call.path == () else "__call__"
            recorded[i] = call._replace(
                flops=_flops(node, name, call.abstract_inputs, vjp=False)
                if compute_flops else None,
                vjp_flops=_flops(node, name, call.abstract_inputs, vjp=True)
                if compute_vjp_flops else None)
    flop_columns = [name for name, wanted in (("flops", compute_flops),
                                              ("vjp_flops", compute_vjp_flops)) if wanted]

    kinds = sorted({kind for node in real_nodes.values()
                    for kind in _variable_summary(node)} | set(_variable_summary(obj)))
    table = Table(title=f"{type(obj).__name__} Summary", show_lines=True,
                  **{"title_justify": "center", **table_kwargs})
    for header in ("path", "type", "inputs", "outputs", *flop_columns, *kinds):
        table.add_column(header, **column_kwargs)

    def cells(node: Any, detailed: bool) -> list[str]:
        summary = _variable_summary(node)
        out = []
        for kind in kinds:
            if kind not in summary:
                out.append("")
                continue
            count, n_bytes, lines = summary[kind]
            text = f"{count:,} ({_size(n_bytes)})"
            out.append("\n".join([*lines, text]) if detailed else text)
        return out

    def flop_cells(call: CallInfo) -> list[str]:
        values = [getattr(call, name) for name in flop_columns]
        return ["" if v is None else f"{v:,.0f}" for v in values]

    for call in recorded:
        if depth is not None and len(call.path) > depth:
            continue
        if not row_filter(call):
            continue
        node = real_nodes.get(call.path, obj)
        leaf = not any(isinstance(v, Module) for _, v in graphlib.iter_graph(node, graph=True)
                       if v is not node)
        table.add_row(format_path(call.path, root="") if call.path else "", call.type,
                      call.inputs, call.outputs, *flop_cells(call), *cells(node, leaf))
    totals = cells(obj, detailed=False)
    table.add_row("", "", "", "Total", *[""] * len(flop_columns), *totals)
    summary = _variable_summary(obj)
    params = summary.get("Param", (0, 0, []))
    table.caption = (f"Total Parameters: {params[0]:,} ({_size(params[1])})"
                     if "Param" in summary else None)
    console = Console(file=io.StringIO(), record=True,
                      **{"width": 10_000, "force_terminal": False, **console_kwargs})
    console.print(table)
    return console.export_text()

