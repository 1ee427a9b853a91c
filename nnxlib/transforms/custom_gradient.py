"""``custom_vjp`` over functions of modules.

By default every variable of a module argument is differentiable (as in flax);
``nnx.DiffState(argnum, filter)`` in ``nondiff_argnums`` narrows it, a plain int makes
an argument non-differentiable and passes it first to ``bwd``. The two conventions of
flax.nnx 0.12 for ``bwd``:

* **graph mode with graph updates** (the default): ``bwd(*nondiff_args, res, g)``
  receives ``g = (input_updates_g, out_g)``. ``input_updates_g`` has one entry per
  differentiable argument: for a module, a ``State`` of the cotangents of all its
  state after the call (zeros where nothing flowed); ``None`` otherwise. ``bwd``
  returns one cotangent per differentiable argument, a ``State`` for a module (only
  differentiable paths; missing ones count as zero). Structural changes the function
  makes (a new attribute, a changed static value) and returned input modules come
  back as in every transform.
* **without graph updates** (``graph=False`` or ``graph_updates=False``): like
  ``jax.custom_vjp``, ``bwd(*nondiff_args, res, out_g)``, and module cotangents may
  be modules (shaped like the argument). When the function changed some state,
  ``bwd`` gets a third argument: per differentiable argument, the cotangents of the
  changed state shaped like the argument (``None`` where nothing changed).

State changed by the function is written back to the caller's modules, as in eager mode.

Example:
    >>> import nnxlib as nnx
    >>> callable(nnx.custom_vjp)
    True
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nnxlib import graph as graphlib
from nnxlib.filters import to_predicate
from nnxlib.graph import is_node_or_variable
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _axes, _full_state, _lift
from nnxlib.transforms._arguments import check_function, check_prefix
from nnxlib.transforms._axes import iter_def_leaves
from nnxlib.transforms._diff_layout import _Layout
from nnxlib.transforms.autodiff import DiffState
from nnxlib.variables import Variable

__all__ = ["custom_vjp", "CustomVjp"]


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
            [_full_state.raw(v) for v in node_leaves], others)


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


def _check_shared_roles(layout: _Layout, ext: _lift.Extracted, diff: set, nondiff: set,
                        filters: dict) -> None:
    """A shared Variable must be differentiable on every path that reaches it, or on
    none: one object cannot get a cotangent and also be a nondiff argument."""
    def differentiable(root: int, path: tuple, leaf: Any) -> bool:
        a = layout.root_owner[root]
        return a not in nondiff and (a not in filters or filters[a](path, leaf))

    _axes.check_shared_entries(
        ext.plan.graphdef, layout.template,  # type: ignore[union-attr]
        [j in diff for j in range(len(layout.template))], differentiable,
        [f"args[{a}]" for a in layout.root_owner], "custom_vjp", error=_both_sides_error)


def _both_sides_error(where: str, kind: str, first: str, first_entry: str, here: str,
                      entry: str, what: str) -> ValueError:
    return ValueError(
        f"{where}: the {kind} at {first} is also reached from {here}, once as a "
        f"differentiable and once as a nondiff argument (Duplicate {kind} found at paths "
        f"{first} and {here}).\nExpected: each Variable on one side of nondiff_argnums. "
        "Actual: the same object on both.\nHint: pass it once, or nnx.clone it for the "
        "nondiff side."
    )


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
        if ext.plan is not None:
            _check_shared_roles(layout, ext, set(dg), nondiff, filters)
        layout.detach()  # this entry is cached per structure
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
        """``jax.custom_vjp`` of the lifted function. Its outputs are what
        :func:`_lift.collect` sends out (changed state, the output's leaves, the static
        facts), so the call applies them like every transform: changed values, changed
        structure (graph updates) and returned modules."""
        entry = self
        where = "nnx.custom_vjp"

        def run(dgv: list, dov: list, rgv: list, rov: list) -> tuple:
            vals, oths = entry.assemble(n_values, n_others, dgv, dov, rgv, rov)
            rebuilt = _lift.rebuild(key, vals, oths)
            out = owner.fun(*rebuilt.tree)
            info, send, other_out = _lift.collect(rebuilt, key, out, owner.mode, where)
            return send, other_out, _lift.StaticBox(info)

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
            packed = _pack(res)  # before collect expires the objects res may hold
            info, send, other_out = _lift.collect(rebuilt, key, out, owner.mode,
                                                  f"{where} fwd")
            saved = (vals, oths) if entry.nondiff else None
            box = _lift.StaticBox(info)
            return (send, other_out, box), (packed, saved, box)

        def bwd(residual: tuple, cts: tuple) -> tuple:
            packed, saved, box = residual
            info = box.value
            res, res_objects = _unpack(packed)
            ct_send, ct_other, _ = cts
            nondiff_args: tuple = ()
            made: list = list(res_objects.values())
            if entry.nondiff:
                rebuilt = _lift.rebuild(key, *saved)
                nondiff_args = tuple(rebuilt.tree[i] for i in entry.nondiff)
                made += list(rebuilt.objects.values())
            updated = entry.input_cotangents(key[2], info, ct_send)  # input leaf -> ct
            ct_out = _output_cotangent(info, ct_other)
            if owner.mode.updates:
                # every leaf of the module arguments (bwd keeps the differentiable ones)
                avals = key[2].avals if key[2] is not None else ()
                updates_g = entry.updates_g(
                    {j: updated.get(j, _zeros(aval)) for j, aval in enumerate(avals)})
                result = owner.bwd(*nondiff_args, res, (updates_g, ct_out))  # type: ignore
            elif any(j in updated for j in entry.dg):
                # like jax.custom_vjp, plus the cotangents of the changed state
                result = owner.bwd(*nondiff_args, res, ct_out,  # type: ignore[misc]
                                   entry.shaped_updates_g(updated))
            else:  # like jax.custom_vjp
                result = owner.bwd(*nondiff_args, res, ct_out)  # type: ignore[misc]
            try:
                return (*entry.convert_cotangents(result), None, None)
            finally:
                _lift.expire(made)

        core = jax.custom_vjp(run)
        core.defvjp(fwd, bwd)
        return core

    def input_cotangents(self, graphdef: Any, info: _lift.OutInfo, ct_send: list) -> dict:
        """The cotangents of the sent values, by the input leaf they updated."""
        if info.fast:
            return {j: ct for j, ct in zip(info.changed, ct_send)}
        position = {k: j for j, k in enumerate(_leaf_keys(graphdef.root))}
        found = {}
        for k, ct in zip(_leaf_keys(info.joint.root), ct_send):  # type: ignore[union-attr]
            j = position.get(k)
            if j is not None:
                found[j] = ct
        return found

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

    def shaped_updates_g(self, updated: dict) -> tuple:
        """Without graph updates: per differentiable argument, the cotangents of the
        state the function changed, shaped like the argument (a module holding a
        variable where a variable changed and ``None`` elsewhere; ``None`` for arrays)."""
        layout = self.layout
        ct_of = {j: updated[j] for j in self.dg if j in updated}

        def shaped(r: int) -> Any:
            # a fresh module from the root's definition: cotangents where state changed,
            # None elsewhere
            values = [ct_of.get(j) for j in layout.root_leaves[r]]
            node = graphlib.build(layout.root_defs[r], iter(values), {})
            return jax.tree_util.tree_map(
                lambda v: None if v._raw_value is None else v, node,
                is_leaf=lambda x: isinstance(x, Variable))

        result = []
        for a in self.diff_args:
            start, stop = layout.arg_ranges[a]
            leaves = [shaped(layout.root_at[p]) if p in layout.root_at else None
                      for p in range(start, stop)]
            result.append(jax.tree_util.tree_unflatten(layout.arg_treedefs[a], leaves))
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
                        if _is_inexact(layout.template[j]):
                            ct_dg[k] = value  # an integer leaf has no cotangent
                else:
                    ct_do[self.do_index[layout.other_index[p]]] = item
        return ct_dg, ct_do


def _leaf_keys(root: Any) -> list:
    """One key per leaf of a definition: a variable's identity index, or an array
    attribute's path (so leaves of two structures can be matched)."""
    return [("v", d.index) if d.kind == "variable" else ("p", path)
            for path, d in iter_def_leaves(root)]


def _zeros(aval: Any) -> Any:
    shape, dtype = aval
    return jnp.zeros(shape, dtype)


def _output_cotangent(info: _lift.OutInfo, ct_other: list) -> Any:
    """The cotangent of the function's output, shaped like it (``None`` where it
    returned a module)."""
    if not info.out_positions:
        return jax.tree_util.tree_unflatten(info.out_treedef, ct_other)
    leaves = list(ct_other)
    for position in info.out_positions:
        leaves.insert(position, None)
    return jax.tree_util.tree_unflatten(info.out_treedef, leaves)


def _is_inexact(leaf: Any) -> bool:
    value = leaf._raw_value if isinstance(leaf, Variable) else leaf
    dtype = getattr(value, "dtype", None)
    return dtype is None or bool(jnp.issubdtype(dtype, jnp.inexact))


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

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: tuple = (),
                 graph: bool | None = None, graph_updates: bool | None = None):
        check_function(fun, "nnx.custom_vjp")
        self.mode = resolve_mode(graph, graph_updates)
        check_prefix(nondiff_argnums, "nondiff_argnums", "nnx.custom_vjp", self.mode)
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
        ext = _lift.extract(args, self.mode, "nnx.custom_vjp")
        cache_key = (ext.key, len(args))
        entry = self._entries.get(cache_key)
        if entry is None:
            entry = self._entries[cache_key] = _VjpEntry(self, args, ext)
        values, others = ext.values, ext.others
        send, other_out, box = entry.core(
            [values[j] for j in entry.dg], [others[o] for o in entry.do],
            [values[j] for j in entry.rg], [others[o] for o in entry.ro])
        return _lift.apply_outputs(ext.plan, box.value, send, other_out)

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
               nondiff_argnums: tuple = (), graph: bool | None = None,
               graph_updates: bool | None = None) -> Any:
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
    mode = resolve_mode(graph, graph_updates)
    if fun is None:
        return functools.partial(custom_vjp, nondiff_argnums=nondiff_argnums,
                                 graph=mode.graph, graph_updates=mode.updates)
    return CustomVjp(fun, nondiff_argnums, mode.graph, mode.updates)
