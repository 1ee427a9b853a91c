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

from nnxlib.transforms import _lift
from nnxlib.transforms._sharding import (
    StateSharding, argument_of_leaves, constrain_outputs, leaf_shardings,
)

__all__ = ["jit", "JitWrapped", "StateSharding"]


class _Entry:
    """One traced signature: the ``jax.jit`` function and how to call it."""

    __slots__ = ("jitted", "donated", "kept")

    def __init__(self, jitted: Callable, donated: tuple, kept: tuple):
        self.jitted = jitted
        self.donated = donated  # leaf positions of graph values passed as donated
        self.kept = kept  # remaining leaf positions (None when nothing is donated)


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
                 inline: bool = False, abstracted_axes: Any = None):
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
        ext = _lift.extract((args, kwargs))
        key = (ext.key, statics)
        last_key, entry = self._last
        if key != last_key:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._make_entry(ext, statics, args, kwargs)
                self._entries[key] = entry
            self._last = (key, entry)
        if entry.kept is None:
            box, values, others = entry.jitted(ext.values, ext.others)
        else:
            vals = ext.values
            box, values, others = entry.jitted(
                [vals[i] for i in entry.donated], [vals[i] for i in entry.kept], ext.others)
        return _lift.apply_outputs(ext.plan, box.value, values, others)

    # ----------------------------------------------------------------- per signature
    def _make_entry(self, ext: _lift.Extracted, statics: tuple, args: tuple,
                    kwargs: dict) -> _Entry:
        fun = self.fun
        key = ext.key
        static_positions = self._static_positions(args, kwargs, statics)
        value_shardings, other_shardings = leaf_shardings(
            self.in_shardings, ext, args, kwargs, self._signature)
        out_shardings = self.out_shardings

        def pure(values: list, others: list) -> tuple:
            rebuilt = _lift.rebuild(key, values, others)
            call_args, call_kwargs = rebuilt.tree
            call_args, call_kwargs = _insert_statics(call_args, call_kwargs, statics,
                                                     static_positions)
            out = fun(*call_args, **call_kwargs)
            if out_shardings is not None:
                out = constrain_outputs(out, out_shardings)
            info, send, other_out = _lift.collect(rebuilt, key, out)
            if value_shardings is not None and info.fast:
                send = _constrain_changed(send, info.changed, value_shardings)
            return _lift.StaticBox(info), send, other_out

        donated = self._donated_positions(ext, args, kwargs)
        jit_kwargs = dict(keep_unused=self.keep_unused, inline=self.inline)
        if self.device is not None:
            jit_kwargs["device"] = self.device
        if self.backend is not None:
            jit_kwargs["backend"] = self.backend
        if not donated:
            if value_shardings is not None or other_shardings is not None:
                jit_kwargs["in_shardings"] = (value_shardings, other_shardings)
            return _Entry(jax.jit(pure, **jit_kwargs), (), None)  # type: ignore[arg-type]
        donated_set = set(donated)
        kept = tuple(i for i in range(len(ext.values)) if i not in donated_set)
        n = len(ext.values)

        def pure_donating(donated_values: list, kept_values: list, others: list) -> tuple:
            values: list = [None] * n
            for i, v in zip(donated, donated_values):
                values[i] = v
            for i, v in zip(kept, kept_values):
                values[i] = v
            return pure(values, others)

        if value_shardings is not None or other_shardings is not None:
            vs = value_shardings or [None] * n
            jit_kwargs["in_shardings"] = ([vs[i] for i in donated], [vs[i] for i in kept],
                                          other_shardings)
        jitted = jax.jit(pure_donating, donate_argnums=(0,), **jit_kwargs)  # type: ignore
        return _Entry(jitted, tuple(donated), kept)

    def _pull_statics(self, args: tuple, kwargs: dict) -> tuple:
        n = len(args)
        nums = tuple(i % n if i < 0 else i for i in self.static_argnums if -n <= i < n)
        names = set(self.static_argnames)
        if self._signature is not None:  # static_argnames may name positional args
            params = list(self._signature.parameters)
            nums = nums + tuple(i for i, p in enumerate(params[:n]) if p in names)
        statics = tuple((i, _hashable_static(args[i], i)) for i in sorted(set(nums)))
        static_kw = tuple(sorted((k, _hashable_static(v, k)) for k, v in kwargs.items()
                                 if k in names))
        static_nums = {i for i, _ in statics}
        args = tuple(a for i, a in enumerate(args) if i not in static_nums)
        kwargs = {k: v for k, v in kwargs.items() if k not in names}
        return args, kwargs, (statics, static_kw)

    def _static_positions(self, args: tuple, kwargs: dict, statics: tuple) -> tuple:
        return statics

    def _donated_positions(self, ext: _lift.Extracted, args: tuple, kwargs: dict) -> list:
        if not (self.donate_argnums or self.donate_argnames) or ext.plan is None:
            return []
        donated_args = set(self.donate_argnums)
        if self._signature is not None:
            params = list(self._signature.parameters)
            donated_args |= {params.index(n) for n in self.donate_argnames if n in params
                             and params.index(n) < len(args)}
        owners = argument_of_leaves(args, kwargs)
        roots = [owners[p] for p in ext.node_positions]
        return [i for i, path in enumerate(ext.plan.graphdef.paths)
                if roots[path[0]] in donated_args
                or roots[path[0]] in self.donate_argnames]


def _constrain_changed(send: list, changed: tuple, shardings: list) -> list:
    out = list(send)
    for j, i in enumerate(changed):
        if shardings[i] is not None:
            out[j] = jax.lax.with_sharding_constraint(out[j], shardings[i])
    return out


def _insert_statics(args: tuple, kwargs: dict, statics: tuple, _: Any) -> tuple:
    if not statics:
        return args, kwargs
    positional, named = statics
    args = list(args)
    for i, value in positional:
        args.insert(i, _unwrap_static(value))
    kwargs = {**kwargs, **{k: _unwrap_static(v) for k, v in named}}
    return tuple(args), kwargs


class _Unhashed:
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashed) and other.value is self.value


def _hashable_static(value: Any, where: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise ValueError(
            f"jit: static argument {where!r} must be hashable, got a "
            f"{type(value).__name__}. Hint: pass a tuple instead of a list, or make it a "
            "regular (traced) argument."
        ) from None
    return value


def _unwrap_static(value: Any) -> Any:
    return value.value if isinstance(value, _Unhashed) else value


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
        backend: Any = None, inline: bool = False, abstracted_axes: Any = None) -> Any:
    """Compile ``fun``; modules and variables among its arguments are handled as state.

    Mutations made inside (new variable values, BatchNorm statistics, RNG counts, even
    new attributes) are visible in the caller's objects afterwards, as in eager mode.
    Works as ``@nnx.jit``, ``@nnx.jit(static_argnames=...)`` and on methods.

    ``in_shardings``: one entry per positional argument; for a module argument the entry
    may be a sharding for all its arrays, a :class:`StateSharding` mapping filters to
    shardings, or a State of shardings. ``out_shardings`` constrains the returned
    values (a pytree prefix of the output).

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
    options = dict(in_shardings=in_shardings, out_shardings=out_shardings,
                   static_argnums=static_argnums, static_argnames=static_argnames,
                   donate_argnums=donate_argnums, donate_argnames=donate_argnames,
                   keep_unused=keep_unused, device=device, backend=backend, inline=inline,
                   abstracted_axes=abstracted_axes)
    if fun is None:
        return lambda f: JitWrapped(f, **options)
    return JitWrapped(fun, **options)
