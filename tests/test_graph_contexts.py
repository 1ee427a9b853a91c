"""Contexts, flat/pure views, GraphState, to_tree/from_tree/prefix, state helpers."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


def _shared_pair():
    shared = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    return shared, nnx.Sequential(shared), nnx.Sequential(shared)


def test_split_and_merge_contexts_keep_sharing_across_calls():
    shared, a, b = _shared_pair()
    with nnx.split_context() as ctx:
        ga, sa = ctx.split(a)
        gb, sb = ctx.split(b)
    with nnx.merge_context() as ctx:
        a2, b2 = ctx.merge(ga, sa), ctx.merge(gb, sb)
    assert a2.layers[0] is b2.layers[0]
    assert a2.layers[0].kernel is shared.kernel  # merge uses the state's variables
    # without a context the sharing is lost
    a3, b3 = nnx.merge(*nnx.split(a)), nnx.merge(*nnx.split(b))
    assert a3.layers[0] is not b3.layers[0]


def test_split_context_filters():
    with nnx.split_context() as ctx:
        _, params, rest = ctx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)), nnx.Param, ...)
    assert sorted(params) == ["bias", "scale"] and sorted(rest) == ["mean", "var"]


def test_update_context_carries_structure_changes_back():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel = model.kernel
    with nnx.update_context("t") as ctx:
        assert nnx.current_update_context("t") is ctx
        graphdef, state = ctx.split(model)
        inner = ctx.merge(graphdef, state)
        assert inner is not model
        inner.kernel.value = jnp.zeros((2, 2))
        inner.extra = nnx.Param(jnp.ones(3))
        graphdef, state = ctx.split(inner)
        back = ctx.merge(graphdef, state)
    assert back is model and model.kernel is kernel
    assert float(model.kernel[...].sum()) == 0.0 and model.extra.shape == (3,)


def test_current_update_context_without_one_raises():
    with pytest.raises(ValueError, match="No update context is active for tag 'x'"):
        nnx.current_update_context("x")


def test_flatten_unflatten_round_trip_matches_flax_paths():
    ours = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    theirs = flax_nnx.Linear(2, 3, rngs=flax_nnx.Rngs(0))
    graphdef, flat = nnx.flatten(ours)
    _, flax_flat = flax_nnx.flatten(theirs)
    assert [p for p, _ in flat] == [p for p, _ in flax_flat]
    for (_, v), (_, w) in zip(flat, flax_flat):
        assert jnp.array_equal(v[...], w[...])
    assert nnx.unflatten(graphdef, flat).kernel is ours.kernel
    graphdef, leaves = nnx.flatten(ours, with_paths=False)
    assert nnx.unflatten(graphdef, leaves, copy_variables=True).kernel is not ours.kernel
    with pytest.raises(ValueError, match="2 leaves, got a list of 1"):
        nnx.unflatten(graphdef, leaves[:1])


def test_variables_function_returns_the_live_variables():
    model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    params, stats = nnx.variables(model, nnx.Param, nnx.BatchStat)
    assert params["scale"] is model.scale and stats["mean"] is model.mean
    assert nnx.graphlib.variables(model)["var"] is model.var


def test_as_pure_matches_flax():
    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    flax_state = flax_nnx.state(flax_nnx.Linear(2, 3, rngs=flax_nnx.Rngs(0)))
    ours, theirs = nnx.as_pure(state), flax_nnx.as_pure(flax_state)
    assert jax.tree.map(jnp.shape, dict(ours)) == jax.tree.map(jnp.shape, dict(theirs))
    assert all(not isinstance(x, nnx.Variable) for x in jax.tree.leaves(ours))
    assert nnx.pure({"w": nnx.Param(1.0)}) == {"w": 1.0}


def test_unpack_and_merge_graph_states():
    model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    params, rest = nnx.unpack(model, nnx.Param, ...)
    assert isinstance(params, nnx.GraphState) and sorted(params) == ["bias", "scale"]
    rebuilt = nnx.merge(params, rest)
    assert type(rebuilt) is nnx.BatchNorm and rebuilt.scale is model.scale
    graphdef, state = nnx.split(model)
    assert nnx.merge(graphdef, state).mean is model.mean  # the usual form still works
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'state'"):
        nnx.merge(graphdef)


def test_graph_state_is_a_pytree_with_the_state_paths():
    model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    packed = nnx.unpack(model)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(packed)[0]]
    assert paths == [p for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]]
    doubled = jax.tree.map(lambda x: 2 * x, packed)
    assert type(doubled) is nnx.GraphState and doubled._graphdef == packed._graphdef
    assert float(nnx.merge(doubled).scale[...].sum()) == 4.0
    assert type(packed._state) is nnx.State and "scale" in packed


def test_merge_of_graph_states_checks_their_parts():
    linear = nnx.unpack(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    norm = nnx.unpack(nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="GraphDef must be the same"):
        nnx.merge(linear, norm)
    with pytest.raises(ValueError, match="Expected GraphState object"):
        nnx.merge(linear, nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0))))


def test_to_tree_from_tree_keep_sharing_through_jit():
    shared, a, b = _shared_pair()
    tree = nnx.to_tree({"a": a, "b": b, "x": jnp.ones(1)})
    assert isinstance(tree["a"], nnx.NodeStates)
    out = nnx.from_tree(jax.jit(lambda t: t)(tree))
    assert out["a"].layers[0] is out["b"].layers[0]
    assert jnp.array_equal(out["a"].layers[0].kernel[...], shared.kernel[...])


def test_to_tree_with_state_axes_prefix():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    (ns,) = nnx.to_tree((bn,), prefix=(axes,))
    assert ns.metadata is axes and [sorted(s) for s in ns.states] == [
        ["bias", "scale"], ["mean", "var"]]
    assert nnx.from_tree(ns).scale is bn.scale


def test_prefix_builds_state_axes_usable_by_vmap():
    class Pair(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(jnp.array(2.0))
            self.b = nnx.BatchStat(jnp.arange(5.0))

    pair = Pair()
    axes = nnx.prefix(pair, lambda path, v: 0 if "b" in path else None)
    out = nnx.vmap(lambda p: p.a * p.b, in_axes=(axes,))(pair)
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    mapped = nnx.prefix(pair, {nnx.BatchStat: 0, ...: None})
    assert nnx.vmap(lambda p: p.a * p.b, in_axes=(mapped,))(pair).tolist() == out.tolist()


def test_to_tree_refuses_one_object_under_two_prefix_entries():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    pair = (layer, 1, {"b": layer})
    nnx.to_tree(pair, prefix=(0, None, 0))  # the same entry twice: fine
    with pytest.raises(ValueError, match=r"Linear at \[0\] is also at \[2\]\.b.*"
                                         "Inconsistent aliasing detected"):
        nnx.to_tree(pair, prefix=(0, None, 1))
    nnx.to_tree(pair, prefix=(0, None, 1), check_aliasing=False)


def test_restore_int_paths_matches_flax():
    pure = {"0": {"1": 2, "x": 3}, "y": {"10": 1}}
    assert nnx.restore_int_paths(pure) == flax_nnx.restore_int_paths(pure)


def test_diff_and_create_path_filters():
    a = nnx.State({"a": nnx.Param(1.0), "b": {"c": nnx.Param(2.0), "d": nnx.BatchStat(3.0)}})
    b = nnx.State({"a": nnx.Param(1.0), "b": {"c": nnx.Param(5.0)}})
    assert nnx.to_pure_dict(nnx.statelib.diff(a, b)) == {"b": {"d": 3.0}}
    filters = nnx.statelib.create_path_filters(a)
    assert filters[nnx.filterlib.PathIn(("b", "d"))] == 3.0 and len(filters) == 3


def test_path_in_and_filters_to_predicates():
    f = nnx.filterlib.PathIn(("a", "b"))
    assert f(("a", "b"), None) and not f(("a",), None)
    assert f == nnx.filterlib.PathIn(("a", "b")) and hash(f) == hash(nnx.filterlib.PathIn(("a", "b")))
    preds = nnx.filterlib.filters_to_predicates([nnx.Param, ...])
    assert [p((), nnx.BatchStat(0.0)) for p in preds] == [False, True]
    with pytest.raises(ValueError, match="put '...' last"):
        nnx.filterlib.filters_to_predicates([..., nnx.Param])
