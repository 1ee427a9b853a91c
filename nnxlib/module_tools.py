"""Module helpers with flax.nnx 0.12 names: ``capture`` (collect sown values),
``with_attributes`` and ``view_info`` (views), ``tuple_init``/``tuple_reduce``.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> class Probe(nnx.Module):
    ...     def __call__(self, x):
    ...         self.sow(nnx.Intermediate, "seen", x)
    ...         return 2 * x
    >>> out, sown = nnx.capture(Probe(), nnx.Intermediate)(jnp.ones(2))
    >>> out.tolist(), sown["seen"].value[0].tolist()
    ([2.0, 2.0], [1.0, 1.0])
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from nnxlib import graph as graphlib
from nnxlib.filters import to_predicate
from nnxlib.module import Module, Object, iter_modules, view
from nnxlib.state import State
from nnxlib.variables import Variable

__all__ = ["capture", "with_attributes", "view_info", "tuple_init", "tuple_reduce"]


def tuple_init() -> tuple:
    """The default ``init_fn`` of ``Module.sow``: an empty tuple.

    Example:
        >>> from nnxlib.module import tuple_init
        >>> tuple_init()
        ()
    """
    return ()


def tuple_reduce(xs: tuple, x: Any) -> tuple:
    """The default ``reduce_fn`` of ``Module.sow``: append ``x`` to the tuple ``xs``.

    Example:
        >>> from nnxlib.module import tuple_reduce
        >>> tuple_reduce((1,), 2)
        (1, 2)
    """
    return (*xs, x)


def _module_of(fn: Any, args: tuple) -> tuple[Any, Callable, tuple]:
    """``(module, callable, args)`` for the three forms ``capture`` accepts."""
    if isinstance(fn, Object):
        return fn, fn, args
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, Object):
        return owner, fn, args
    if not args or not isinstance(args[0], Object):
        raise TypeError(
            "capture: cannot find the module to collect from. Expected a module, a bound "
            "method of a module, or a function whose first argument is a module; got "
            f"{type(fn).__name__} called with {type(args[0]).__name__ if args else 'no'} "
            "first argument."
        )
    return args[0], fn, args


def _insert(module: Any, init: Any) -> None:
    """Create the variables of ``init`` (a State) at their paths in ``module``."""
    flat = (init if isinstance(init, State) else State(init)).flat_state()
    for path, value in flat:
        owner = module
        for key in path[:-1]:
            owner = owner[key] if isinstance(key, int) else getattr(owner, key)
        name = path[-1]
        current = getattr(owner, name, None) if isinstance(name, str) else None
        if isinstance(current, Variable):
            current.value = value.get_value() if isinstance(value, Variable) else value
        else:
            setattr(owner, name, value if isinstance(value, Variable) else
                    Variable(value))


def capture(fn: Any, *var_types: type[Variable], init: Any = None,
            method_outputs: type[Variable] | None = None) -> Callable:
    """Wrap ``fn`` to also return the values it sows, as one ``State`` per type.

    ``fn`` is a module (its ``__call__`` runs), a bound method of a module, or a
    function whose first argument is the module. The wrapped call returns
    ``(result, *states)``: the variables of each type in ``var_types`` found in the
    module after the call, removed from it (as ``nnx.pop`` does). ``init`` is a state
    of values placed in the module before the call, e.g. perturbations to take
    gradients through. ``capture(*var_types)`` without a function is a decorator.
    ``method_outputs`` (flax's automatic sowing of every method's output) is not
    supported.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Model(nnx.Module):
        ...     def __call__(self, x):
        ...         return 3 * self.perturb("h", x)
        >>> model = Model()
        >>> _, perturbations = nnx.capture(model, nnx.Perturbation)(jnp.ones(2))
        >>> perturbations["h"].value.tolist()
        [0.0, 0.0]
        >>> shift = {"h": nnx.Perturbation(jnp.ones(2))}
        >>> nnx.capture(model, init=shift)(jnp.ones(2))[0].tolist()   # 3 * (x + 1)
        [6.0, 6.0]
    """
    if method_outputs is not None:
        raise NotImplementedError(
            "capture(method_outputs=...) is not supported by nnxlib. Hint: call "
            "self.sow(...) on the outputs you want inside the methods."
        )
    if isinstance(fn, type) and issubclass(fn, Variable):
        types = (fn, *var_types)
        return lambda f: capture(f, *types, init=init)

    @functools.wraps(fn if callable(fn) and not isinstance(fn, Object) else fn.__call__)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        module, call, call_args = _module_of(fn, args)
        if init is not None:
            _insert(module, init)
        result = call(*call_args, **kwargs)
        if not var_types:
            return (result,)
        popped = graphlib.pop(module, *var_types)
        return (result, *(popped if len(var_types) > 1 else (popped,)))

    return wrapper


def with_attributes(node: Any, /, *, only: Any = ..., raise_if_not_found: bool = True,
                    graph: bool | None = None, **attributes: Any) -> Any:
    """A copy of ``node`` with ``attributes`` set on its modules; ``node`` is unchanged.

    The copy holds the same arrays (no data is copied). This is :func:`nnxlib.view`
    under flax.nnx's other name.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.5), nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> frozen = nnx.with_attributes(model, deterministic=True)
        >>> frozen.layers[0].deterministic, model.layers[0].deterministic
        (True, False)
        >>> frozen.layers[1].kernel[...] is model.layers[1].kernel[...]
        True
    """
    return view(node, only=only, raise_if_not_found=raise_if_not_found, graph=graph,
                **attributes)


MODE_FLAGS = ("deterministic", "use_running_average", "decode")


def view_info(node: Any, /, *, only: Any = ..., graph: bool | None = None) -> str:
    """What :func:`nnxlib.view` can switch in ``node``: per module type, the mode flags
    it has (``deterministic``, ``use_running_average``, ``decode``) and their values.

    nnxlib modules have no ``set_view`` methods (``view`` sets attributes), so this
    lists attributes where flax.nnx lists ``set_view`` signatures.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.5), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> print(nnx.view_info(model))
        BatchNorm:
          use_running_average: bool = False
        Dropout:
          deterministic: bool = False
    """
    predicate = to_predicate(only)
    flags: dict[str, dict[str, Any]] = {}
    for path, module in iter_modules(node, graph=graph):
        if not isinstance(module, Module) or not predicate(path, module):
            continue
        entry = flags.setdefault(type(module).__name__, {})
        for name, value in vars(module).items():
            if name in MODE_FLAGS:
                entry.setdefault(name, value)
    lines = []
    for type_name in sorted(flags):
        if not flags[type_name]:
            continue
        lines.append(f"{type_name}:")
        for name, value in flags[type_name].items():
            kind = "bool" if isinstance(value, bool) else "bool | None"
            lines.append(f"  {name}: {kind} = {value}")
    return "\n".join(lines)
