"""``vjp``, ``jvp`` and ``custom_vjp`` over functions of modules.

Conventions (nnxlib's, documented here because ``flax.nnx`` 0.12 has several modes):

* **vjp**: a module primal is differentiated with respect to its ``Param`` variables,
  like :func:`nnxlib.grad`; its cotangent is a ``State`` of those params (so for a scalar
  function ``vjp_fn(1.0)[0]`` equals ``nnx.grad(f)(model)``). Array primals get array
  cotangents, exactly as in ``jax.vjp``.
* **jvp**: the tangent of a module primal is a ``State`` (or a module of the same
  structure, whose state is used, or ``None``). Its paths pick the leaves that move:
  leaves without a tangent, and leaves that are not floating point (RNG keys and counts),
  are held constant. ``jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))`` is a
  typical tangent.
* **custom_vjp**: by default every variable of a module argument is differentiable (as
  in flax); ``nnx.DiffState(argnum, filter)`` in ``nondiff_argnums`` narrows it, a plain
  int makes an argument non-differentiable. ``bwd(*nondiff_args, res, g)`` receives
  ``g = (input_updates_g, out_g)``: ``input_updates_g`` has one entry per
  differentiable argument, a ``State`` (the cotangent of that module's state after the
  call) for modules and ``None`` otherwise; ``bwd`` returns one cotangent per
  differentiable argument, a ``State`` for modules (missing paths count as zero).

In every case, state changed by the function (BatchNorm statistics, RNG counts, …) is
written back to the caller's modules, as in eager mode.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> out, vjp_fn = nnx.vjp(lambda m, x: m(x).sum(), model, jnp.ones((3, 2)))
    >>> m_ct, x_ct = vjp_fn(jnp.ones(()))
    >>> sorted(m_ct), x_ct.shape
    (['bias', 'kernel'], (3, 2))
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nnxlib import graph as graphlib
from nnxlib.errors import format_path
from nnxlib.filters import to_predicate
from nnxlib.graph import is_graph_node, is_node_or_variable
from nnxlib.state import State, to_flat_state
from nnxlib.transforms import _carry, _lift
from nnxlib.transforms.autodiff import DiffState
from nnxlib.variables import Param, Variable

__all__ = ["vjp", "jvp", "custom_vjp", "CustomVjp"]

_MISSING: Any = object()


# ------------------------------------------------------------- argument layout
class _Layout:
    """Where each leaf of an argument tuple lives (graph objects are roots)."""

    def __init__(self, args: tuple, ext: _lift.Extracted):
        self.ext = ext
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

    def _wrap(self, j: int, value: Any) -> Any:
        leaf = self.template[j]
        return leaf.replace(value) if isinstance(leaf, Variable) else value

    def root_entries(self, r: int, item: Any, where: str) -> list:
        """``[(leaf index, value)]`` from a State/module/variable given for root ``r``."""
        if item is None:
            return []
        if is_graph_node(item):
            item = graphlib.state(item)
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
            entries.append((j, _carry.raw(value)))
        return entries


def _is_inexact(value: Any) -> bool:
    try:
        return bool(jnp.issubdtype(jnp.result_type(value), jnp.inexact))
    except TypeError:
        return False


def _assemble(layout: _Layout, graph_values: dict, other_values: list) -> tuple:
    """One entry per argument: States for module roots, arrays for the other leaves."""
    flat: list = [None] * len(layout.leaf_owner)
    for p, o in layout.other_index.items():
        flat[p] = other_values[o]
    for p, r in layout.root_at.items():
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


def _pure_function(f: Callable, ext: Any, diff: tuple, has_aux: bool, where: str) -> Callable:
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
        out = _carry.detach(out, where)
        info, send, other_out = _lift.collect(rebuilt, key, aux)
        return out, (_lift.StaticBox(info), send, other_out)

    return pure


# ------------------------------------------------------------------------ vjp
def vjp(f: Callable[..., Any] | None = None, *primals: Any, has_aux: bool = False,
        reduce_axes: tuple = ()) -> Any:
    """``jax.vjp`` for functions of modules: ``(out, vjp_fn)`` or ``(out, vjp_fn, aux)``.

    ``vjp_fn(cotangent)`` returns one cotangent per primal: a ``State`` of the ``Param``
    cotangents for a module primal, an array (pytree) for an array primal. State the
    function changes is written back to the caller's modules. Without primals returns a
    function that takes them (``nnx.vjp(f)(model, x)``); usable as a decorator.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((4, 3))
        >>> y, vjp_fn = nnx.vjp(lambda m, x: m(x), model, x)
        >>> m_ct, x_ct = vjp_fn(jnp.ones_like(y))
        >>> grads = nnx.grad(lambda m: m(x).sum())(model)
        >>> bool(jnp.allclose(m_ct["kernel"][...], grads["kernel"][...]))
        True
    """
    if f is None:
        return functools.partial(vjp, has_aux=has_aux)
    if not primals:
        @functools.wraps(f)
        def wrapper(*args: Any) -> Any:
            return _vjp(f, args, has_aux)

        return wrapper
    return _vjp(f, primals, has_aux)


def _vjp(f: Callable, primals: tuple, has_aux: bool) -> tuple:
    ext = _lift.extract(primals)
    layout = _Layout(primals, ext)
    is_param = to_predicate(Param)
    diff = tuple(j for j, (path, leaf) in enumerate(zip(layout.paths, layout.template))
                 if is_param(path[1:], leaf))
    values = ext.values
    pure = _pure_function(f, ext, diff, has_aux, "vjp")

    out, pullback, (box, send, other_out) = jax.vjp(
        pure, [values[j] for j in diff], ext.others, has_aux=True)
    aux = _lift.apply_outputs(ext.plan, box.value, send, other_out)

    def vjp_fn(cotangent: Any) -> tuple:
        graph_cts, other_cts = pullback(cotangent)
        return _assemble(layout, dict(zip(diff, graph_cts)), other_cts)

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


# ------------------------------------------------------------------------ jvp
def jvp(f: Callable[..., Any] | None = None, primals: Any = _MISSING,
        tangents: Any = _MISSING, *, has_aux: bool = False) -> Any:
    """``jax.jvp`` for functions of modules: ``(out, tangent_out)`` (``+ (aux,)``).

    ``primals`` and ``tangents`` are tuples with one entry per argument. The tangent of
    a module is a ``State`` (or a module of the same structure, or ``None``); leaves it
    leaves out, and non-float leaves, are held constant. Array primals need array
    tangents as in JAX. Without ``primals`` returns ``g(primals, tangents)``.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((1, 2))
        >>> direction = jax.tree.map(jnp.ones_like, nnx.state(model))
        >>> y, dy = nnx.jvp(lambda m, x: m(x), (model, x), (direction, jnp.zeros_like(x)))
        >>> float(dy[0, 0])                  # d/dt of x @ (W + t) + (b + t)
        3.0
    """
    if f is None:
        return functools.partial(jvp, has_aux=has_aux)
    if primals is _MISSING:
        @functools.wraps(f)
        def wrapper(primals: Any, tangents: Any) -> Any:
            return _jvp(f, primals, tangents, has_aux)

        return wrapper
    return _jvp(f, primals, tangents, has_aux)


def _jvp(f: Callable, primals: Any, tangents: Any, has_aux: bool) -> tuple:
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; pass one "
            "tangent per primal (a State or None for a module)."
        )
    ext = _lift.extract(primals)
    layout = _Layout(primals, ext)
    flat_tangents: list = []
    for i, (treedef, tangent) in enumerate(zip(layout.arg_treedefs, tangents)):
        try:
            flat_tangents += treedef.flatten_up_to(tangent)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"jvp: the tangent for argument {i} does not match its primal's structure "
                f"{treedef} (modules shown as leaves; give a State or None for each "
                f"module): {error}"
            ) from None
    graph_tangents: dict = {}
    for p, r in layout.root_at.items():
        for j, value in layout.root_entries(r, flat_tangents[p], "jvp"):
            if _is_inexact(ext.values[j]):
                graph_tangents[j] = value
    diff = tuple(sorted(graph_tangents))
    other_tangents = [flat_tangents[p] for p in sorted(layout.other_index)]
    values = ext.values
    pure = _pure_function(f, ext, diff, has_aux, "jvp")

    out, tangent_out, (box, send, other_out) = jax.jvp(
        pure, ([values[j] for j in diff], ext.others),
        ([graph_tangents[j] for j in diff], other_tangents), has_aux=True)
    aux = _lift.apply_outputs(ext.plan, box.value, send, other_out)
    return (out, tangent_out, aux) if has_aux else (out, tangent_out)


# ----------------------------------------------------------------- custom_vjp
def _pack(res: Any) -> tuple:
    """Residuals as arrays: graph objects in ``res`` are flattened (static part boxed)."""
    leaves, treedef = jax.tree_util.tree_flatten(res, is_leaf=is_node_or_variable)
    positions = tuple(i for i, x in enumerate(leaves) if is_node_or_variable(x))
    chosen = set(positions)
    others = [x for i, x in enumerate(leaves) if i not in chosen]
    if not positions:
        return _lift.StaticBox((treedef, positions, None)), [], others
    graphdef, node_leaves, _ = graphlib.flatten(tuple(leaves[i] for i in positions))
    return (_lift.StaticBox((treedef, positions, graphdef)),
            [_carry.raw(v) for v in node_leaves], others)


def _unpack(packed: tuple) -> tuple[Any, dict]:
    box, values, others = packed
    treedef, positions, graphdef = box.value
    objects: dict = {}
    if not positions:
        return jax.tree_util.tree_unflatten(treedef, others), objects
    nodes = graphlib.build(graphdef.root, iter(values), objects)
    leaves = list(others)
    for position, node in zip(positions, nodes):
        leaves.insert(position, node)
    return jax.tree_util.tree_unflatten(treedef, leaves), objects


class _VjpEntry:
    """Per argument structure: which leaves are differentiable, and the JAX function."""

    def __init__(self, owner: "CustomVjp", args: tuple, ext: _lift.Extracted):
        n_args = len(args)
        nondiff = set()
        filters: dict = {}
        for item in owner.nondiff_argnums:
            if isinstance(item, DiffState):
                filters[_normalize(item.argnum, n_args)] = to_predicate(item.filter)
            else:
                nondiff.add(_normalize(item, n_args))
        self.nondiff = tuple(sorted(nondiff))
        self.diff_args = tuple(i for i in range(n_args) if i not in nondiff)
        layout = self.layout = _Layout(args, ext)
        dg, rg = [], []
        for j, (path, leaf) in enumerate(zip(layout.paths, layout.template)):
            a = layout.owner_of_leaf(j)
            keep = a not in nondiff and (a not in filters or filters[a](path[1:], leaf))
            (dg if keep else rg).append(j)
        do, ro = [], []
        for p, o in sorted(layout.other_index.items()):
            (do if layout.leaf_owner[p] not in nondiff else ro).append(o)
        self.dg, self.rg, self.do, self.ro = tuple(dg), tuple(rg), tuple(do), tuple(ro)
        self.dg_index = {j: k for k, j in enumerate(dg)}
        self.do_index = {o: k for k, o in enumerate(do)}
        self.core = self._make_core(owner, ext.key, len(ext.values), len(ext.others))

    def assemble(self, n_values: int, n_others: int, dgv: list, dov: list, rgv: list,
                 rov: list) -> tuple[list, list]:
        vals: list = [None] * n_values
        oths: list = [None] * n_others
        for j, v in zip(self.dg, dgv):
            vals[j] = v
        for j, v in zip(self.rg, rgv):
            vals[j] = v
        for o, v in zip(self.do, dov):
            oths[o] = v
        for o, v in zip(self.ro, rov):
            oths[o] = v
        return vals, oths

    def _make_core(self, owner: "CustomVjp", key: tuple, n_values: int,
                   n_others: int) -> Callable:
        entry = self

        def run(dgv: list, dov: list, rgv: list, rov: list) -> tuple:
            vals, oths = entry.assemble(n_values, n_others, dgv, dov, rgv, rov)
            rebuilt = _lift.rebuild(key, vals, oths)
            out = _carry.detach(owner.fun(*rebuilt.tree), "custom_vjp")
            new = _carry.full_values(rebuilt, key, "custom_vjp")
            return [new[j] for j in entry.dg], [new[j] for j in entry.rg], out

        def fwd(dgv: list, dov: list, rgv: list, rov: list) -> tuple:
            vals, oths = entry.assemble(n_values, n_others, dgv, dov, rgv, rov)
            rebuilt = _lift.rebuild(key, vals, oths)
            result = owner.fwd(*rebuilt.tree)  # type: ignore[misc]
            if not (isinstance(result, tuple) and len(result) == 2):
                _lift.expire(rebuilt.objects.values())
                raise TypeError(
                    "custom_vjp: fwd must return a pair (output, residuals), got "
                    f"{type(result).__name__}."
                )
            out, res = result
            out = _carry.detach(out, "custom_vjp fwd")
            packed = _pack(res)
            new = _carry.full_values(rebuilt, key, "custom_vjp fwd")
            saved = (vals, oths) if entry.nondiff else None
            return ([new[j] for j in entry.dg], [new[j] for j in entry.rg], out), (packed,
                                                                                 saved)

        def bwd(residual: tuple, cts: tuple) -> tuple:
            packed, saved = residual
            res, res_objects = _unpack(packed)
            ct_updates, _, ct_out = cts
            nondiff_args: tuple = ()
            made: list = list(res_objects.values())
            if entry.nondiff:
                rebuilt = _lift.rebuild(key, *saved)
                nondiff_args = tuple(rebuilt.tree[i] for i in entry.nondiff)
                made += list(rebuilt.objects.values())
            updates_g = entry.updates_g(dict(zip(entry.dg, ct_updates)))
            result = owner.bwd(*nondiff_args, res, (updates_g, ct_out))  # type: ignore
            try:
                return (*entry.convert_cotangents(result), None, None)
            finally:
                _lift.expire(made)

        core = jax.custom_vjp(run)
        core.defvjp(fwd, bwd)
        return core

    def updates_g(self, graph_cts: dict) -> tuple:
        layout = self.layout
        result = []
        for a in self.diff_args:
            start, stop = layout.arg_ranges[a]
            roots = [p for p in range(start, stop) if p in layout.root_at]
            if not roots:
                result.append(None)
                continue
            flat = [layout.root_value(layout.root_at[p], graph_cts) if p in layout.root_at
                    else None for p in range(start, stop)]
            result.append(jax.tree_util.tree_unflatten(layout.arg_treedefs[a], flat))
        return tuple(result)

    def convert_cotangents(self, result: Any) -> tuple[list, list]:
        layout = self.layout
        if not isinstance(result, (tuple, list)) or len(result) != len(self.diff_args):
            raise TypeError(
                "custom_vjp: bwd must return a tuple with one cotangent per "
                f"differentiable argument ({len(self.diff_args)}: arguments "
                f"{list(self.diff_args)}), got {type(result).__name__}"
                f"{'' if not isinstance(result, (tuple, list)) else f' of {len(result)}'}."
                " Hint: return a State (or None) for each module argument."
            )
        ct_dg: list = [None] * len(self.dg)
        ct_do: list = [None] * len(self.do)
        for a, ct in zip(self.diff_args, result):
            if ct is None:
                continue
            start, stop = layout.arg_ranges[a]
            try:
                items = layout.arg_treedefs[a].flatten_up_to(ct)
            except (ValueError, TypeError) as error:
                raise TypeError(
                    f"custom_vjp: the cotangent bwd returned for argument {a} does not "
                    f"match the argument's structure {layout.arg_treedefs[a]} (modules "
                    f"shown as leaves; give a State for each): {error}"
                ) from None
            for p, item in zip(range(start, stop), items):
                if p in layout.root_at:
                    for j, value in layout.root_entries(layout.root_at[p], item,
                                                        "custom_vjp bwd"):
                        k = self.dg_index.get(j)
                        if k is None:
                            raise ValueError(
                                "custom_vjp: bwd returned a cotangent for the state at "
                                f"{'/'.join(map(str, layout.paths[j][1:]))!r} of "
                                f"argument {a}, which is not differentiable here. Hint: "
                                "return only the paths present in input_updates_g."
                            )
                        ct_dg[k] = value
                else:
                    ct_do[self.do_index[layout.other_index[p]]] = item
        return ct_dg, ct_do


def _normalize(argnum: int, n_args: int) -> int:
    if not -n_args <= argnum < n_args:
        raise ValueError(
            f"custom_vjp: nondiff_argnums entry {argnum} is out of range for {n_args} "
            "positional arguments."
        )
    return argnum % n_args


class CustomVjp:
    """A function with a user-defined VJP; made by :func:`custom_vjp`.

    Call :meth:`defvjp` with the forward and backward rules before calling it.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> f = nnx.custom_vjp(lambda x: jnp.sin(x))
        >>> f.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)),
        ...          lambda cos_x, g: (g[1] * cos_x,))
        >>> float(jax.grad(f)(0.0))
        1.0
    """

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: tuple = ()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None
        self._entries: dict = {}
        try:
            self._signature: inspect.Signature | None = inspect.signature(fun)
        except (TypeError, ValueError):
            self._signature = None

    def defvjp(self, fwd: Callable[..., tuple], bwd: Callable[..., tuple],
               symbolic_zeros: bool = False) -> None:
        """Set the forward rule ``fwd(*args) -> (out, res)`` and the backward rule
        ``bwd(*nondiff_args, res, (input_updates_g, out_g)) -> cotangents``.

        Residuals may hold modules. See the module docstring for the cotangent layout.

        Example:
            >>> import jax
            >>> import nnxlib as nnx
            >>> square = nnx.custom_vjp(lambda x: x * x)
            >>> square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g[1],))
            >>> float(jax.grad(square)(3.0))
            6.0
        """
        if symbolic_zeros:
            raise NotImplementedError(
                "custom_vjp: symbolic_zeros=True is not supported; zero cotangents arrive "
                "as arrays of zeros."
            )
        self.fwd, self.bwd = fwd, bwd
        self._entries.clear()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise AttributeError(
                f"custom_vjp: no VJP defined for {getattr(self.fun, '__name__', 'fun')}. "
                "Hint: call .defvjp(fwd, bwd) first."
            )
        if kwargs:
            args = self._positional(args, kwargs)
        ext = _lift.extract(args)
        cache_key = (ext.key, len(args))
        entry = self._entries.get(cache_key)
        if entry is None:
            entry = self._entries[cache_key] = _VjpEntry(self, args, ext)
        values, others = ext.values, ext.others
        new_dg, new_rg, out = entry.core(
            [values[j] for j in entry.dg], [others[o] for o in entry.do],
            [values[j] for j in entry.rg], [others[o] for o in entry.ro])
        _carry.write_values(ext.plan, entry.dg, new_dg)
        _carry.write_values(ext.plan, entry.rg, new_rg)
        return out

    def _positional(self, args: tuple, kwargs: dict) -> tuple:
        if self._signature is None:
            raise TypeError("custom_vjp: pass arguments positionally.")
        bound = self._signature.bind(*args, **kwargs)
        if bound.kwargs:
            raise TypeError(
                f"custom_vjp: keyword-only arguments {sorted(bound.kwargs)} are not "
                "supported; pass them positionally."
            )
        return tuple(bound.args)


def custom_vjp(fun: Callable[..., Any] | None = None, *,
               nondiff_argnums: tuple = ()) -> Any:
    """Define a function's VJP by hand; arguments may be modules.

    Returns a :class:`CustomVjp`; set its rules with ``.defvjp(fwd, bwd)``. For each
    module argument, its variables (all of them, or those a ``DiffState(argnum,
    filter)`` in ``nondiff_argnums`` selects) are differentiable; an int in
    ``nondiff_argnums`` makes that argument non-differentiable and passes it first to
    ``bwd``. ``bwd(res, (input_updates_g, out_g))`` returns one cotangent per
    differentiable argument, with a ``State`` for each module. Usable as a decorator
    with or without arguments.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Foo(nnx.Module):
        ...     def __init__(self):
        ...         self.x = nnx.Param(jnp.array(1.0))
        ...         self.y = nnx.Param(jnp.array(2.0))
        >>> @nnx.custom_vjp
        ... def f(m):
        ...     return jnp.sin(m.x) * m.y
        >>> def f_fwd(m):
        ...     return f(m), (jnp.cos(m.x), jnp.sin(m.x), m)
        >>> def f_bwd(res, g):
        ...     (m_updates_g,), out_g = g
        ...     cos_x, sin_x, m = res
        ...     m_g = jax.tree.map(lambda v: v, m_updates_g)   # a copy to fill in
        ...     m_g["x"][...] = cos_x * out_g * m.y
        ...     m_g["y"][...] = sin_x * out_g
        ...     return (m_g,)
        >>> f.defvjp(f_fwd, f_bwd)
        >>> grads = nnx.grad(f)(Foo())
        >>> round(float(grads["x"][...]), 4), round(float(grads["y"][...]), 4)
        (1.0806, 0.8415)
    """
    if fun is None:
        return functools.partial(custom_vjp, nondiff_argnums=nondiff_argnums)
    return CustomVjp(fun, nondiff_argnums)
