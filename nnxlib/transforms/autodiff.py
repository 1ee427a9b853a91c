"""``grad`` and ``value_and_grad`` over functions of modules.

For a module argument, the gradient is taken with respect to its ``Param`` variables
(or what a :class:`DiffState` filter selects) and returned as a ``State`` with the same
paths and variable types. Other state the function changes (BatchNorm statistics, RNG
counts) is written back to the caller's objects, as in eager mode.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> loss, grads = nnx.value_and_grad(lambda m, x: (m(x) ** 2).sum())(model, jnp.ones((3, 2)))
    >>> grads["kernel"].shape, type(grads["kernel"]).__name__
    ((2, 1), 'Param')
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from nnxlib.errors import InvalidArgumentError, format_path
from nnxlib.filters import to_predicate
from nnxlib.graph import graphdef, is_node_or_variable, merge
from nnxlib.graph.mode import Mode, resolve_mode
from nnxlib.state import State
from nnxlib.transforms import _axes, _lift
from nnxlib.transforms._arguments import check_function, check_prefix
from nnxlib.transforms._sharding import argument_of_leaves
from nnxlib.transforms.axes import PrefixMapping
from nnxlib.variables import Param, Variable

__all__ = ["DiffState", "grad", "value_and_grad"]


class DiffState(NamedTuple):
    """Differentiate argument ``argnum`` with respect to the state ``filter`` selects.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> loss = lambda m, x: m(x).sum()
        >>> grads = nnx.grad(loss, argnums=nnx.DiffState(0, "batch_stats"))(bn, jnp.ones((4, 2)))
        >>> sorted(grads)
        ['mean', 'var']
    """

    argnum: int
    filter: Any


PrefixMapping.register(DiffState)  # a filter-keyed prefix: needs graph updates


class _Layout(NamedTuple):
    """Which leaves are differentiated, per differentiated argument (per signature)."""

    diff_graph: tuple  # per diff argnum: graph leaf positions
    diff_other: tuple  # per diff argnum: other-leaf positions
    rest_graph: tuple
    rest_other: tuple
    arg_is_node: tuple  # per diff argnum: the argument itself is a graph object
    arg_roots: tuple  # per diff argnum: its graph objects' root indices (first occurrence)


def _normalize_argnums(argnums: Any) -> tuple[tuple, bool]:
    single = isinstance(argnums, (int, DiffState))
    items = (argnums,) if single else tuple(argnums)
    specs = tuple(a if isinstance(a, DiffState) else DiffState(a, Param) for a in items)
    return specs, single


def _layout(specs: tuple, ext: _lift.Extracted, args: tuple, kwargs: dict) -> _Layout:
    owners = argument_of_leaves(args, kwargs)
    node_positions = set(ext.node_positions)
    other_owners = [o for i, o in enumerate(owners) if i not in node_positions]
    roots = [owners[p] for p in ext.node_positions]
    leaves = jax.tree_util.tree_leaves((args, kwargs), is_leaf=is_node_or_variable)
    objects = [leaves[p] for p in ext.node_positions]
    first_root: dict = {}
    root_of = [first_root.setdefault(id(obj), r) for r, obj in enumerate(objects)]
    paths = ext.plan.graphdef.paths if ext.plan is not None else ()
    template = ext.plan.template if ext.plan is not None else ()
    diff_graph, diff_other, arg_roots = [], [], []
    for spec in specs:
        if not -len(args) <= spec.argnum < len(args):
            raise ValueError(
                f"grad: argnums {spec.argnum} is out of range for {len(args)} positional "
                "arguments. Hint: differentiate positional arguments only."
            )
        argnum = spec.argnum % len(args)
        predicate = to_predicate(spec.filter)
        # The filter picks variables inside modules; a variable that is itself a leaf of
        # the argument's pytree is differentiated whatever its type, as in flax.nnx.
        diff_graph.append(tuple(
            j for j, (path, leaf) in enumerate(zip(paths, template))
            if roots[path[0]] == argnum and (len(path) == 1 or predicate(path[1:], leaf))))
        diff_other.append(tuple(i for i, o in enumerate(other_owners) if o == argnum))
        arg_roots.append(tuple(root_of[r] for r, o in enumerate(roots) if o == argnum))
    used_graph = {j for group in diff_graph for j in group}
    if ext.plan is not None:
        _check_shared_diff(ext, specs, args, kwargs, roots, used_graph)
    used_other = {i for group in diff_other for i in group}
    return _Layout(
        tuple(diff_graph), tuple(diff_other),
        tuple(j for j in range(len(paths)) if j not in used_graph),
        tuple(i for i in range(len(other_owners)) if i not in used_other),
        tuple(is_node_or_variable(args[s.argnum]) for s in specs), tuple(arg_roots))


def _check_shared_diff(ext: _lift.Extracted, specs: tuple, args: tuple, kwargs: dict,
                       roots: list, used_graph: set) -> None:
    """Shared state must be differentiated on every path that reaches it, or on none."""
    predicates = [(s.argnum % len(args), to_predicate(s.filter)) for s in specs]

    def diff_at(root: int, path: tuple, leaf: Any) -> bool:
        return any(roots[root] == argnum and (not path or predicate(path, leaf))
                   for argnum, predicate in predicates)

    names = _axes.leaf_names((args, kwargs), is_node_or_variable)
    _axes.check_shared_entries(
        ext.plan.graphdef, ext.plan.template,  # type: ignore[union-attr]
        [j in used_graph for j in range(len(ext.plan.template))],  # type: ignore[union-attr]
        diff_at, [names[p] for p in ext.node_positions], "grad argnums", "role",
        lambda diff: "differentiated" if diff else "not differentiated")


def _check_differentiable(ext: _lift.Extracted, layout: _Layout, pytree_grads: tuple,
                          specs: tuple, where: str, mode: Mode) -> None:
    """Without graph updates every variable is differentiated: name an integer one
    before jax does."""
    for k, tree in enumerate(pytree_grads):
        if not tree:
            continue
        for j in layout.diff_graph[k]:
            dtype = getattr(ext.values[j], "dtype", None)
            if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
                path = ext.plan.graphdef.paths[j]  # type: ignore[union-attr]
                raise InvalidArgumentError(
                    f"{where}({'graph' if not mode.graph else 'graph_updates'}=False) "
                    f"differentiates every variable of argument "
                    f"{specs[k].argnum}, as jax.grad does a pytree; "
                    f"`{format_path(path[1:], f'args[{specs[k].argnum}]')}` is {dtype}, "
                    "which has no gradient.\nExpected: floating-point leaves. Hint: pass "
                    "allow_int=True (its gradient is float0), or use graph mode with graph "
                    "updates, which differentiates Params only by default and takes "
                    "nnx.DiffState filters.")


def _grad_state(ext: _lift.Extracted, positions: tuple, grads: list,
                root: int | None = None) -> State:
    """The gradients at ``positions`` as a State of the variables' paths (below the
    root; only those of root ``root`` when given)."""
    paths = ext.plan.graphdef.paths
    template = ext.plan.template
    pairs = [(j, g) for j, g in zip(positions, grads) if root is None or paths[j][0] == root]
    leaves = [template[j].replace(g) if isinstance(template[j], Variable) else g
              for j, g in pairs]
    return State._from_flat(tuple(paths[j][1:] for j, _ in pairs), leaves)


def _variable_grad(ext: _lift.Extracted, positions: tuple, grads: list, root: int) -> Any:
    """The gradient of the bare variable at root ``root``, as a variable of its type (an
    empty State when it is not differentiated)."""
    paths = ext.plan.graphdef.paths
    for j, g in zip(positions, grads):
        if paths[j] == (root,):
            return ext.plan.template[j].replace(g)
    return State({})


def _pytree_grads(ext: _lift.Extracted, layout: _Layout, k: int, arg: Any, g_graph: list,
                  g_other: list, mode: Mode, module_shaped: bool) -> Any:
    """The gradient of a pytree argument, shaped like it: a bare variable becomes a
    variable of its type holding its gradient, a module the State of its gradients (a
    module holding them when ``module_shaped``), an array its gradient. An object seen
    before (a shared reference) gets the same gradient object again, or with graph
    updates an empty State, as in flax.nnx."""
    leaves, treedef = jax.tree_util.tree_flatten(arg, is_leaf=is_node_or_variable)
    roots, others = iter(layout.arg_roots[k]), iter(g_other)
    made: dict = {}
    out = []
    for leaf in leaves:
        if not is_node_or_variable(leaf):
            out.append(next(others))
            continue
        root = next(roots)
        if root in made:
            out.append(State({}) if mode.updates else made[root])
            continue
        if isinstance(leaf, Variable):
            grad = _variable_grad(ext, layout.diff_graph[k], g_graph, root)
        else:
            grad = _grad_state(ext, layout.diff_graph[k], g_graph, root)
            if module_shaped:
                grad = merge(graphdef(leaf, graph=True), grad)
        made[root] = grad
        out.append(grad)
    return jax.tree_util.tree_unflatten(treedef, out)


def _transform(f: Callable, argnums: Any, has_aux: bool, holomorphic: bool,
               allow_int: bool, return_value: bool, mode: Mode) -> Callable:
    specs, single = _normalize_argnums(argnums)
    where = "nnx.value_and_grad" if return_value else "nnx.grad"
    # Without graph updates (tree mode, or graph_updates=False) a module argument is
    # differentiated like jax.grad a pytree: every variable, and the gradient has the
    # argument's shape (a module holding gradients), as in flax.nnx.
    pytree_grads = tuple(not mode.updates and not isinstance(a, DiffState)
                         for a in ((argnums,) if single else tuple(argnums)))
    if any(pytree_grads):
        specs = tuple(DiffState(s.argnum, ...) if tree else s
                      for s, tree in zip(specs, pytree_grads))
    layouts: dict = {}

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ext = _lift.extract((args, kwargs), mode, where, _lift.ARGS_KWARGS)
        key = ext.key
        layout = layouts.get(key)
        if layout is None:
            layout = _layout(specs, ext, args, kwargs)
            if not allow_int:
                _check_differentiable(ext, layout, pytree_grads, specs, where, mode)
            layouts[key] = layout
        values, others = ext.values, ext.others
        n_values, n_others = len(values), len(others)

        def pure(diff_graph: list, diff_other: list, rest_graph: list,
                 rest_other: list) -> tuple:
            vals: list = [None] * n_values
            oths: list = [None] * n_others
            for positions, group in zip(layout.diff_graph, diff_graph):
                for j, v in zip(positions, group):
                    vals[j] = v
            for positions, group in zip(layout.diff_other, diff_other):
                for i, v in zip(positions, group):
                    oths[i] = v
            for j, v in zip(layout.rest_graph, rest_graph):
                vals[j] = v
            for i, v in zip(layout.rest_other, rest_other):
                oths[i] = v
            rebuilt = _lift.rebuild(key, vals, oths)
            call_args, call_kwargs = rebuilt.tree
            out = f(*call_args, **call_kwargs)
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise TypeError(
                        "grad with has_aux=True expects the function to return a pair "
                        f"(loss, aux), got {type(out).__name__}."
                    )
                primal, aux = out
            else:
                primal, aux = out, None
            info, send, other_out = _lift.collect(rebuilt, key, aux, mode, where,
                                                  _lift.ARGS_KWARGS)
            return primal, (_lift.StaticBox(info), send, other_out)

        diff_graph = [[values[j] for j in group] for group in layout.diff_graph]
        diff_other = [[others[i] for i in group] for group in layout.diff_other]
        rest_graph = [values[j] for j in layout.rest_graph]
        rest_other = [others[i] for i in layout.rest_other]
        (primal, (box, send, other_out)), (g_graph, g_other) = jax.value_and_grad(
            pure, argnums=(0, 1), has_aux=True, holomorphic=holomorphic,
            allow_int=allow_int)(diff_graph, diff_other, rest_graph, rest_other)
        aux = _lift.apply_outputs(ext.plan, box.value, send, other_out)
        grads = []
        for k, spec in enumerate(specs):
            if isinstance(args[spec.argnum], Variable):
                root = layout.arg_roots[k][0]
                grads.append(_variable_grad(ext, layout.diff_graph[k], g_graph[k], root))
            elif layout.arg_is_node[k]:
                state = _grad_state(ext, layout.diff_graph[k], g_graph[k])
                if pytree_grads[k]:  # shaped like the argument (tree mode)
                    state = merge(graphdef(args[spec.argnum], graph=True), state)
                grads.append(state)
            else:
                grads.append(_pytree_grads(ext, layout, k, args[spec.argnum], g_graph[k],
                                           g_other[k], mode, pytree_grads[k]))
        result = grads[0] if single else tuple(grads)
        if not return_value:
            return (result, aux) if has_aux else result
        value = (primal, aux) if has_aux else primal
        return value, result

    return wrapper


def grad(f: Callable | None = None, argnums: Any = 0, has_aux: bool = False, *,
         holomorphic: bool = False, allow_int: bool = False, reduce_axes: tuple = (),
         graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """Gradient of ``f`` with respect to the ``Param`` s of module arguments.

    ``argnums`` may hold ints or :class:`DiffState` s. Returns a ``State`` per module
    argument (plain gradients for array arguments); with ``has_aux`` returns
    ``(grads, aux)``. Usable as a decorator with or without arguments.

    In tree mode (``graph=False``) a module argument given by its int position is
    differentiated like a pytree by ``jax.grad``: with respect to every variable, the
    gradient being a copy of the module holding gradients (``nnx.Optimizer.update``
    takes either form). A :class:`DiffState` keeps its filter and ``State`` result.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        >>> grads = nnx.grad(lambda m: m(jnp.ones((1, 3))).sum())(model)
        >>> grads["bias"][...]
        Array([1.], dtype=float32)
    """
    mode = resolve_mode(graph, graph_updates)
    check_prefix(argnums, "argnums", "nnx.grad", mode)
    if f is None:
        return lambda fn: grad(fn, argnums, has_aux, holomorphic=holomorphic,
                               allow_int=allow_int, graph=mode.graph,
                               graph_updates=mode.updates)
    check_function(f, "nnx.grad")
    return _transform(f, argnums, has_aux, holomorphic, allow_int, False, mode)


def value_and_grad(f: Callable | None = None, argnums: Any = 0, has_aux: bool = False, *,
                   holomorphic: bool = False, allow_int: bool = False,
                   reduce_axes: tuple = (), graph: bool | None = None,
                   graph_updates: bool | None = None) -> Any:
    """Like :func:`grad` but returns ``(value, grads)`` (``((value, aux), grads)``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        >>> value, grads = nnx.value_and_grad(lambda m: m(jnp.zeros((1, 3))).sum())(model)
        >>> float(value), sorted(grads)
        (0.0, ['bias', 'kernel'])
    """
    mode = resolve_mode(graph, graph_updates)
    check_prefix(argnums, "argnums", "nnx.value_and_grad", mode)
    if f is None:
        return lambda fn: value_and_grad(fn, argnums, has_aux, holomorphic=holomorphic,
                                         allow_int=allow_int, graph=mode.graph,
                                         graph_updates=mode.updates)
    check_function(f, "nnx.value_and_grad")
    return _transform(f, argnums, has_aux, holomorphic, allow_int, True, mode)
