"""Operations that change or rebuild a graph from a state: pop, update, map, call, and
the update context driven through split_context/merge_context; compared with flax.nnx
where the behaviour is the same."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


def tree(lib):
    return {"a": {"b": jnp.array(1), "c": lib.Param(jnp.array(2)), "d": jnp.array(3.0)}}


# ---------------------------------------------------------------------------- pop
class TestPop:
    def test_pop_takes_arrays_and_variables_out_of_plain_dicts_like_flax(self):
        below_two = lambda path, x: x < 2  # noqa: E731
        results = []
        for lib in (nnx, flax_nnx):
            node = tree(lib)
            popped = lib.pop(node, (lib.Param, below_two))
            results.append((sorted(popped["a"]), sorted(node["a"]),
                            len(jax.tree.leaves(node)), len(jax.tree.leaves(popped))))
        assert results[0] == results[1] == (["b", "c"], ["d"], 1, 2)

    def test_a_shared_variable_is_removed_everywhere(self):
        shared = nnx.Param(1.0)
        model = nnx.Dict(x=shared, y=nnx.List([shared, nnx.BatchStat(0.0)]))
        popped = nnx.pop(model, nnx.Param)
        assert list(popped) == ["x"] and "x" not in model and len(model["y"]) == 1

    def test_several_filters_and_a_tuple_owner(self):
        model = nnx.Dict(p=nnx.Param(1.0), s=nnx.BatchStat(2.0))
        params, stats = nnx.pop(model, nnx.Param, nnx.BatchStat)
        assert list(params) == ["p"] and list(stats) == ["s"] and len(model) == 0
        frozen = nnx.Dict(t=(nnx.Param(1.0), 2))
        with pytest.raises(TypeError, match="tuples are immutable"):
            nnx.pop(frozen, nnx.Param)
        assert isinstance(frozen["t"][0], nnx.Param)  # nothing was removed


# ------------------------------------------------------------------------- update
class TestUpdate:
    def test_update_replaces_static_values_like_flax(self):
        nodes = []
        for lib in (nnx, flax_nnx):
            node = {"a": {"b": 1, "c": lib.Param(jnp.array(2)), "d": 3}}
            lib.update(node, {"a": {"b": 4, "c": jnp.array(10)}})
            nodes.append((node["a"]["b"], int(node["a"]["c"][...]), node["a"]["d"]))
        assert nodes[0] == nodes[1] == (4, 10, 3)

    def test_a_static_module_attribute_is_replaced_and_recorded(self):
        layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        before = nnx.graphdef(layer)
        nnx.update(layer, {"in_features": 7})
        assert layer.in_features == 7 and nnx.graphdef(layer) != before

    def test_an_unknown_path_still_raises_and_writes_nothing(self):
        layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        kernel = layer.kernel[...]
        with pytest.raises(nnx.errors.StateMismatchError, match="'nope' is not in"):
            nnx.update(layer, {"kernel": jnp.zeros((2, 3)), "in_features": 7, "nope": 1})
        assert layer.in_features == 2 and layer.kernel[...] is kernel


# ------------------------------------------------------------------- map and call
def test_map_without_recreating_variables_keeps_raw_values_like_flax():
    for lib in (nnx, flax_nnx):
        rngs = lib.map(lambda path, x: 0, lib.Rngs(0), recreate_variables=False)
        assert not isinstance(rngs.default.count, lib.Variable) and rngs.default.count == 0
    boxed = nnx.map(lambda path, x: 0, nnx.Rngs(0))
    assert isinstance(boxed.default.count, nnx.Variable)


def test_call_reaches_items_of_containers_like_flax():
    class Counter(nnx.Module):
        def __init__(self):
            self.count = nnx.Variable(jnp.array(0))

        def increment(self):
            self.count[...] += 1

    nodes = {"a": Counter(), "b": Counter()}
    _, (graphdef, state) = nnx.call(nnx.split(nodes))["b"].increment()
    after = nnx.merge(graphdef, state)
    assert int(after["a"].count[...]) == 0 and int(after["b"].count[...]) == 1
    assert int(nodes["b"].count[...]) == 0  # functional: the input is not changed


# ----------------------------------------------------- contexts of an update context
class Bar(nnx.Module):
    def __init__(self):
        self.x = 1


def through_update_context(outer, change):
    with nnx.update_context("t"):
        with nnx.split_context("t") as ctx:
            graphdef, state = ctx.split(outer)
        with nnx.merge_context("t", inner=True) as ctx:
            inner = ctx.merge(graphdef, state)
        change(inner)
        with nnx.split_context("t") as ctx:
            graphdef, state = ctx.split(inner)
        with nnx.merge_context("t", inner=False) as ctx:
            return ctx.merge(graphdef, state)


class TestUpdateContextPhases:
    def test_new_submodule_and_static_field(self):
        outer = nnx.Module()
        outer.a = Bar()
        outer.b = outer.a

        def change(inner):
            inner.a.y = 2
            inner.c = Bar()

        assert through_update_context(outer, change) is outer
        assert outer.a.y == 2 and outer.b is outer.a and outer.c.x == 1

    def test_new_shared_reference_and_swapped_variables(self):
        outer = nnx.Module()
        outer.a = Bar()
        outer.p, outer.q = nnx.Param(1.0), nnx.Param(2.0)
        p, q = outer.p, outer.q

        def change(inner):
            inner.shared = inner.a
            inner.p, inner.q = inner.q, inner.p

        through_update_context(outer, change)
        assert outer.shared is outer.a and outer.p is q and outer.q is p

    def test_two_roots_merged_inside_are_one_object(self):
        model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        with nnx.update_context("t"):
            with nnx.split_context("t") as ctx:
                first = ctx.split(model)
                second = ctx.split(model)
            with nnx.merge_context("t", inner=True) as ctx:
                assert ctx.merge(*first) is ctx.merge(*second)

    def test_contexts_let_go_of_their_objects(self):
        with nnx.split_context() as ctx:
            ctx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        assert not hasattr(ctx, "ctxtag") and not hasattr(ctx, "_keep")
