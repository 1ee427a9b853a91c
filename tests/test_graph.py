"""Tests for nnxlib.graph: split/merge/update/state/pop/clone/iter_graph/... and caching."""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Linear(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)))
        self.bias = nnx.Param(jnp.zeros(dout))
        self.din, self.dout = din, dout

    def __call__(self, x):
        return x @ self.kernel + self.bias


class Stats(nnx.Module):
    def __init__(self, n):
        self.mean = nnx.BatchStat(jnp.zeros(n))
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.mean[...] = 0.5 * self.mean + 0.5 * x.mean(0)
        self.count[...] += 1
        return x - self.mean


class Model(nnx.Module):
    def __init__(self, rngs):
        self.encoder = Linear(2, 3, rngs)
        self.stats = Stats(3)
        self.decoder = Linear(3, 2, rngs)
        self.decoder_bias = self.decoder.bias  # a shared variable
        self.blocks = [Linear(3, 3, rngs) for _ in range(2)]
        self.scale = jnp.array(2.0)  # a raw array attribute
        self.activation = "tanh"

    def __call__(self, x):
        x = self.stats(self.encoder(x))
        for block in self.blocks:
            x = jnp.tanh(block(x))
        return self.decoder(x) * self.scale


def flat_paths(state):
    return [p for p, _ in nnx.to_flat_state(state)]


def values(state):
    return [np.asarray(v[...] if isinstance(v, nnx.Variable) else v)
            for _, v in nnx.to_flat_state(state)]


def assert_same_values(a, b):
    assert flat_paths(a) == flat_paths(b)
    for x, y in zip(values(a), values(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture
def model():
    return Model(nnx.Rngs(0))


# --------------------------------------------------------------------- split & merge
class TestSplitMerge:
    def test_split_returns_graphdef_and_state(self, model):
        graphdef, state = nnx.split(model)
        assert isinstance(graphdef, nnx.GraphDef) and isinstance(state, nnx.State)
        assert flat_paths(state) == [
            ("blocks", 0, "bias"), ("blocks", 0, "kernel"), ("blocks", 1, "bias"),
            ("blocks", 1, "kernel"), ("decoder", "bias"), ("decoder", "kernel"),
            ("encoder", "bias"), ("encoder", "kernel"), ("scale",), ("stats", "count"),
            ("stats", "mean"),
        ]

    def test_state_leaves_are_the_live_variables(self, model):
        _, state = nnx.split(model)
        assert state["encoder"]["kernel"] is model.encoder.kernel
        assert state["scale"] is model.scale

    def test_shared_variable_appears_once_at_first_path(self, model):
        _, state = nnx.split(model)
        assert ("decoder", "bias") in flat_paths(state)
        assert ("decoder_bias",) not in flat_paths(state)

    def test_merge_round_trip(self, model):
        graphdef, state = nnx.split(model)
        new = nnx.merge(graphdef, state)
        assert type(new) is Model and new is not model
        assert new.encoder is not model.encoder
        assert new.encoder.kernel is model.encoder.kernel  # variables are reused
        assert new.decoder_bias is new.decoder.bias
        assert new.activation == "tanh" and new.encoder.din == 2
        assert type(new.blocks) is nnx.List
        x = jnp.ones((4, 2))
        np.testing.assert_allclose(nnx.clone(new)(x), nnx.clone(model)(x))

    def test_merge_with_new_values_makes_new_variables(self, model):
        graphdef, state = nnx.split(model)
        zeros = jax.tree.map(jnp.zeros_like, state)
        new = nnx.merge(graphdef, zeros)
        assert new.encoder.kernel is not model.encoder.kernel
        assert type(new.stats.mean) is nnx.BatchStat
        assert float(new.encoder.kernel[...].sum()) == 0.0
        assert float(jnp.abs(model.encoder.kernel[...]).sum()) > 0
        assert new.decoder_bias is new.decoder.bias

    def test_split_with_filters_and_merge(self, model):
        graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        assert all(isinstance(v, nnx.Param) for _, v in nnx.to_flat_state(params))
        assert flat_paths(stats) == [("stats", "mean")]
        assert flat_paths(rest) == [("scale",), ("stats", "count")]
        new = nnx.merge(graphdef, params, stats, rest)
        assert_same_values(nnx.state(new), nnx.state(model))

    def test_merge_state_order_does_not_matter(self, model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        a = nnx.merge(graphdef, params, rest)
        b = nnx.merge(graphdef, rest, params)
        assert_same_values(nnx.state(a), nnx.state(b))

    def test_merge_accepts_nested_dicts(self):
        m = Stats(2)
        graphdef, state = nnx.split(m)
        new = nnx.merge(graphdef, {"mean": jnp.ones(2), "count": jnp.array(3)})
        assert type(new.mean) is nnx.BatchStat and int(new.count[...]) == 3

    def test_merge_inside_jit(self, model):
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state, x):
            return nnx.merge(graphdef, state)(x)

        x = jnp.ones((4, 2))
        np.testing.assert_allclose(forward(state, x), nnx.clone(model)(x), rtol=1e-6)

    def test_graphdef_as_static_jit_argument(self, model):
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, x):
            m = nnx.merge(graphdef, state)
            y = m(x)
            return y, nnx.state(m)

        y, new_state = step(state, jnp.ones((4, 2)))
        assert int(new_state["stats"]["count"][...]) == 1
        assert int(model.stats.count[...]) == 0
        nnx.update(model, new_state)
        assert int(model.stats.count[...]) == 1

        f = jax.jit(lambda g, s: nnx.merge(g, s).scale * 1, static_argnums=0)
        assert float(f(graphdef, state)) == 2.0
        assert float(f(nnx.graphdef(Model(nnx.Rngs(1))), state)) == 2.0  # cache hit

    def test_split_of_variable_and_containers(self):
        graphdef, state = nnx.split(nnx.List([nnx.Param(1.0), 2]))
        assert flat_paths(state) == [(0,)]
        assert nnx.merge(graphdef, state)[1] == 2

    def test_split_of_plain_pytree_root(self):
        p = nnx.Param(1.0)
        graphdef, state = nnx.split({"a": p, "b": (p, 3)})
        assert flat_paths(state) == [("a",)]
        new = nnx.merge(graphdef, state)
        assert new["a"] is new["b"][0] and new["b"][1] == 3

    def test_state_function(self, model):
        assert flat_paths(nnx.state(model)) == flat_paths(nnx.split(model)[1])
        params, stats = nnx.state(model, nnx.Param, nnx.BatchStat)
        assert flat_paths(stats) == [("stats", "mean")]
        # state() does not require exhaustive filters
        assert flat_paths(nnx.state(model, nnx.BatchStat)) == [("stats", "mean")]

    def test_graphdef_function(self, model):
        assert nnx.graphdef(model) == nnx.split(model)[0]


# ----------------------------------------------------------- shared refs and cycles
class TestSharingAndCycles:
    def test_shared_submodule(self):
        m = nnx.Module()
        m.a = Stats(2)
        m.b = m.a
        m.c = [m.a, (m.a,)]
        graphdef, state = nnx.split(m)
        assert flat_paths(state) == [("a", "count"), ("a", "mean")]
        new = nnx.merge(graphdef, state)
        assert new.a is new.b is new.c[0] is new.c[1][0]
        assert nnx.find_duplicates(m) == [[("a",), ("b",), ("c", 0), ("c", 1, 0)]]

    def test_cycle(self):
        parent = nnx.Module()
        parent.child = Stats(2)
        parent.child.parent = parent
        parent.child.siblings = [parent.child]
        graphdef, state = nnx.split(parent)
        new = nnx.merge(graphdef, state)
        assert new.child.parent is new
        assert new.child.siblings[0] is new.child
        twin = nnx.clone(parent)
        assert twin.child.parent is twin and twin is not parent

    def test_self_reference(self):
        m = nnx.Module()
        m.me = m
        new = nnx.merge(*nnx.split(m))
        assert new.me is new

    def test_distinct_equal_objects_stay_distinct(self):
        m = nnx.Module()
        m.a = nnx.Param(jnp.ones(2))
        m.b = nnx.Param(jnp.ones(2))
        new = nnx.clone(m)
        assert new.a is not new.b

    def test_find_duplicates_with_only(self, model):
        assert nnx.find_duplicates(model) == [[("decoder", "bias"), ("decoder_bias",)]]
        assert nnx.find_duplicates(model, only=nnx.BatchStat) == []
        assert nnx.find_duplicates(Stats(2)) == []


# -------------------------------------------------------------------------- update
class TestUpdate:
    def test_update_writes_values_in_place(self, model):
        kernel = model.encoder.kernel
        new_state = jax.tree.map(lambda x: x + 1, nnx.state(model))
        expected = values(new_state)
        nnx.update(model, new_state)
        assert model.encoder.kernel is kernel
        for got, want in zip(values(nnx.state(model)), expected):
            np.testing.assert_array_equal(got, want)
        assert float(model.scale) == 3.0

    def test_update_partial_state(self, model):
        before = values(nnx.state(model, nnx.Param))
        nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.BatchStat)))
        for got, want in zip(values(nnx.state(model, nnx.Param)), before):
            np.testing.assert_array_equal(got, want)

    def test_update_several_states(self, model):
        _, params, rest = nnx.split(model, nnx.Param, ...)
        zeros = jax.tree.map(jnp.zeros_like, params)
        ones = jax.tree.map(jnp.ones_like, rest)
        nnx.update(model, zeros, ones)
        assert float(model.encoder.kernel[...].sum()) == 0.0
        assert float(model.scale) == 1.0

    def test_update_with_nested_dict(self):
        m = Stats(2)
        nnx.update(m, {"mean": jnp.ones(2)})
        np.testing.assert_array_equal(m.mean[...], [1.0, 1.0])

    def test_update_shared_variable_through_first_path(self, model):
        nnx.update(model, {"decoder": {"bias": jnp.full(2, 7.0)}})
        np.testing.assert_array_equal(model.decoder_bias[...], [7.0, 7.0])

    def test_update_raw_arrays_in_containers(self):
        m = nnx.Module()
        m.arrays = [jnp.zeros(1), {"x": jnp.zeros(2)}]
        m.pair = (jnp.zeros(3), nnx.Param(jnp.zeros(1)), "static")
        graphdef = nnx.graphdef(m)
        nnx.update(m, jax.tree.map(lambda x: x + 1, nnx.state(m)))
        assert float(m.arrays[0][0]) == 1.0 and float(m.arrays[1]["x"][1]) == 1.0
        assert float(m.pair[0][2]) == 1.0 and float(m.pair[1][0]) == 1.0
        assert m.pair[2] == "static"
        assert nnx.graphdef(m) == graphdef
        assert all(float(v.sum()) > 0 for v in values(nnx.state(m)))

    def test_update_raw_array_with_scalars_keeps_an_array(self):
        m = nnx.Module()
        m.scale = np.ones((), np.float32)
        m.pair = (jnp.zeros(()),)
        graphdef = nnx.graphdef(m)
        # numpy turns `0-d array + 1` into a numpy scalar; a Python float is no array
        nnx.update(m, {"scale": m.scale + 1, "pair": {0: 3.0}})
        assert isinstance(m.scale, np.ndarray) and m.scale.dtype == np.float32
        assert float(m.scale) == 2.0 and float(m.pair[0]) == 3.0
        assert m.pair[0].dtype == jnp.float32
        assert nnx.graphdef(m) == graphdef
        assert [p for p, _ in nnx.to_flat_state(nnx.state(m))] == [("pair", 0), ("scale",)]

    def test_update_changes_metadata_from_variables(self):
        m = Stats(2)
        nnx.update(m, {"mean": nnx.BatchStat(jnp.ones(2), note="new")})
        assert m.mean.note == "new"

    def test_update_under_jit_pattern(self):
        m = Stats(2)
        graphdef, state = nnx.split(m)

        @jax.jit
        def step(state, x):
            m = nnx.merge(graphdef, state)
            m(x)
            return nnx.state(m)

        for _ in range(3):
            nnx.update(m, step(nnx.state(m), jnp.ones((4, 2))))
        assert int(m.count[...]) == 3
        np.testing.assert_allclose(m.mean[...], [0.875, 0.875])


# ---------------------------------------------------------------------------- pop
class TestPop:
    def test_pop_intermediates(self):
        class Probe(nnx.Module):
            def __call__(self, x):
                self.sow(nnx.Intermediate, "h", x * 2)
                return x

        m = Probe()
        m(jnp.ones(2))
        popped = nnx.pop(m, nnx.Intermediate)
        assert flat_paths(popped) == [("h",)]
        assert not hasattr(m, "h")
        assert flat_paths(nnx.state(m)) == []

    def test_pop_removes_every_reference(self, model):
        popped = nnx.pop(model, nnx.PathContains("decoder"))
        assert flat_paths(popped) == [("decoder", "bias"), ("decoder", "kernel")]
        assert not hasattr(model.decoder, "bias") and not hasattr(model, "decoder_bias")
        assert ("decoder_bias",) not in flat_paths(nnx.state(model))

    def test_pop_from_list_and_dict(self):
        m = nnx.Module()
        m.items = [nnx.Param(1.0), nnx.Cache(2.0), nnx.Param(3.0), nnx.Cache(4.0)]
        m.table = {"a": nnx.Cache(5.0), "b": nnx.Param(6.0)}
        caches = nnx.pop(m, nnx.Cache)
        assert len(flat_paths(caches)) == 3
        assert [v.value for v in m.items] == [1.0, 3.0]
        assert list(m.table) == ["b"]

    def test_pop_several_filters(self, model):
        stats, counts = nnx.pop(model, nnx.BatchStat, nnx.PathContains("count"))
        assert flat_paths(stats) == [("stats", "mean")]
        assert flat_paths(counts) == [("stats", "count")]
        assert flat_paths(nnx.state(model.stats)) == []

    def test_pop_needs_a_filter(self, model):
        with pytest.raises(TypeError, match="at least one filter"):
            nnx.pop(model)


# -------------------------------------------------------------------------- clone
class TestClone:
    def test_clone_is_disjoint_and_equal(self, model):
        twin = nnx.clone(model)
        assert twin is not model and type(twin) is Model
        assert twin.encoder.kernel is not model.encoder.kernel
        assert twin.decoder_bias is twin.decoder.bias
        assert nnx.graphdef(twin) == nnx.graphdef(model)
        assert_same_values(nnx.state(twin), nnx.state(model))
        twin.encoder.kernel[...] = jnp.zeros((2, 3))
        assert float(jnp.abs(model.encoder.kernel[...]).sum()) > 0

    def test_clone_keeps_metadata(self):
        m = nnx.Module()
        m.w = nnx.Param(jnp.ones(2), out_sharding=("embed",))
        assert nnx.clone(m).w.out_sharding == ("embed",)


# ----------------------------------------------------------------- iteration, maps
class TestIterGraph:
    def test_every_object_once_children_first(self, model):
        items = list(nnx.iter_graph(model))
        assert items[-1] == ((), model)
        paths = [p for p, _ in items]
        assert ("decoder_bias",) not in paths  # shared: visited once
        assert ("encoder",) in paths and ("encoder", "kernel") in paths
        assert paths.index(("encoder", "kernel")) < paths.index(("encoder",))
        ids = [id(v) for _, v in items if isinstance(v, (nnx.Variable, nnx.Module))]
        assert len(ids) == len(set(ids))

    def test_includes_static_leaves(self, model):
        items = dict(nnx.iter_graph(model))
        assert items[("activation",)] == "tanh"
        assert items[("encoder", "din")] == 2

    def test_cycles_terminate(self):
        m = nnx.Module()
        m.child = nnx.Module()
        m.child.parent = m
        assert [p for p, _ in nnx.iter_graph(m)] == [("child",), ()]

    def test_iter_children(self, model):
        keys = [k for k, _ in nnx.iter_children(model)]
        assert keys == ["blocks", "decoder", "encoder", "stats"]


class TestRecursiveMap:
    def test_replace_params(self, model):
        def zero(path, x):
            if isinstance(x, nnx.Param):
                return nnx.Param(jnp.zeros_like(x[...]))
            return x

        new = nnx.recursive_map(zero, model)
        assert float(new.encoder.kernel[...].sum()) == 0.0
        assert new.decoder_bias is new.decoder.bias  # mapped once, still shared

    def test_paths_given_to_f(self, model):
        seen = []
        nnx.recursive_map(lambda p, x: seen.append(p) or x, model)
        assert () in seen and ("encoder", "kernel") in seen
        assert ("decoder_bias",) not in seen

    def test_replace_modules(self):
        class Double(nnx.Module):
            def __call__(self, x):
                return 2 * x

        seq = nnx.Sequential(Stats(2), Stats(2))
        new = nnx.recursive_map(lambda p, x: Double() if isinstance(x, Stats) else x, seq)
        np.testing.assert_array_equal(new(jnp.ones((1, 2))), [[4.0, 4.0]])


# -------------------------------------------------------------------------- call
class TestCall:
    def test_call_is_functional(self):
        m = Stats(2)
        graphdef, state = nnx.split(m)
        y, (graphdef2, new_state) = nnx.call((graphdef, state))(jnp.ones((4, 2)))
        assert y.shape == (4, 2)
        assert int(new_state["count"][...]) == 1
        assert int(state["count"][...]) == 0  # the input state is untouched
        assert int(m.count[...]) == 0
        assert graphdef2 == graphdef

    def test_call_method_path(self):
        class Net(nnx.Module):
            def __init__(self):
                self.inner = Stats(2)

            def encode(self, x):
                return x + 1

        graphdef, state = nnx.split(Net())
        out, _ = nnx.call((graphdef, state)).encode(jnp.zeros(2))
        np.testing.assert_array_equal(out, [1.0, 1.0])
        out, (_, new_state) = nnx.call((graphdef, state)).inner(jnp.ones((1, 2)))
        assert int(new_state["inner"]["count"][...]) == 1

    def test_call_under_jit(self):
        graphdef, state = nnx.split(Stats(2))

        @jax.jit
        def step(state, x):
            y, (_, state) = nnx.call((graphdef, state))(x)
            return y, state

        _, state = step(state, jnp.ones((2, 2)))
        _, state = step(state, jnp.ones((2, 2)))
        assert int(state["count"][...]) == 2

    def test_graphdef_apply(self):
        graphdef, params, rest = nnx.split(Stats(2), nnx.BatchStat, ...)
        y, (_, new_state) = graphdef.apply(params, rest)(jnp.ones((1, 2)))
        assert int(new_state["count"][...]) == 1


# ------------------------------------------------------------------------ GraphDef
class TestGraphDef:
    def test_equal_by_value_and_hash(self):
        a = nnx.graphdef(Model(nnx.Rngs(0)))
        b = nnx.graphdef(Model(nnx.Rngs(1)))
        assert a is not b
        assert a == b and hash(a) == hash(b)
        assert len({a, b}) == 1

    def test_differs_on_structure(self):
        base = nnx.graphdef(Stats(2))

        def variant(change):
            m = Stats(2)
            change(m)
            return nnx.graphdef(m)

        assert variant(lambda m: None) == base
        assert variant(lambda m: setattr(m, "extra", 1)) != base  # new attribute
        assert variant(lambda m: setattr(m, "mean", nnx.Param(jnp.zeros(2)))) != base
        assert variant(lambda m: m.mean.set_metadata(note=1)) != base  # metadata
        assert variant(lambda m: delattr(m, "count")) != base
        assert variant(lambda m: setattr(m, "count", m.mean)) != base  # sharing

    def test_differs_on_static_values(self):
        a, b = Linear(2, 3, nnx.Rngs(0)), Linear(2, 3, nnx.Rngs(0))
        b.din = 5
        assert nnx.graphdef(a) != nnx.graphdef(b)

    def test_shapes_are_not_structure(self):
        assert nnx.graphdef(Stats(2)) == nnx.graphdef(Stats(5))

    def test_not_equal_to_other_types(self):
        assert nnx.graphdef(Stats(2)) != "graphdef"

    def test_immutable(self):
        g = nnx.graphdef(Stats(2))
        with pytest.raises(AttributeError):
            g.root = None
        with pytest.raises(AttributeError):
            g.new_attribute = 1
        with pytest.raises(AttributeError):
            del g.paths
        with pytest.raises(TypeError):
            g.paths[0] = ("x",)

    def test_unhashable_static_values(self):
        class Config:  # compares by value, cannot be hashed
            __hash__ = None

            def __init__(self, lr):
                self.lr = lr

            def __eq__(self, other):
                return isinstance(other, Config) and other.lr == self.lr

        a, b, c = Stats(2), Stats(2), Stats(2)
        a.tags, b.tags, c.tags = {"x", "y"}, {"y", "x"}, {"x"}  # sets are unhashable
        a.config, b.config, c.config = Config(0.1), Config(0.1), Config(0.1)
        ga, gb, gc = nnx.graphdef(a), nnx.graphdef(b), nnx.graphdef(c)
        assert ga == gb and hash(ga) == hash(gb)
        assert ga != gc
        assert nnx.merge(ga, nnx.state(a)).config.lr == 0.1

    def test_pickle_and_copy(self, model):
        graphdef, state = nnx.split(model)
        for g in (pickle.loads(pickle.dumps(graphdef)), copy.deepcopy(graphdef)):
            assert g == graphdef and hash(g) == hash(graphdef)
            new = nnx.merge(g, state)
            assert new.decoder_bias is new.decoder.bias

    def test_repr(self, model):
        text = repr(nnx.graphdef(model))
        assert text.startswith("GraphDef(Model(")
        assert "'encoder': Linear(" in text and "Param(index=" in text
        assert "<ref" in text and "<array>" in text and "'tanh'" in text

    def test_num_leaves(self, model):
        g, state = nnx.split(model)
        assert g.num_leaves == len(flat_paths(state))


# ------------------------------------------------------------------ structure cache
class TestStructureCache:
    def test_unchanged_graph_reuses_graphdef(self, model):
        g1, _ = nnx.split(model)
        g2, _ = nnx.split(model)
        assert g1 is g2
        assert nnx.graphdef(model) is g1

    def test_value_assignment_keeps_cache(self, model):
        g, _ = nnx.split(model)
        model.encoder.kernel[...] = jnp.zeros((2, 3))
        model.stats.count.value = jnp.array(5)
        model.stats.mean.set_value(jnp.ones(3))
        model.stats.mean += 1
        model.scale = jnp.array(9.0)  # new array in place of an array
        g2, state = nnx.split(model)
        assert g2 is g
        assert float(state["encoder"]["kernel"][...].sum()) == 0.0
        assert int(state["stats"]["count"][...]) == 5
        assert float(state["scale"]) == 9.0  # raw-array slots are re-read

    def test_filtered_split_uses_cache(self, model):
        g, params, rest = nnx.split(model, nnx.Param, ...)
        model.encoder.bias[...] = jnp.ones(3)
        g2, params2, _ = nnx.split(model, nnx.Param, ...)
        assert g2 is g
        np.testing.assert_array_equal(params2["encoder"]["bias"][...], np.ones(3))

    @pytest.mark.parametrize("mutation", [
        "new_attribute", "new_submodule", "replace_variable", "delete_attribute",
        "list_append", "list_setitem", "list_pop", "dict_setitem", "dict_delitem",
        "metadata_change", "metadata_attribute", "metadata_delete", "static_change",
        "array_to_static", "deep_new_attribute", "share",
    ])
    def test_structural_mutation_invalidates(self, model, mutation):
        g, _ = nnx.split(model)
        if mutation == "new_attribute":
            model.extra = nnx.Param(jnp.ones(1))
        elif mutation == "new_submodule":
            model.extra = Stats(1)
        elif mutation == "replace_variable":
            model.stats.mean = nnx.BatchStat(jnp.zeros(3))
        elif mutation == "delete_attribute":
            del model.activation
        elif mutation == "list_append":
            model.blocks.append(Linear(3, 3, nnx.Rngs(2)))
        elif mutation == "list_setitem":
            model.blocks[0] = Linear(3, 3, nnx.Rngs(2))
        elif mutation == "list_pop":
            model.blocks.pop()
        elif mutation == "dict_setitem":
            model.table = {}
            g = nnx.graphdef(model)
            model.table["k"] = nnx.Param(1.0)
        elif mutation == "dict_delitem":
            model.table = {"k": nnx.Param(1.0)}
            g = nnx.graphdef(model)
            del model.table["k"]
        elif mutation == "metadata_change":
            model.encoder.kernel.set_metadata(out_sharding=("a", "b"))
        elif mutation == "metadata_attribute":
            model.encoder.kernel.note = "x"
        elif mutation == "metadata_delete":
            model.encoder.kernel.set_metadata(note="x")
            g = nnx.graphdef(model)
            del model.encoder.kernel.note
        elif mutation == "static_change":
            model.activation = "relu"
        elif mutation == "array_to_static":
            model.scale = 2.0
        elif mutation == "deep_new_attribute":
            model.blocks[1].gate = nnx.Param(jnp.ones(1))
        elif mutation == "share":
            model.encoder.bias = model.decoder.bias
        g2, _ = nnx.split(model)
        assert g2 is not g
        assert nnx.graphdef(model) is g2  # the new plan is cached in turn

    def test_same_object_reassignment_is_not_structural(self, model):
        g = nnx.graphdef(model)
        model.encoder = model.encoder
        model.stats.count += 1
        assert nnx.graphdef(model) is g

    def test_structural_change_to_equal_structure_gives_equal_graphdef(self, model):
        g = nnx.graphdef(model)
        model.stats = Stats(3)
        g2 = nnx.graphdef(model)
        assert g2 is not g and g2 == g

    def test_cache_sees_change_in_shared_subgraph(self):
        shared = Stats(2)
        a, b = nnx.Module(), nnx.Module()
        a.s = shared
        b.s = shared
        ga, gb = nnx.graphdef(a), nnx.graphdef(b)
        shared.extra = 1
        assert nnx.graphdef(a) is not ga and nnx.graphdef(b) is not gb

    def test_merged_graph_has_equal_graphdef(self, model):
        g, state = nnx.split(model)
        assert nnx.graphdef(nnx.merge(g, state)) == g

    def test_update_keeps_cache(self, model):
        g = nnx.graphdef(model)
        nnx.update(model, jax.tree.map(lambda x: x * 0, nnx.state(model)))
        assert nnx.graphdef(model) is g


# ----------------------------------------------------------- a Variable as the root
def test_split_of_a_variable_gives_the_variable_as_its_state():
    v = nnx.Param(jnp.arange(3.0), tag="x")
    graphdef, state = nnx.split(v)
    assert state is v  # as flax.nnx: the state of a lone variable is the variable
    assert nnx.state(v) is v
    rebuilt = nnx.merge(graphdef, nnx.Param(jnp.zeros(3), tag="x"))
    assert isinstance(rebuilt, nnx.Param) and rebuilt.get_metadata()["tag"] == "x"
    np.testing.assert_array_equal(rebuilt[...], jnp.zeros(3))
    nnx.update(v, nnx.Param(jnp.ones(3)))
    np.testing.assert_array_equal(v[...], jnp.ones(3))
    with pytest.raises(ValueError, match="does not match"):
        nnx.merge(graphdef, nnx.State({"a": nnx.Param(1.0)}))


# ------------------------------------------------------------ GraphDef is static
def test_graphdef_is_a_static_pytree_usable_with_plain_jax_jit():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    assert jax.tree.leaves(graphdef) == []
    assert jax.tree.leaves((graphdef, state)) == jax.tree.leaves(state)
    traces = []

    @jax.jit
    def apply(graphdef, state, x):
        traces.append(1)
        return nnx.merge(graphdef, state)(x)

    x = jnp.ones((1, 2))
    np.testing.assert_allclose(apply(graphdef, state, x), model(x), rtol=1e-6)
    apply(nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(1))), state, x)  # equal: cached
    assert len(traces) == 1
    mapped = jax.tree.map(lambda a: a * 0, (graphdef, state))
    assert mapped[0] is graphdef


def test_merge_creates_objects_without_advancing_the_structure_epoch():
    # New objects are in no cached plan, so building them must not invalidate the
    # plans of other graphs (which would make their next split re-validate).
    from nnxlib.variables import _tracking

    class Holder(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([nnx.Linear(2, 2, rngs=nnx.Rngs(0))])
            self.table = nnx.Dict({"a": nnx.Param(jnp.ones(1))})

    graphdef, state = nnx.split(Holder())
    before = _tracking.EPOCH[0]
    merged = nnx.merge(graphdef, state)
    assert _tracking.EPOCH[0] == before
    merged.layers.append(nnx.Linear(2, 2, rngs=nnx.Rngs(1)))  # still tracked afterwards
    assert _tracking.EPOCH[0] > before
    assert len(nnx.state(merged)["layers"]) == 2


# ------------------------------------------------ flax arguments of merge and clone
class SharedPair(nnx.Module):
    def __init__(self):
        self.a = nnx.Param(jnp.arange(3.0))
        self.b = self.a


def test_merge_copy_gives_new_variables_and_keeps_sharing():
    model = SharedPair()
    graphdef, state = nnx.split(model)
    copied = nnx.merge(graphdef, state, copy=True)
    assert copied.a is not model.a and copied.a is copied.b
    copied.a[...] = jnp.zeros(3)
    np.testing.assert_array_equal(model.a[...], jnp.arange(3.0))


def test_clone_variables_false_shares_variables_with_the_original():
    model = SharedPair()
    twin = nnx.clone(model, variables=False)
    assert twin is not model and twin.a is model.a and twin.b is twin.a


def test_clone_arrays_true_survives_donation_of_the_original():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    twin = nnx.clone(model, arrays=True)
    assert twin.kernel[...] is not model.kernel[...]
    assert twin.kernel[...].unsafe_buffer_pointer() != model.kernel[...].unsafe_buffer_pointer()
    np.testing.assert_array_equal(twin.kernel[...], model.kernel[...])
    with pytest.raises(ValueError, match="variables=True"):
        nnx.clone(model, variables=False, arrays=True)


def test_map_builds_a_new_graph_and_keeps_sharing():
    model = SharedPair()
    doubled = nnx.map(lambda path, v: v.replace(v[...] * 2), model)
    np.testing.assert_array_equal(doubled.a[...], 2 * jnp.arange(3.0))
    np.testing.assert_array_equal(model.a[...], jnp.arange(3.0))
    assert doubled.a is doubled.b and doubled.a is not model.a
    raw = nnx.map(lambda path, v: v[...] + 1, nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    assert isinstance(raw.kernel, nnx.Param)  # raw values are boxed as the same kind


def test_set_metadata_only_on_matching_variables():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    nnx.set_metadata(bn, only=nnx.Param, differentiable=False)
    assert bn.scale.get_metadata()["differentiable"] is False
    assert "differentiable" not in bn.mean.get_metadata()
    graphdef = nnx.graphdef(bn)
    nnx.set_metadata(bn, note="all")
    assert nnx.graphdef(bn) != graphdef  # metadata is structure
    assert all(v.get_metadata()["note"] == "all"
               for _, v in nnx.iter_graph(bn) if isinstance(v, nnx.Variable))
