"""Every public callable that nnxlib shares with flax.nnx accepts the calls flax's does.

For each flax parameter, nnxlib must accept it the same way: at the same position when
flax takes it positionally, by name when flax takes it by keyword (nnxlib may accept
more, e.g. positional-or-keyword where flax is keyword-only). Deliberate differences
are listed in ``NOT_SUPPORTED`` with the reason, so that a new gap fails here.
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
    "VariableMetadata": "no on_* hooks",
    "State": "flax's extra parameter is private (_copy)",
    # Variable hooks (on_set_value, on_get_value, ...) are not implemented.
    "with_metadata": "no on_* hooks",
    "merge": "recreate_variables is not supported",
    "map": "recreate_variables is not supported",
    "merge_state": "no cls argument",
    "Not": "argument named filter, positional use is the same",
    # The dataclass-field form (no value, dataclasses.field keywords) is not supported.
    "data": "only nnx.data(value)",
    "static": "only nnx.static(value)",
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
