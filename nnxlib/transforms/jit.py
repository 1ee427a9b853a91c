"""``jit``: compile a function of modules, paying per call only for its arrays.

Per call, outside ``jax.jit``: flatten the arguments, look up the cached split plan of
the modules in them (O(1) while their structure is unchanged), gather the variables'
arrays into a list, call the compiled function, and assign the arrays it returns to the
variables it changed. Splitting, merging and comparing structure happen at trace time
only, and the compiled program is the one ``jax.jit`` would build for the same pure
function on arrays.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    >>> @nnx.jit
    ... def forward(model, x):
    ...     return model(x)             # updates the running statistics in place
    >>> y = forward(model, jnp.arange(6.0).reshape(2, 3))
    >>> model.mean[...].round(3)
    Array([0.015, 0.025, 0.035], dtype=float32)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax

from nnxlib.errors import InvalidArgumentError, NotSupportedError, format_path
from nnxlib.graph import is_node_or_variable
from nnxlib.graph.mode import resolve_mode
from nnxlib.transforms import _lift, aot
from nnxlib.transforms._arguments import check_function, prefix_argument
from nnxlib.transforms._sharding import (
    StateSharding,
    argument_of_leaves,
    constrain_changed_inputs,
    constrain_graph_outputs,
    jax_out_shardings,
    leaf_shardings,
    place_inputs,
    placements,
)

__all__ = ["jit", "JitWrapped", "StateSharding"]


class _Entry:
    """One traced signature: the ``jax.jit`` function and how to call it."""

    __slots__ = ("jitted", "donated", "kept", "donated_others", "kept_others", "placed")

    def __init__(self, jitted: Callable, donated: tuple, kept: tuple | None,
                 donated_others: tuple = (), kept_others: tuple = (),
                 placed: tuple | None = None):
        self.jitted = jitted
        self.placed = placed  # (leaf, sharding) placed before each call (graph_updates)
        self.donated = donated  # leaf positions of graph values passed as donated
        self.kept = kept  # remaining leaf positions (None when nothing is donated)
        self.donated_others = donated_others  # positions of donated non-graph leaves
        self.kept_others = kept_others

    def call_args(self, ext: _lift.Extracted) -> tuple:
        """The arguments ``self.jitted`` takes for extracted arguments ``ext``."""
        if self.kept is None:
            return ext.values, ext.others
        vals, oths = ext.values, ext.others
        return ([vals[i] for i in self.donated], [vals[i] for i in self.kept],
                [oths[i] for i in self.donated_others], [oths[i] for i in self.kept_others])


class JitWrapped:
    """A function compiled by :func:`jit`; bind it to a module with ``__get__``.

    Example:
        >>> import nnxlib as nnx
        >>> f = nnx.jit(lambda x: x * 2)
        >>> int(f(3))
        6
    """

    def __init__(self, fun: Callable, *, in_shardings: Any = None, out_shardings: Any = None,
                 static_argnums: Any = None, static_argnames: Any = None,
                 donate_argnums: Any = None, donate_argnames: Any = None,
                 keep_unused: bool = False, device: Any = None, backend: Any = None,
                 inline: bool = False, abstracted_axes: Any = None,
                 graph: bool | None = None, graph_updates: bool | None = None):
        _reject_abstracted_axes(abstracted_axes)
        check_function(fun, "nnx.jit")
        self.mode = resolve_mode(graph, graph_updates)
        in_shardings = prefix_argument(in_shardings, "in_shardings", "nnx.jit", self.mode)
        out_shardings = prefix_argument(out_shardings, "out_shardings", "nnx.jit", self.mode)
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.in_shardings = in_shardings
        self.out_shardings = out_shardings
        self.static_argnums = _as_tuple(static_argnums)
        self.static_argnames = _as_tuple(static_argnames)
        self.donate_argnums = _as_tuple(donate_argnums)
        self.donate_argnames = _as_tuple(donate_argnames)
        self.keep_unused = keep_unused
        self.inline = inline
        self.device, self.backend = device, backend
        self._signature = _signature_or_none(fun)
        self._entries: dict = {}
        self._last: tuple = (None, None)  # (key, entry) of the previous call

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        statics: tuple = ()
        if self.static_argnums or self.static_argnames:
            args, kwargs, statics = self._pull_statics(args, kwargs)
        ext = _lift.extract((args, kwargs), self.mode, "nnx.jit", _lift.ARGS_KWARGS,
                             refs=True)
        key = (ext.key, statics)
        last_key, entry = self._last
        if key != last_key:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._make_entry(ext, statics, args, kwargs)
                self._entries[key] = entry
            self._last = (key, entry)
        if entry.placed is not None:
            place_inputs(ext.values, ext.plan.template, entry.placed)  # type: ignore
        if entry.kept is None:
            box, values, others = entry.jitted(ext.values, ext.others)
        else:
            box, values, others = entry.jitted(*entry.call_args(ext))
        return _lift.apply_outputs(ext.plan, box.value, values, others)

    def _run_compiled(self, compiled: Any, args: tuple, kwargs: dict, key: Any) -> Any:
        """Call an ahead-of-time compiled stage (:class:`~nnxlib.transforms.aot.Compiled`)
        with ``f``'s arguments, as :meth:`__call__` calls the jitted function."""
        entry, ext, call_key = self._entry_for(args, kwargs)
        if call_key != key:
            raise TypeError(
                "nnx.jit: this compiled program was lowered for arguments of another "
                "structure (other modules, shapes or static arguments) than these.\n"
                "Hint: lower and compile again for these arguments, or call the jitted "
                "function itself, which compiles as needed.")
        out = compiled(*entry.call_args(ext))
        if self.out_shardings is not None:  # the program returns fn's output tree
            out = (out[0], out[1], jax.tree_util.tree_leaves(out[2]))
        box, values, others = out
        return _lift.apply_outputs(ext.plan, box.value, values, others)

    # ------------------------------------------------------------ ahead of time
    def trace(self, *args: Any, **kwargs: Any) -> Any:
        """Trace for these arguments without running: ``jax.jit(...).trace`` of the pure
        function that is actually compiled (it takes and returns flat lists of arrays);
        ``.lower().compile()`` of the result gives a program called with ``f``'s arguments.

        The arguments are not changed. ``.jaxpr`` of the result is the program a call
        runs, with no Python in it.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            >>> noop = nnx.jit(lambda model: None)
            >>> jaxpr = noop.trace(model).jaxpr
            >>> len(jaxpr.eqns), len(jaxpr.out_avals)
            (0, 0)
        """
        entry, ext, key = self._entry_for(args, kwargs)
        return aot.Traced(entry.jitted.trace(*entry.call_args(ext)), self._run_compiled, key)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """Lower for these arguments without running, like ``jax.jit(f).lower``; the
        result compiles (``.compile()``) to a program called with ``f``'s arguments.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            >>> forward = nnx.jit(lambda model, x: model(x))
            >>> "dot_general" in forward.lower(model, jnp.ones((1, 2))).as_text()
            True
        """
        entry, ext, key = self._entry_for(args, kwargs)
        return aot.Lowered(entry.jitted.lower(*entry.call_args(ext)), self._run_compiled, key)

    def _entry_for(self, args: tuple, kwargs: dict) -> tuple:
        statics: tuple = ()
        if self.static_argnums or self.static_argnames:
            args, kwargs, statics = self._pull_statics(args, kwargs)
        ext = _lift.extract((args, kwargs), self.mode, "nnx.jit", _lift.ARGS_KWARGS,
                             refs=True)
        key = (ext.key, statics)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._make_entry(ext, statics, args, kwargs)
        return entry, ext, key

    # ----------------------------------------------------------------- per signature
    def _make_entry(self, ext: _lift.Extracted, statics: tuple, args: tuple,
                    kwargs: dict) -> _Entry:
        if statics:
            for i, value in statics[0]:
                _reject_graph_objects(value, self._arg_name(i))
            for name, value in statics[1]:
                _reject_graph_objects(value, name)
        fun = self.fun
        key = ext.key
        mode = self.mode
        value_shardings, other_shardings = leaf_shardings(
            self.in_shardings, ext, args, kwargs, self._signature)
        in_shardings, out_shardings = self.in_shardings, self.out_shardings
        donated, donated_others = self._donated_positions(ext, args, kwargs, statics)

        def pure(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            call_args, call_kwargs = rebuilt.tree
            call_args, call_kwargs = _insert_statics(call_args, call_kwargs, statics)
            out = fun(*call_args, **call_kwargs)
            if in_shardings is not None:  # the state that comes back, as in flax.nnx
                constrain_changed_inputs(rebuilt.tree, in_shardings, rebuilt.in_values)
            if out_shardings is not None:
                constrain_graph_outputs(out, out_shardings)
            info, send, other_out = _lift.collect(rebuilt, key, out, mode, "nnx.jit",
                                                _lift.ARGS_KWARGS)
            if donated and info.fast:
                # XLA may reuse a donated buffer for any output, so every donated leaf
                # must come back, changed or not (unchanged ones alias at no cost).
                info, send = _send_also(info, send, donated, rebuilt.in_values)
            if out_shardings is not None:  # jax.jit applies them to fn's output tree
                other_out = _output_tree(info, other_out)
            return _lift.StaticBox(info), send, other_out

        jit_kwargs = dict(keep_unused=self.keep_unused, inline=self.inline)
        if self.device is not None:
            jit_kwargs["device"] = self.device
        if self.backend is not None:
            jit_kwargs["backend"] = self.backend
        if out_shardings is not None:
            jit_kwargs["out_shardings"] = (None, None, jax_out_shardings(out_shardings))
        placed = placements(value_shardings, ext.plan.template) if (
            mode.updates and ext.plan is not None) else None
        if not donated and not donated_others:
            if value_shardings is not None or other_shardings is not None:
                jit_kwargs["in_shardings"] = (value_shardings, other_shardings)
            jitted = jax.jit(pure, **jit_kwargs)  # type: ignore[arg-type]
            if out_shardings is not None:
                jitted = _FlatOutputs(jitted)
            return _Entry(jitted, (), None, placed=placed)
        n, n_others = len(ext.values), len(ext.others)
        kept = tuple(i for i in range(n) if i not in set(donated))
        kept_others = tuple(i for i in range(n_others) if i not in set(donated_others))

        def pure_donating(donated_values: list, kept_values: list, donated_other: list,
                          kept_other: list) -> tuple:
            values: list = [None] * n
            others: list = [None] * n_others
            for positions, group, target in ((donated, donated_values, values),
                                             (kept, kept_values, values),
                                             (donated_others, donated_other, others),
                                             (kept_others, kept_other, others)):
                for i, v in zip(positions, group):
                    target[i] = v
            return pure(values, others)

        if value_shardings is not None or other_shardings is not None:
            vs = value_shardings or [None] * n
            os_ = other_shardings or [None] * n_others
            jit_kwargs["in_shardings"] = (
                [vs[i] for i in donated], [vs[i] for i in kept],
                [os_[i] for i in donated_others], [os_[i] for i in kept_others])
        jitted = jax.jit(pure_donating, donate_argnums=(0, 2), **jit_kwargs)  # type: ignore
        if out_shardings is not None:
            jitted = _FlatOutputs(jitted)
        return _Entry(jitted, tuple(donated), kept, tuple(donated_others), kept_others,
                      placed)

    def _pull_statics(self, args: tuple, kwargs: dict) -> tuple:
        n = len(args)
        nums = tuple(i % n if i < 0 else i for i in self.static_argnums if -n <= i < n)
        names = set(self.static_argnames)
        if self._signature is not None:  # static_argnames may name positional args
            params = list(self._signature.parameters)
            nums = nums + tuple(i for i, p in enumerate(params[:n]) if p in names)
        statics = tuple((i, _hashable_static(args[i], self._arg_name(i)))
                        for i in sorted(set(nums)))
        # Graph objects among them are rejected in _make_entry: once per signature.
        static_kw = tuple(sorted((k, _hashable_static(v, k)) for k, v in kwargs.items()
                                 if k in names))
        static_nums = {i for i, _ in statics}
        args = tuple(a for i, a in enumerate(args) if i not in static_nums)
        kwargs = {k: v for k, v in kwargs.items() if k not in names}
        return args, kwargs, (statics, static_kw)

    def _arg_name(self, position: int) -> str:
        """The parameter name of positional argument ``position`` (for messages)."""
        if self._signature is not None:
            params = list(self._signature.parameters.values())
            if position < len(params) and params[position].kind in (
                    inspect.Parameter.POSITIONAL_ONLY,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD):
                return params[position].name
        return f"args[{position}]"

    def _donated_positions(self, ext: _lift.Extracted, args: tuple, kwargs: dict,
                           statics: tuple) -> tuple[list, list]:
        """Donated ``(graph leaf positions, other leaf positions)``.

        ``args`` no longer hold the static arguments; ``donate_argnums`` count them.
        """
        if not (self.donate_argnums or self.donate_argnames):
            return [], []
        static_nums = sorted(i for i, _ in statics[0]) if statics else []
        n_all = len(args) + len(static_nums)
        wanted = {i % n_all if i < 0 else i for i in self.donate_argnums if -n_all <= i}
        if self._signature is not None:
            params = list(self._signature.parameters)
            wanted |= {params.index(n) for n in self.donate_argnames if n in params
                       and params.index(n) < n_all}
        donated_args: set = {i - sum(s < i for s in static_nums) for i in wanted
                             if i not in static_nums}
        donated_args |= set(self.donate_argnames)  # passed by keyword
        owners = argument_of_leaves(args, kwargs)
        graph: list = []
        if ext.plan is not None:
            roots = [owners[p] for p in ext.node_positions]
            graph = [i for i, path in enumerate(ext.plan.graphdef.paths)
                     if roots[path[0]] in donated_args]
        chosen = set(ext.node_positions)
        other_owners = [o for i, o in enumerate(owners) if i not in chosen]
        others = [i for i, o in enumerate(other_owners) if o in donated_args]
        return graph, others


def _output_tree(info: _lift.OutInfo, others: list) -> Any:
    """``fn``'s output with its graph objects replaced by None (their arrays travel with
    the changed values): the tree that ``out_shardings``, a prefix of it, applies to."""
    leaves = list(others)
    for position in info.out_positions:
        leaves.insert(position, None)
    return jax.tree_util.tree_unflatten(info.out_treedef, leaves)


class _FlatOutputs:
    """Calls a ``jax.jit`` function returning ``_output_tree`` and flattens it back."""

    __slots__ = ("jitted",)

    def __init__(self, jitted: Any):
        self.jitted = jitted

    def __call__(self, *args: Any) -> tuple:
        box, values, tree = self.jitted(*args)
        return box, values, jax.tree_util.tree_leaves(tree)

    def trace(self, *args: Any) -> Any:
        return self.jitted.trace(*args)

    def lower(self, *args: Any) -> Any:
        return self.jitted.lower(*args)


def _send_also(info: _lift.OutInfo, send: list, positions: list, in_values: list
               ) -> tuple[_lift.OutInfo, list]:
    """Add the leaves at ``positions`` to the changed ones sent out (unchanged ones are
    sent as their input values)."""
    n = len(info.changed)
    by_position = dict(zip(info.changed, send[:n]))
    for i in positions:
        by_position.setdefault(i, in_values[i])
    changed = tuple(sorted(by_position))
    return info._replace(changed=changed), [by_position[i] for i in changed] + send[n:]


def _insert_statics(args: tuple, kwargs: dict, statics: tuple) -> tuple:
    if not statics:
        return args, kwargs
    positional, named = statics
    args = list(args)
    for i, value in positional:
        args.insert(i, value)
    kwargs = {**kwargs, **dict(named)}
    return tuple(args), kwargs


def _hashable_static(value: Any, where: str) -> Any:
    try:
        hash(value)
    except TypeError:
        _reject_graph_objects(value, where)  # the clearer message, when it applies
        raise ValueError(
            f"jit: static argument {where!r} must be hashable, got a "
            f"{type(value).__name__}. Hint: pass a tuple instead of a list, or make it a "
            "regular (traced) argument."
        ) from None
    return value


def _reject_graph_objects(value: Any, where: str) -> None:
    """Raise if a static argument holds a module, variable or container: its arrays
    would be frozen into the compiled function as constants, and later changes to them
    silently ignored (flax.nnx raises for this too)."""
    entries, _ = jax.tree_util.tree_flatten_with_path(value, is_leaf=is_node_or_variable)
    for key_path, leaf in entries:
        if is_node_or_variable(leaf):
            path = tuple(_key_of(k) for k in key_path)
            raise InvalidArgumentError(
                f"jit: the static argument {format_path(path, root=where)} is a "
                f"{type(leaf).__name__}. Expected static arguments to be hashable "
                "constants (ints, strings, tuples of them); a module, variable or nnx "
                "container there would be compiled in with the values it has now, and "
                "later changes to its state would be ignored. Hint: pass it as a regular "
                f"argument (drop {where!r} from static_argnums/static_argnames); nnx.jit "
                "handles its state, and its static attributes are part of the cache key."
            )


def _key_of(entry: Any) -> Any:
    """The plain key of one jax key-path entry (SequenceKey, DictKey, GetAttrKey...)."""
    for attr in ("idx", "key", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _reject_abstracted_axes(abstracted_axes: Any) -> None:
    if abstracted_axes is not None:
        raise NotSupportedError(
            f"jit: abstracted_axes={abstracted_axes!r} is not supported: jax.jit (JAX "
            f"{jax.__version__}) no longer has this experimental option (shape-polymorphic "
            "tracing), so it cannot be passed on, and dropping it silently would compile "
            "one program per input shape anyway. Hint: remove abstracted_axes; jit "
            "retraces for each new shape (pad inputs to a few fixed sizes to bound the "
            "number of compilations), or use jax.export with symbolic shapes for "
            "shape-polymorphic programs."
        )


def _as_tuple(x: Any) -> tuple:
    if x is None:
        return ()
    if isinstance(x, (int, str)):
        return (x,)
    return tuple(x)


def _signature_or_none(fun: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError):
        return None


def jit(fun: Callable | None = None, *, in_shardings: Any = None, out_shardings: Any = None,
        static_argnums: Any = None, static_argnames: Any = None, donate_argnums: Any = None,
        donate_argnames: Any = None, keep_unused: bool = False, device: Any = None,
        backend: Any = None, inline: bool = False, abstracted_axes: Any = None,
        graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """Compile ``fun``; modules and variables among its arguments are handled as state.

    Mutations made inside (new variable values, BatchNorm statistics, RNG counts, even
    new attributes) are visible in the caller's objects afterwards, as in eager mode.
    Works as ``@nnx.jit``, ``@nnx.jit(static_argnames=...)`` and on methods.

    ``in_shardings``: one entry per positional argument; for a module argument the entry
    may be a sharding for all its arrays, a :class:`StateSharding` mapping filters to
    shardings, or a State of shardings. ``out_shardings`` constrains the returned
    values (a pytree prefix of the output).

    ``graph=False`` (tree mode) treats modules as pytrees: shared references raise, and
    only variable values flow back (as with ``graph_updates=False``); see
    :mod:`nnxlib.graph.mode`.

    Static arguments (``static_argnums``/``static_argnames``) must be hashable constants:
    one holding a module, variable or container raises ``InvalidArgumentError`` (its
    state would be frozen into the compiled function). ``abstracted_axes`` raises
    ``NotSupportedError``: ``jax.jit`` no longer has that option.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Counter(nnx.Module):
        ...     def __init__(self):
        ...         self.n = nnx.Variable(jnp.array(0))
        ...     @nnx.jit
        ...     def step(self, by):
        ...         self.n[...] += by
        ...         return self.n[...]
        >>> c = Counter()
        >>> _ = c.step(2); int(c.step(3))
        5
    """
    _reject_abstracted_axes(abstracted_axes)  # at decoration time, not at the first call
    mode = resolve_mode(graph, graph_updates)  # the mode in force here, as in flax
    options = dict(graph=mode.graph, graph_updates=mode.updates,in_shardings=in_shardings, out_shardings=out_shardings,
                   static_argnums=static_argnums, static_argnames=static_argnames,
                   donate_argnums=donate_argnums, donate_argnames=donate_argnames,
                   keep_unused=keep_unused, device=device, backend=backend, inline=inline,
                   abstracted_axes=abstracted_axes)
    if fun is None:
        return lambda f: JitWrapped(f, **options)
    return JitWrapped(fun, **options)
