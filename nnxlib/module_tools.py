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
import inspect
from typing import Any, Callable

from nnxlib import graph as graphlib
from nnxlib.filters import to_predicate
from nnxlib.module import CAPTURES, Module, Object, _set_attributes, iter_modules
from nnxlib.state import State, from_flat_state, split_state
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


def _init_by_module(init: Any) -> dict[tuple, dict[str, Variable]]:
    """``{module path: {name: variable}}`` from an ``init`` state of variables."""
    found: dict[tuple, dict[str, Variable]] = {}
    if init is None:
        return found
    flat = (init if isinstance(init, State) else State(init)).flat_state()
    for path, value in flat:
        if not isinstance(value, Variable):
            raise TypeError(
                f"capture: init entry {path!r} is a {type(value).__name__}, expected a "
                "Variable (e.g. nnx.Perturbation(value)). Hint: pass the state returned "
                "by an earlier capture."
            )
        found.setdefault(tuple(path[:-1]), {})[path[-1]] = value
    return found


# Method-output capturing wraps methods on the classes (as flax.nnx does); nested and
# repeated captures share one wrapping per class, counted here.
_WRAPPED: dict[type, list] = {}  # class -> [count, {name: original}]
_OUTPUT_TYPES: list[type] = []  # the method_outputs type of each active capture


def _wrap_methods(classes: set) -> None:
    for cls in classes:
        entry = _WRAPPED.get(cls)
        if entry is not None:
            entry[0] += 1
            continue
        originals = {}
        for name, method in list(vars(cls).items()):
            if (not name.startswith("_") or name == "__call__") and _is_method(method):
                originals[name] = method
                setattr(cls, name, _recording(name, method))
        _WRAPPED[cls] = [1, originals]


def _is_method(value: Any) -> bool:
    return callable(value) and not isinstance(value, (staticmethod, classmethod, type))


def _unwrap_methods(classes: set) -> None:
    for cls in classes:
        entry = _WRAPPED[cls]
        entry[0] -= 1
        if entry[0] == 0:
            for name, method in entry[1].items():
                setattr(cls, name, method)
            del _WRAPPED[cls]


def _recording(name: str, method: Callable) -> Callable:
    @functools.wraps(method)
    def record(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        if _OUTPUT_TYPES and CAPTURES in vars(self):
            self.sow(_OUTPUT_TYPES[-1], name, result)
        return result

    return record


def capture(fn: Any, *var_types: type[Variable], init: Any = None,
            method_outputs: type[Variable] | None = None) -> Callable:
    """Wrap ``fn`` to also return the values it sows, as one ``State`` per type.

    ``fn`` is a module (its ``__call__`` runs), a bound method of a module, or a
    function whose first argument is the module. While it runs, every module of the
    graph records ``sow``/``perturb`` values in a capture (its ``__captures__``
    attribute: state, so it travels through transforms); the call returns
    ``(result, *states)``: the values recorded with each type of ``var_types`` (exactly
    that type; values of other types are dropped) at their module's path, each value
    in the first state whose type it is an instance of (as flax.nnx splits them). Without ``var_types`` it returns ``result``.
    ``init`` is a state of variables the capture starts from, e.g. perturbations to
    take gradients through. ``method_outputs=nnx.Intermediate`` also records the
    output of every method a module's class defines (public ones and ``__call__``)
    under the method's name. ``capture(*var_types)`` without a function is a
    decorator.

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
        >>> nnx.capture(model, init=shift)(jnp.ones(2)).tolist()   # 3 * (x + 1)
        [6.0, 6.0]
        >>> _, outputs = nnx.capture(model, nnx.Intermediate,
        ...                          method_outputs=nnx.Intermediate)(jnp.ones(2))
        >>> outputs["__call__"].value[0].tolist()
        [3.0, 3.0]
    """
    if isinstance(fn, type) and issubclass(fn, Variable):
        types = (fn, *var_types)
        return lambda f: capture(f, *types, init=init, method_outputs=method_outputs)

    @functools.wraps(fn if callable(fn) and not isinstance(fn, Object) else fn.__call__)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        module, call, call_args = _module_of(fn, args)
        initial = _init_by_module(init)
        modules = list(iter_modules(module, graph=True))
        previous = [(m, vars(m).get(CAPTURES, _NONE)) for _, m in modules]
        for path, m in modules:
            stores: dict = {t: {} for t in var_types}
            for name, var in initial.get(path, {}).items():
                stores.setdefault(type(var), {})[name] = var.get_value()
            setattr(m, CAPTURES, tuple(t(values) for t, values in stores.items()))
        classes = {type(m) for _, m in modules} if method_outputs is not None else set()
        if classes:
            _wrap_methods(classes)
            _OUTPUT_TYPES.append(method_outputs)
        try:
            result = call(*call_args, **kwargs)
        finally:
            if classes:
                _OUTPUT_TYPES.pop()
                _unwrap_methods(classes)
            captured = _take_captures(module, var_types)
            for m, old in previous:  # a capture around this one gets its own back
                if old is not _NONE:
                    setattr(m, CAPTURES, old)
        if not var_types:
            return result
        parts = split_state(captured, *var_types, ...)[:len(var_types)]
        return (result, *parts)

    return wrapper


_NONE = object()


def _take_captures(module: Any, var_types: tuple) -> State:
    """Remove every module's capture and return its values of ``var_types``."""
    flat = []
    for path, m in list(iter_modules(module, graph=True)):
        captures = vars(m).get(CAPTURES)
        if captures is None:
            continue
        delattr(m, CAPTURES)
        for store in captures:
            if type(store) in var_types:
                flat += [((*path, name), type(store)(value))
                         for name, value in store.get_value().items()]
    return from_flat_state(flat)


def with_attributes(node: Any, /, *, only: Any = ..., raise_if_not_found: bool = True,
                    graph: bool | None = None, **attributes: Any) -> Any:
    """A copy of ``node`` with ``attributes`` set on its modules; ``node`` is unchanged.

    The copy has its own modules holding the same ``Variable`` objects as ``node``.
    Unlike :func:`nnxlib.view` it sets attributes only (no ``set_view`` calls).

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.5), nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> frozen = nnx.with_attributes(model, deterministic=True)
        >>> frozen.layers[0].deterministic, model.layers[0].deterministic
        (True, False)
        >>> frozen.layers[1].kernel is model.layers[1].kernel
        True
    """
    copy = graphlib.clone(node, variables=False, graph=graph)
    _set_attributes(copy, () if only is ... else (only,), raise_if_not_found, attributes,
                    "with_attributes")
    return copy


MODE_FLAGS = ("deterministic", "use_running_average", "decode")


def view_info(node: Any, /, *, only: Any = ..., graph: bool | None = None) -> str:
    """What :func:`nnxlib.view` can switch in ``node``, per module class (by
    ``__qualname__``): for a class with a ``set_view`` method, its keyword parameters
    (``name: annotation = default``) each followed by its description from the
    method's ``Args:`` docstring section; for other classes, the mode flags it has
    (``deterministic``, ``use_running_average``, ``decode``) and their values.

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
    sections: dict[str, list[str]] = {}
    for path, module in iter_modules(node, graph=graph):
        if not isinstance(module, Module) or not predicate(path, module):
            continue
        name = type(module).__qualname__
        if name in sections:
            continue
        set_view = getattr(type(module), "set_view", None)
        lines = (_set_view_lines(set_view) if callable(set_view)
                 else _flag_lines(module))
        if lines:
            sections[name] = lines
    return "\n".join(line for name in sorted(sections)
                     for line in (f"{name}:", *sections[name]))


def _flag_lines(module: Any) -> list[str]:
    lines = []
    for name, value in vars(module).items():
        if name in MODE_FLAGS:
            kind = "bool" if isinstance(value, bool) else "bool | None"
            lines.append(f"  {name}: {kind} = {value}")
    return lines


def _set_view_lines(set_view: Callable) -> list[str]:
    """``name: annotation = default`` per keyword of ``set_view``, each with the
    description its docstring's ``Args:`` section gives."""
    described = _docstring_args(inspect.getdoc(set_view) or "")
    lines = []
    for name, param in inspect.signature(set_view).parameters.items():
        if name == "self" or param.kind in (inspect.Parameter.VAR_POSITIONAL,
                                            inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = ("" if param.annotation is inspect.Parameter.empty
                      else f": {_annotation_text(param.annotation)}")
        default = ("" if param.default is inspect.Parameter.empty
                   else f" = {param.default}")
        lines.append(f"  {name}{annotation}{default}")
        lines.extend(f"    {text}" for text in described.get(name, ()))
    return lines


def _annotation_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _docstring_args(doc: str) -> dict[str, list[str]]:
    """``{name: description lines}`` from a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return {}
    described: dict[str, list[str]] = {}
    current: list[str] | None = None
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break  # the next section (Returns:, ...)
        if width == indent and ":" in line:
            name, _, text = line.strip().partition(":")
            current = described.setdefault(name.strip().lstrip("*"), [])
            if text.strip():
                current.append(text.strip())
        elif current is not None:
            current.append(line.strip())
    return described
