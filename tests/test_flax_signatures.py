"""Every public callable that nnxlib shares with flax.nnx accepts the calls flax's does.

For each flax parameter, nnxlib must accept it the same way: at the same position when
flax takes it positionally, by name when flax takes it by keyword (nnxlib may accept
more, e.g. positional-or-keyword where flax is keyword-only). Deliberate differences
are listed in ``NOT_SUPPORTED`` with the reason, so that a new gap fails here.

The same holds for the methods of every shared class (``Variable.set_value``,
``List.append``, filters' ``__call__``, layers' ``__call__``, classmethods and
staticmethods; properties are not compared), with ``METHODS_NOT_SUPPORTED`` for
deliberate differences.
"""

import inspect

import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib import _compat_check as check

P = inspect.Parameter
NOT_SUPPORTED = {
    # Internal representations differ (nnxlib's are documented in docs/graph.md).
    "GraphDef": "different internal structure",
    "FlatState": "built from pairs, not (items, sort)",
    "State": "flax's extra parameter is private (_copy)",
}


# Internal index maps and constructor arguments of flax's graph machinery: users get
# these objects from nnx.split_context()/nnx.unpack()/nnx.to_tree(), never build them.
GRAPH_MACHINERY = "flax's graph-machinery internals (index maps, constructor fields)"
NOT_SUPPORTED.update({
    "flatten": GRAPH_MACHINERY,
    "unflatten": GRAPH_MACHINERY,
    "compat.flatten": GRAPH_MACHINERY,
    "GraphState": GRAPH_MACHINERY,
    "NodeStates": GRAPH_MACHINERY,
    "SplitContext": GRAPH_MACHINERY,
    "MergeContext": GRAPH_MACHINERY,
    "UpdateContext": GRAPH_MACHINERY,
    # nnx.graph.flatten/unflatten are nnxlib's internal walkers (the transforms use
    # them); flax's functions are nnx.flatten and nnx.graphlib.flatten.
    "graph.flatten": "nnxlib's internal walker under this path",
    "graph.unflatten": "nnxlib's internal walker under this path",
    "graphlib.register_graph_node_type": "nnxlib's node protocol is a NodeImpl record",
    "transforms.compilation.JitWrapped": "constructed by nnx.jit, not by users",
    "transforms.compilation.Stage": "constructed by nnx.jit's trace/lower, not by users",
    "transforms.compilation.Traced": "constructed by nnx.jit's trace/lower, not by users",
    "transforms.compilation.Lowered": "constructed by nnx.jit's trace/lower, not by users",
    "transforms.compilation.Compiled": "constructed by nnx.jit's trace/lower, not by users",
    "extract.TreeState": "constructed by nnx.prefix (from a State of entries), not by users",
})
# The same flax objects reached through submodule paths (nnx.graphlib.merge is
# nnx.merge) share the top-level entry's reason.
_EXCLUDED_OBJECTS = {id(getattr(flax_nnx, n)) for n in NOT_SUPPORTED if hasattr(flax_nnx, n)}


def shared_callables():
    """Access paths (``"rnglib.with_rngs"``) of every callable nnxlib shares with
    flax.nnx, top level and in every submodule."""
    seen = set()
    for entry in check.entries(flax_nnx):
        if entry.access in seen:
            continue
        seen.add(entry.access)
        key = entry.key
        if (key in NOT_SUPPORTED or entry.access in NOT_SUPPORTED
                or id(entry.value) in _EXCLUDED_OBJECTS):
            continue
        ours, theirs = check.resolve(nnx, entry.access), entry.value
        if ours is None or not (callable(ours) and callable(theirs)):
            continue
        if _has_signature(ours) and _has_signature(theirs):
            yield entry.access


def _has_signature(obj) -> bool:
    try:
        signature_of(obj)
    except (TypeError, ValueError):
        return False
    return True


def _flax_object(access: str):
    value = flax_nnx
    for part in access.split("."):
        value = getattr(value, part)
    return value


def signature_of(obj) -> inspect.Signature:
    """A class by its ``__init__`` (flax's module metaclass hides it behind
    ``(*args, **kwargs)``), anything else as it is."""
    if inspect.isclass(obj):
        sig = inspect.signature(obj.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])
    return inspect.signature(obj)


def accepts(ours: inspect.Signature, theirs: inspect.Signature) -> list[str]:
    problems = []
    our_params = list(ours.parameters.values())
    positional = [p for p in our_params if p.kind in (P.POSITIONAL_ONLY,
                                                      P.POSITIONAL_OR_KEYWORD)]
    has_var_pos = any(p.kind is P.VAR_POSITIONAL for p in our_params)
    has_var_kw = any(p.kind is P.VAR_KEYWORD for p in our_params)
    flax_positional = [p for p in theirs.parameters.values()
                       if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    for index, param in enumerate(flax_positional):
        if index >= len(positional) and not has_var_pos:
            problems.append(f"{param.name}: flax takes it at position {index}")
        elif (param.kind is P.POSITIONAL_OR_KEYWORD and index < len(positional)
              and positional[index].name != param.name):
            problems.append(f"position {index} is {positional[index].name!r}, flax's "
                            f"is {param.name!r}")
    for param in theirs.parameters.values():
        if param.kind in (P.KEYWORD_ONLY, P.POSITIONAL_OR_KEYWORD):
            mine = ours.parameters.get(param.name)
            if mine is None and not has_var_kw:
                problems.append(f"{param.name}: flax accepts it by keyword")
            elif mine is not None and mine.kind is P.POSITIONAL_ONLY and not has_var_kw:
                problems.append(f"{param.name}: positional-only here")
        if param.kind is P.VAR_POSITIONAL and not has_var_pos:
            problems.append(f"*{param.name}: flax accepts extra positional arguments")
        if param.kind is P.VAR_KEYWORD and not has_var_kw:
            problems.append(f"**{param.name}: flax accepts extra keyword arguments")
    return problems


@pytest.mark.parametrize("name", list(shared_callables()))
def test_accepts_the_calls_flax_accepts(name):
    problems = accepts(signature_of(check.resolve(nnx, name)),
                       signature_of(_flax_object(name)))
    assert not problems, f"nnx.{name}: " + "; ".join(problems)


def test_the_check_catches_a_missing_argument():
    def flax_like(f, *, argnums=0, has_aux=False):
        pass

    def ours(f, *, argnums=0):
        pass

    assert accepts(inspect.signature(ours), inspect.signature(flax_like)) == [
        "has_aux: flax accepts it by keyword"]


# ------------------------------------------------------------------------- methods
# The public methods (and ``__call__``) of every class nnxlib shares with flax.nnx: for
# each method name both classes have, nnxlib's accepts every call flax's accepts (bound
# to an instance or, for a classmethod, to the class; a staticmethod as it is). Keys are
# ``"Class.method"`` with the class that defines flax's method.
# Deliberate differences go in METHODS_NOT_SUPPORTED with the reason (none at present).
METHODS_NOT_SUPPORTED: dict[str, str] = {}
# Classes whose methods are not compared. GraphDef: flax's is a dataclass hierarchy
# of node records; nnxlib's is one value-compared object (docs/graph.md), with no
# methods in common worth matching.
CLASSES_NOT_COMPARED = {"GraphDef", "graphlib.GraphDef", "graphlib.NodeDef",
                        "graphlib.NodeRef", "graphlib.VariableDef"}


def _method_signature(cls: type, name: str) -> inspect.Signature | None:
    """The signature of ``cls.name`` as callers see it (``self``/``cls`` bound), or None
    for what is not a method (a property, a class attribute, a builtin without one)."""
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    try:
        if isinstance(raw, staticmethod):
            return inspect.signature(raw.__func__)
        if isinstance(raw, classmethod):
            sig = inspect.signature(raw.__func__)
        elif isinstance(raw, (property, type)) or not callable(raw):
            return None
        else:
            sig = inspect.signature(raw)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind is not P.VAR_POSITIONAL:
        params = params[1:]
    return sig.replace(parameters=params)


def _defining_name(cls: type, name: str) -> str:
    for base in cls.__mro__:
        if name in vars(base):
            return f"{base.__name__}.{name}"
    return f"{cls.__name__}.{name}"


def shared_methods():
    """``(access, method)`` pairs: one per distinct pair of (our, flax's) method."""
    seen = set()
    for entry in check.entries(flax_nnx):
        theirs = entry.value
        if not inspect.isclass(theirs) or entry.access in CLASSES_NOT_COMPARED:
            continue
        ours = check.resolve(nnx, entry.access)
        if not inspect.isclass(ours):
            continue
        for name in sorted(set(dir(theirs)) & set(dir(ours))):
            if name.startswith("_") and name != "__call__":
                continue
            their_sig = _method_signature(theirs, name)
            our_sig = _method_signature(ours, name)
            if their_sig is None or our_sig is None:
                continue
            key = (id(inspect.getattr_static(ours, name)),
                   id(inspect.getattr_static(theirs, name)))
            if key in seen:
                continue
            seen.add(key)
            if _defining_name(theirs, name) in METHODS_NOT_SUPPORTED:
                continue
            yield f"{entry.access}.{name}"


def method_problems(ours: inspect.Signature, theirs: inspect.Signature) -> list[str]:
    """``accepts`` plus one more rule: a bare ``(*args, **kwargs)`` forwarder hides what
    it accepts, so it only passes where flax's method takes nothing by name either."""
    problems = accepts(ours, theirs)
    kinds = {p.kind for p in ours.parameters.values()}
    named = [p.name for p in theirs.parameters.values()
             if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)]
    if kinds and kinds <= {P.VAR_POSITIONAL, P.VAR_KEYWORD} and named:
        problems.append(f"(*args, **kwargs) here; flax names {named}")
    return problems


@pytest.mark.parametrize("name", list(shared_methods()))
def test_methods_accept_the_calls_flax_accepts(name):
    access, _, method = name.rpartition(".")
    ours, theirs = check.resolve(nnx, access), _flax_object(access)
    problems = method_problems(_method_signature(ours, method),
                               _method_signature(theirs, method))
    assert not problems, f"nnx.{name}: " + "; ".join(problems)


def test_methods_not_supported_are_real_flax_methods():
    for key in METHODS_NOT_SUPPORTED:
        cls_name, _, method = key.partition(".")
        assert any(inspect.isclass(e.value) and e.value.__name__ == cls_name
                   and method in vars(e.value) for e in check.entries(flax_nnx)), key


def test_method_check_sees_methods_of_all_kinds():
    class Theirs:
        def f(self, x, *, flag=False): ...

        @classmethod
        def make(cls, size): ...

        @staticmethod
        def helper(a, b=1): ...

    class Ours:
        def f(self, *args, **kwargs): ...

        @classmethod
        def make(cls, n): ...

        @staticmethod
        def helper(a): ...

    def problems(name):
        return method_problems(_method_signature(Ours, name),
                               _method_signature(Theirs, name))

    assert problems("f") == ["(*args, **kwargs) here; flax names ['x', 'flag']"]
    assert problems("make") == ["position 0 is 'n', flax's is 'size'",
                                "size: flax accepts it by keyword"]
    assert problems("helper") == ["b: flax takes it at position 1",
                                  "b: flax accepts it by keyword"]
    assert _method_signature(Ours, "missing") is None
