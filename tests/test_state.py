"""Tests for nnxlib.state: State mapping, flat views, filtering, pure dicts, pytrees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


def make_state():
    return nnx.State({
        "layer": {
            "kernel": nnx.Param(jnp.ones((2, 2))),
            "bias": nnx.Param(jnp.zeros(2)),
            "mean": nnx.BatchStat(jnp.zeros(2)),
        },
        "blocks": {0: {"w": nnx.Param(jnp.ones(1))}, 1: {"w": nnx.Param(jnp.ones(1))}},
        "step": jnp.array(0),
    })


def paths(state):
    return [p for p, _ in nnx.to_flat_state(state)]


class TestMapping:
    def test_nested_indexing(self):
        s = make_state()
        assert isinstance(s["layer"], nnx.State)
        assert s["layer"]["kernel"].shape == (2, 2)
        assert s["blocks"][1]["w"].shape == (1,)

    def test_attribute_access(self):
        s = make_state()
        assert s.layer.kernel is s["layer"]["kernel"]
        with pytest.raises(AttributeError, match="no key 'nope'"):
            s.nope

    def test_attribute_assignment_and_item_assignment(self):
        s = nnx.State({})
        s.a = nnx.Param(1.0)
        s["b"] = {"c": 2}
        assert paths(s) == [("a",), ("b", "c")]
        assert isinstance(s["b"], nnx.State)

    def test_delete(self):
        s = make_state()
        del s["step"]
        del s["layer"]["mean"]
        assert ("step",) not in paths(s)
        assert ("layer", "mean") not in paths(s)

    def test_len_iter_contains(self):
        s = make_state()
        assert len(s) == 3
        assert set(s) == {"layer", "blocks", "step"}
        assert "layer" in s and "nope" not in s
        assert 0 in s["blocks"]

    def test_views_share_storage(self):
        s = make_state()
        s["layer"]["extra"] = nnx.Param(3.0)
        assert ("layer", "extra") in paths(s)

    def test_mapping_methods(self):
        s = nnx.State({"a": 1, "b": {"c": 2}})
        assert dict(s.items())["a"] == 1
        assert list(s.keys()) == ["a", "b"]
        assert s.get("missing", 5) == 5

    def test_copy_constructor_is_independent_at_top(self):
        s = nnx.State({"a": 1})
        t = nnx.State(s)
        t["b"] = 2
        assert "b" not in s

    def test_equality_is_mapping_equality(self):
        # as flax.nnx's State (a Mapping): same keys, equal values
        s = nnx.State({"a": 1, "b": {"c": 2}})
        assert s == s and s == nnx.State({"a": 1, "b": {"c": 2}})
        assert s == {"a": 1, "b": {"c": 2}} and nnx.State({}) == {}
        assert s != nnx.State({"a": 1}) and s != {"a": 1, "b": {"c": 3}}
        assert s != [1, 2]
        params, rest = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Param, ...)[1:]
        assert rest == {} and params != {}

    def test_repr(self):
        text = repr(nnx.State({"a": {"w": nnx.Param(1.0)}, "b": 2}))
        assert text.startswith("State({")
        assert "'a'" in text and "'w'" in text and "Param(" in text and "'b': 2" in text
        assert repr(nnx.State({})) == "State({})"


class TestFlat:
    def test_flat_state_sorted_ints_before_strings(self):
        s = nnx.State({"b": 1, "a": 2, 10: 3, 2: 4})
        assert nnx.to_flat_state(s).paths == ((2,), (10,), ("a",), ("b",))

    def test_flat_state_views(self):
        s = make_state()
        flat = s.flat_state()
        assert isinstance(flat, nnx.FlatState)
        assert flat.paths == (
            ("blocks", 0, "w"), ("blocks", 1, "w"), ("layer", "bias"), ("layer", "kernel"),
            ("layer", "mean"), ("step",),
        )
        assert len(flat) == 6
        assert flat[2] == (("layer", "bias"), s["layer"]["bias"])
        assert [p for p, _ in flat] == list(flat.paths)
        assert flat.leaves[3] is s.layer.kernel

    def test_round_trip(self):
        s = make_state()
        back = nnx.from_flat_state(nnx.to_flat_state(s))
        assert paths(back) == paths(s)
        assert back["layer"]["kernel"] is s["layer"]["kernel"]

    def test_from_pairs(self):
        s = nnx.from_flat_state([(("b", 1), 2), (("a",), 1)])
        assert s["a"] == 1 and s["b"][1] == 2
        assert paths(s) == [("a",), ("b", 1)]

    def test_flat_state_to_nested(self):
        s = make_state().flat_state().to_nested_state()
        assert isinstance(s, nnx.State) and s.layer.bias.shape == (2,)

    def test_flat_state_repr(self):
        text = repr(nnx.State({"a": 1}).flat_state())
        assert text.startswith("FlatState([") and "('a',)" in text

    def test_flat_state_leaves_are_a_copy(self):
        s = nnx.State({"a": 1})
        flat = s.flat_state()
        flat.leaves[0] = 2
        assert s["a"] == 1


class TestOperations:
    def test_filter_single(self):
        params = make_state().filter(nnx.Param)
        assert paths(params) == [
            ("blocks", 0, "w"), ("blocks", 1, "w"), ("layer", "bias"), ("layer", "kernel")]

    def test_filter_several(self):
        params, stats = make_state().filter(nnx.Param, nnx.BatchStat)
        assert len(paths(params)) == 4 and paths(stats) == [("layer", "mean")]

    def test_filter_gives_each_leaf_to_its_first_matching_filter(self):
        # as flax.nnx: like split, but leaves no filter matches are left out
        a, b = make_state().filter(nnx.PathContains("layer"), nnx.Param)
        assert ("layer", "bias") in paths(a) and ("layer", "bias") not in paths(b)
        assert paths(b) == [("blocks", 0, "w"), ("blocks", 1, "w")]
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        params, rest = nnx.state(model, nnx.Param, ...)
        assert sorted(params) == ["bias", "kernel"] and len(rest) == 0

    def test_filter_state_function(self):
        assert paths(nnx.filter_state(make_state(), "batch_stats")) == [("layer", "mean")]

    def test_split_partitions(self):
        s = make_state()
        params, rest = s.split(nnx.Param, ...)
        assert len(paths(params)) == 4
        assert paths(rest) == [("layer", "mean"), ("step",)]
        assert set(paths(params)).isdisjoint(paths(rest))

    def test_split_single_filter_returns_state(self):
        everything = make_state().split(...)
        assert isinstance(everything, nnx.State) and len(paths(everything)) == 6

    def test_split_state_function(self):
        a, b = nnx.split_state(make_state(), nnx.Param, ...)
        assert len(paths(a)) + len(paths(b)) == 6

    def test_split_requires_exhaustive_filters(self):
        with pytest.raises(ValueError, match=r"layer\.mean.*matches none.*\.\.\."):
            make_state().split(nnx.Param)

    def test_merge(self):
        s = make_state()
        params, rest = s.split(nnx.Param, ...)
        merged = nnx.State.merge(params, rest)
        assert paths(merged) == paths(s)
        assert merged.layer.kernel is s.layer.kernel
        assert paths(nnx.merge_state(params, rest)) == paths(s)

    def test_merge_later_wins(self):
        merged = nnx.merge_state(nnx.State({"a": 1, "b": 1}), nnx.State({"b": 2}))
        assert (merged["a"], merged["b"]) == (1, 2)

    def test_merge_single_is_a_copy(self):
        s = nnx.State({"a": 1})
        m = nnx.merge_state(s)
        assert m is not s and m["a"] == 1

    def test_merge_accepts_plain_dicts(self):
        merged = nnx.merge_state({"a": {"x": 1}}, {"a": {"y": 2}})
        assert paths(merged) == [("a", "x"), ("a", "y")]

    def test_map_state(self):
        mapped = nnx.map_state(lambda path, x: path, nnx.State({"a": {"b": 0}, "c": 0}))
        assert mapped["a"]["b"] == ("a", "b") and mapped["c"] == ("c",)

    def test_to_pure_dict(self):
        s = make_state()
        pure = s.to_pure_dict()
        assert type(pure) is dict and type(pure["layer"]) is dict
        assert pure["layer"]["kernel"] is s["layer"]["kernel"][...]
        assert pure["step"] is s["step"]
        assert set(pure["blocks"]) == {0, 1}
        assert nnx.to_pure_dict(s).keys() == pure.keys()

    def test_replace_by_pure_dict(self):
        s = make_state()
        old_kernel = s.layer.kernel
        pure = jax.tree.map(lambda x: x + 1, s.to_pure_dict())
        s.replace_by_pure_dict(pure)
        new_kernel = s.layer.kernel
        assert type(new_kernel) is nnx.Param and new_kernel is not old_kernel
        np.testing.assert_array_equal(new_kernel[...], 2 * np.ones((2, 2)))
        np.testing.assert_array_equal(old_kernel[...], np.ones((2, 2)))  # not mutated
        assert int(s["step"]) == 1

    def test_replace_by_pure_dict_partial_and_string_keys(self):
        s = make_state()
        nnx.replace_by_pure_dict(s, {"blocks": {"1": {"w": jnp.zeros(1)}}}, partial=True)
        assert float(s.blocks[1].w[0]) == 0.0
        assert float(s.blocks[0].w[0]) == 1.0

    def test_replace_by_pure_dict_custom_fn(self):
        s = nnx.State({"a": nnx.Param(1.0)})
        s.replace_by_pure_dict({"a": 5.0}, replace_fn=lambda old, new: ("custom", new))
        assert s["a"] == ("custom", 5.0)

    def test_replace_by_pure_dict_unknown_path(self):
        s = nnx.State({"a": nnx.Param(1.0)})
        with pytest.raises(ValueError, match=r"b\.c: not in the state"):
            s.replace_by_pure_dict({"b": {"c": 1.0}})
        assert s["a"].value == 1.0


class TestPytree:
    def test_leaves_in_flat_order(self):
        s = make_state()
        leaves = jax.tree.leaves(s)
        expected = [v[...] if isinstance(v, nnx.Variable) else v
                    for _, v in nnx.to_flat_state(s)]
        assert len(leaves) == len(expected)
        assert all(a is b for a, b in zip(leaves, expected))

    def test_tree_map_keeps_paths_and_types(self):
        s = make_state()
        doubled = jax.tree.map(lambda x: x * 2, s)
        assert isinstance(doubled, nnx.State)
        assert paths(doubled) == paths(s)
        assert type(doubled.layer.mean) is nnx.BatchStat
        assert doubled.layer.kernel is not s.layer.kernel
        np.testing.assert_array_equal(doubled.layer.kernel[...], 2 * np.ones((2, 2)))

    def test_tree_map_keeps_metadata(self):
        s = nnx.State({"w": nnx.Param(jnp.ones(2), out_sharding=("embed",))})
        assert jax.tree.map(jnp.zeros_like, s)["w"].out_sharding == ("embed",)

    def test_treedef_equality(self):
        a = jax.tree.structure(make_state())
        b = jax.tree.structure(make_state())
        assert a == b
        c = jax.tree.structure(make_state().filter(nnx.Param))
        assert a != c

    def test_jit_and_grad(self):
        s = make_state()
        params, rest = s.split(nnx.Param, ...)

        @jax.jit
        def loss(params):
            return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(params))

        grads = jax.grad(loss)(params)
        assert isinstance(grads, nnx.State)
        assert paths(grads) == paths(params)
        np.testing.assert_array_equal(grads.layer.kernel[...], 2 * np.ones((2, 2)))

    def test_unflatten(self):
        s = make_state()
        leaves, treedef = jax.tree.flatten(s)
        back = jax.tree.unflatten(treedef, leaves)
        assert paths(back) == paths(s)

    def test_empty_state(self):
        assert jax.tree.leaves(nnx.State({})) == []


def test_to_pure_dict_with_extract_fn():
    state = nnx.State({"a": {"w": nnx.Param(2.0, note="x")}, "b": nnx.BatchStat(1.0)})
    assert nnx.to_pure_dict(state, lambda v: (v.value, type(v).__name__)) == {
        "a": {"w": (2.0, "Param")}, "b": (1.0, "BatchStat")}
    assert state.to_pure_dict(lambda v: v.get_metadata().get("note")) == {
        "a": {"w": "x"}, "b": None}


def test_a_state_pickles_and_copies():
    import copy
    import pickle
    state = nnx.State({"a": {"w": nnx.Param(jnp.ones(2))}, "b": 1})
    for again in (pickle.loads(pickle.dumps(state)), copy.deepcopy(state)):
        assert type(again) is nnx.State and again["b"] == 1
        assert again["a"]["w"][...].tolist() == [1.0, 1.0] and again["a"]["w"] is not state.a.w
    assert copy.copy(state)["a"]["w"] is state.a.w


def test_from_flat_state_of_a_path_dict_like_flax():
    from flax import nnx as flax_nnx
    flat = {("a", "b"): 1, ("c",): 2}
    ours, theirs = nnx.from_flat_state(flat), flax_nnx.from_flat_state(flat)
    assert nnx.to_pure_dict(ours) == flax_nnx.to_pure_dict(theirs) == {"a": {"b": 1}, "c": 2}


def test_clone_of_a_state_copies_its_variables_as_flax():
    from flax import nnx as fnnx

    for lib in (nnx, fnnx):
        model = lib.Linear(2, 3, rngs=lib.Rngs(0))
        params, rest = lib.clone(lib.state(model, lib.Param, ...), graph=True)
        assert params["kernel"] is not model.kernel           # a copy ...
        np.testing.assert_array_equal(params["kernel"][...], model.kernel[...])
        model.kernel[...] = 0.0
        assert float(np.abs(params["kernel"][...]).sum()) > 0  # ... that keeps its values
        assert isinstance(params, lib.State) and len(rest) == 0
    graphdef, state = nnx.split(nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0))))
    assert sorted(state) == ["bias", "kernel"]                # a State is walked, not opaque
