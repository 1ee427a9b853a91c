"""Tests for nnxlib.containers: List, Dict and Sequential."""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Affine(nnx.Module):
    def __init__(self, scale, shift=0.0):
        self.scale = nnx.Param(jnp.array(scale))
        self.shift = nnx.Param(jnp.array(shift))

    def __call__(self, x):
        return x * self.scale + self.shift


class Split2(nnx.Module):
    def __call__(self, x):
        return x, 2 * x


class Add(nnx.Module):
    def __call__(self, a, b):
        return a + b


def flat_paths(node):
    return [p for p, _ in nnx.to_flat_state(nnx.state(node))]


# ----------------------------------------------------------------------------- List
class TestList:
    def test_is_a_list(self):
        items = nnx.List([1, 2, 3])
        assert isinstance(items, list) and items == [1, 2, 3] and len(items) == 3
        assert items[1] == 2 and list(reversed(items)) == [3, 2, 1]

    def test_slice_is_a_list(self):
        items = nnx.List([nnx.Param(1.0), nnx.Param(2.0), nnx.Param(3.0)])
        part = items[1:]
        assert type(part) is nnx.List and part[0] is items[1]

    def test_state_paths_are_indices(self):
        items = nnx.List([Affine(1.0), nnx.Param(2.0), "static"])
        assert flat_paths(items) == [(0, "scale"), (0, "shift"), (1,)]
        new = nnx.merge(*nnx.split(items))
        assert type(new) is nnx.List and new[2] == "static"

    def test_plain_containers_inside_are_tracked(self):
        items = nnx.List([[nnx.Param(1.0)], {"a": nnx.Param(2.0)}])
        assert type(items[0]) is nnx.List and type(items[1]) is nnx.Dict
        items.append([nnx.Param(3.0)])
        assert type(items[2]) is nnx.List

    @pytest.mark.parametrize("mutate", [
        lambda x: x.append(nnx.Param(9.0)),
        lambda x: x.extend([nnx.Param(9.0)]),
        lambda x: x.insert(0, nnx.Param(9.0)),
        lambda x: x.pop(),
        lambda x: x.remove(x[0]),
        lambda x: x.clear(),
        lambda x: x.reverse(),
        lambda x: x.sort(key=lambda v: -float(v.value)),
        lambda x: x.__setitem__(0, nnx.Param(9.0)),
        lambda x: x.__delitem__(0),
        lambda x: x.__iadd__([nnx.Param(9.0)]),
        lambda x: x.__imul__(2),
    ], ids=["append", "extend", "insert", "pop", "remove", "clear", "reverse", "sort",
            "setitem", "delitem", "iadd", "imul"])
    def test_mutations_invalidate_cached_structure(self, mutate):
        m = nnx.Module()
        m.items = [nnx.Param(1.0), nnx.Param(2.0)]
        g = nnx.graphdef(m)
        mutate(m.items)
        g2, state = nnx.split(m)
        assert g2 is not g
        distinct = len({id(v) for v in m.items})  # `*= 2` repeats (shares) variables
        assert (len(state["items"]) if "items" in state else 0) == distinct

    def test_augmented_assignment_returns_same_list(self):
        items = nnx.List([1])
        before = items
        items += [2]
        items *= 2
        assert items is before and items == [1, 2, 1, 2]

    def test_mutation_results(self):
        items = nnx.List([1, 2, 3])
        assert items.pop() == 3
        assert items.pop(0) == 1
        assert items == [2]

    def test_repr(self):
        assert repr(nnx.List([1, 2])) == "List([1, 2])"

    def test_pickle_and_deepcopy(self):
        p = nnx.Param(1.0)
        items = nnx.List([p, p, "x"])
        items.append(items)  # a cycle
        for new in (copy.deepcopy(items), pickle.loads(pickle.dumps(items))):
            assert type(new) is nnx.List and new[0] is new[1] and new[0] is not p
            assert new[2] == "x" and new[3] is new

    def test_shallow_copy(self):
        items = nnx.List([nnx.Param(1.0)])
        new = copy.copy(items)
        assert type(new) is nnx.List and new is not items and new[0] is items[0]

    def test_as_root_of_split(self):
        items = nnx.List([nnx.Param(jnp.ones(2)), nnx.Param(jnp.zeros(3))])
        graphdef, state = nnx.split(items)
        assert [v.shape for v in state.values()] == [(2,), (3,)]
        assert nnx.graphdef(items) is graphdef


# ----------------------------------------------------------------------------- Dict
class TestDict:
    def test_is_a_dict(self):
        d = nnx.Dict({"a": 1}, b=2)
        assert isinstance(d, dict) and d == {"a": 1, "b": 2}

    def test_any_string_key_as_keyword(self):
        d = nnx.Dict(cls=1, self=2, args=3)
        assert d == {"cls": 1, "self": 2, "args": 3}

    def test_attribute_access(self):
        d = nnx.Dict(head=Affine(2.0))
        assert d.head is d["head"]
        d.tail = Affine(3.0)
        assert "tail" in d and d["tail"] is d.tail
        del d.tail
        assert "tail" not in d
        with pytest.raises(AttributeError, match=r"no key 'nope'; keys are \['head'\]"):
            d.nope

    def test_state_paths_are_keys(self):
        d = nnx.Dict({"b": nnx.Param(1.0), "a": Affine(1.0), 3: nnx.Param(2.0)})
        assert flat_paths(d) == [(3,), ("a", "scale"), ("a", "shift"), ("b",)]

    def test_plain_values_are_tracked(self):
        d = nnx.Dict(layers=[nnx.Param(1.0)])
        assert type(d["layers"]) is nnx.List
        d.more = [nnx.Param(2.0)]
        assert type(d["more"]) is nnx.List

    @pytest.mark.parametrize("mutate", [
        lambda d: d.__setitem__("c", nnx.Param(3.0)),
        lambda d: d.__delitem__("a"),
        lambda d: d.pop("a"),
        lambda d: d.popitem(),
        lambda d: d.clear(),
        lambda d: d.update(c=nnx.Param(3.0)),
        lambda d: d.setdefault("c", nnx.Param(3.0)),
        lambda d: d.__ior__({"c": nnx.Param(3.0)}),
        lambda d: setattr(d, "c", nnx.Param(3.0)),
        lambda d: delattr(d, "a"),
    ], ids=["setitem", "delitem", "pop", "popitem", "clear", "update", "setdefault", "ior",
            "setattr", "delattr"])
    def test_mutations_invalidate_cached_structure(self, mutate):
        m = nnx.Module()
        m.table = {"a": nnx.Param(1.0), "b": nnx.Param(2.0)}
        g = nnx.graphdef(m)
        mutate(m.table)
        assert nnx.graphdef(m) is not g
        assert flat_paths(m) == [("table", k) for k in sorted(m.table)]

    def test_repr(self):
        assert repr(nnx.Dict(a=1)) == "Dict({'a': 1})"

    def test_pickle_and_deepcopy(self):
        p = nnx.Param(1.0)
        d = nnx.Dict(a=p, b=p)
        d["self"] = d
        for new in (copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
            assert type(new) is nnx.Dict and new.a is new.b and new.a is not p
            assert new["self"] is new

    def test_merge_round_trip(self):
        d = nnx.Dict(x=nnx.Param(1.0), y="static", z=(1, 2))
        new = nnx.merge(*nnx.split(d))
        assert type(new) is nnx.Dict and new.y == "static" and new.z == (1, 2)


# ----------------------------------------------------------------------- Sequential
class TestSequential:
    def test_chains_layers(self):
        seq = nnx.Sequential(Affine(2.0), Affine(1.0, 1.0), jnp.negative)
        np.testing.assert_array_equal(seq(jnp.array([1.0, 2.0])), [-3.0, -5.0])

    def test_state_paths(self):
        seq = nnx.Sequential(Affine(2.0), jax.nn.relu, Affine(1.0))
        assert flat_paths(seq) == [
            ("layers", 0, "scale"), ("layers", 0, "shift"),
            ("layers", 2, "scale"), ("layers", 2, "shift")]
        assert type(seq.layers) is nnx.List

    def test_tuple_outputs_are_unpacked(self):
        seq = nnx.Sequential(Split2(), Add())
        assert float(seq(jnp.array(1.0))) == 3.0

    def test_first_layer_gets_all_arguments(self):
        seq = nnx.Sequential(Add(), Affine(10.0))
        assert float(seq(jnp.array(1.0), jnp.array(2.0))) == 30.0

    def test_empty_is_the_identity_like_flax(self):
        from flax import nnx as flax_nnx
        for lib in (nnx, flax_nnx):
            empty = lib.Sequential()
            assert empty(1.0) == 1.0 and empty(1, 2) == (1, 2)
            assert empty() is None and empty(k=2) == {"k": 2}

    def test_dict_output_becomes_keywords(self):
        seq = nnx.Sequential(lambda x: {"a": x, "b": 2 * x}, lambda a, b: a + b)
        assert seq(1.0) == 3.0

    def test_append_layer(self):
        seq = nnx.Sequential(Affine(2.0))
        g = nnx.graphdef(seq)
        seq.layers.append(Affine(3.0))
        assert nnx.graphdef(seq) is not g
        assert float(seq(jnp.array(1.0))) == 6.0

    def test_split_merge_under_jit(self):
        seq = nnx.Sequential(Affine(2.0), Affine(3.0))
        graphdef, state = nnx.split(seq)
        out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.array(1.0))
        assert float(out) == 6.0


def test_list_methods_take_flax_parameter_names_by_keyword():
    from flax import nnx as flax_nnx

    ours, theirs = nnx.List([1, 2]), flax_nnx.List([1, 2])
    for lst in (ours, theirs):
        lst.append(value=3)
        lst.insert(index=0, value=0)
        lst.extend(values=[4])
        lst.remove(value=2)
        assert lst.pop(index=1) == 1
        lst[0] = 7
    assert list(ours) == list(theirs) == [7, 3, 4]
    assert ours.count(value=7) == theirs.count(value=7) == 1
    assert ours.index(4, start=1, stop=None) == theirs.index(4, start=1, stop=None) == 2
    with pytest.raises(TypeError):
        ours.append(item=1)


def test_list_keyword_append_converts_and_records_the_change():
    model = nnx.Sequential()
    model.layers = nnx.List()
    before = nnx.graphdef(model)
    model.layers.append(value=[nnx.Linear(1, 1, rngs=nnx.Rngs(0))])
    assert type(model.layers[0]) is nnx.List
    assert nnx.graphdef(model) != before
    assert "kernel" in nnx.state(model)["layers"][0][0]


def test_dict_methods_take_flax_parameter_names_by_keyword():
    from flax import nnx as flax_nnx

    ours, theirs = nnx.Dict(a=1, b=2), flax_nnx.Dict(a=1, b=2)
    for d in (ours, theirs):
        assert d.pop(key="a") == 1
        assert d.pop("zz", default=5) == 5
        assert d.get(key="b", default=0) == 2 and d.get(key="q") is None
        with pytest.raises(KeyError):
            d.pop(key="missing")
    assert dict(ours) == dict(theirs) == {"b": 2}


def test_sequential_passes_rngs_to_layers_that_name_it_like_flax():
    from flax import nnx as flax_nnx

    def run(lib):
        seen = []

        class Takes(lib.Module):
            def __call__(self, x, *, rngs=None):
                seen.append(("takes", rngs is not None))
                return x + 1

        class Plain(lib.Module):
            def __call__(self, x, **kwargs):
                seen.append(("plain", kwargs))
                return (x, x)

        def join(x, y, rngs=None):
            seen.append(("join", rngs is not None))
            return x + y

        model = lib.Sequential(Takes(), Plain(), join)
        out = model(jnp.ones(2), rngs=lib.Rngs(0))
        out_without = model(jnp.ones(2))
        return out.tolist(), out_without.tolist(), seen

    assert run(nnx) == run(flax_nnx) == (
        [4.0, 4.0], [4.0, 4.0],
        [("takes", True), ("plain", {}), ("join", True),
         ("takes", False), ("plain", {}), ("join", False)])


def test_sequential_rngs_drive_dropout():
    model = nnx.Sequential(nnx.Dropout(0.5), nnx.Dropout(0.5))
    a = model(jnp.ones(64), rngs=nnx.Rngs(dropout=0))
    b = model(jnp.ones(64), rngs=nnx.Rngs(dropout=0))
    c = model(jnp.ones(64), rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and set(np.unique(a).tolist()) <= {0.0, 4.0}
