"""What the graph walker reads besides modules and containers: JAX pytrees it has no
NodeImpl for, namedtuples, bare leaves as roots, and states held by modules
(nnxlib.graph._node_types, containers.TrackedState); compared with flax.nnx where it has the
same behaviour."""

import collections
import dataclasses
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx
from flax import struct

import nnxlib as nnx
from nnxlib.graph._graphdef import plan_for


def flat_paths(state):
    return [path for path, _ in nnx.to_flat_state(state)]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Registered:
    z_param: Any
    a_value: Any


@struct.dataclass
class Frozen:
    w: Any
    name: str = struct.field(pytree_node=False)


Point = collections.namedtuple("Point", ["y", "x"])


# ------------------------------------------------------------------ JAX pytrees
class TestJaxPytrees:
    def test_registered_dataclass_is_walked_with_field_names_like_flax(self):
        for lib in (nnx, flax_nnx):
            tree = Registered(z_param=lib.Param(jnp.array(1.0)), a_value=jnp.array(2.0))
            graphdef, state = lib.split(tree)
            assert [p for p, _ in lib.to_flat_state(state)] == [("a_value",), ("z_param",)]
            back = lib.merge(graphdef, state)
            assert type(back) is Registered and back.z_param is tree.z_param
            assert float(back.a_value) == 2.0

    def test_a_registered_dataclass_without_state_stays_static(self):
        graphdef, state = nnx.split(nnx.List([Registered(1, "b")]))
        assert len(state) == 0 and nnx.merge(graphdef, state)[0] == Registered(1, "b")

    def test_frozen_struct_dataclass_as_attribute(self):
        class Holder(nnx.Module):
            def __init__(self):
                self.tree = nnx.data(Frozen(nnx.Param(jnp.ones(2)), "tag"))

        model = Holder()
        graphdef, state = nnx.split(model)
        assert flat_paths(state) == [("tree", "w")]
        doubled = jax.tree.map(lambda x: 2 * x, state)
        copy = nnx.merge(graphdef, doubled)
        assert copy.tree.name == "tag" and copy.tree.w[...].tolist() == [2.0, 2.0]
        nnx.update(model, doubled)
        assert model.tree.w[...].tolist() == [2.0, 2.0]

        @nnx.jit
        def bump(m):
            m.tree.w[...] += 1

        bump(model)
        assert model.tree.w[...].tolist() == [3.0, 3.0]

    def test_mutable_containers_of_unknown_types_are_still_refused(self):
        @jax.tree_util.register_dataclass
        @dataclasses.dataclass
        class Mutable:
            w: Any

        with pytest.raises(ValueError, match="Cannot assign Holder.tree.*frozen dataclass"):
            class Holder(nnx.Module):
                def __init__(self):
                    self.tree = Mutable(nnx.Param(1.0))

            Holder()

    def test_namedtuple_keys_are_field_names_like_flax(self):
        for lib in (nnx, flax_nnx):
            tree = Point(y=lib.Param(jnp.array(1.0)), x=lib.Param(jnp.array(2.0)))
            graphdef, state = lib.split(tree)
            assert [p for p, _ in lib.to_flat_state(state)] == [("x",), ("y",)]
            back = lib.merge(graphdef, state)
            assert type(back) is Point and back.y is tree.y and back.x is tree.x

    def test_namedtuple_attribute_in_a_module(self):
        class Holder(nnx.Module):
            def __init__(self):
                self.point = Point(nnx.Param(1.0), jnp.array(2.0))

        graphdef, state = nnx.split(Holder())
        assert flat_paths(state) == [("point", "x"), ("point", "y")]
        assert nnx.merge(graphdef, state).point.x.tolist() == 2.0


# --------------------------------------------------------------------- bare leaves
class TestLeafRoots:
    @pytest.mark.parametrize("make", [lambda lib: 42, lambda lib: jnp.arange(3),
                                      lambda lib: lib.Param(1.0)])
    def test_split_of_a_leaf_is_the_leaf_like_flax(self, make):
        for lib in (nnx, flax_nnx):
            leaf = make(lib)
            graphdef, state = lib.split(leaf)
            assert state is leaf and lib.merge(graphdef, state) is leaf

    def test_filters_and_flatten_of_a_leaf(self):
        x = jnp.array(1.0)
        graphdef, arrays, rest = nnx.split(x, jax.Array, ...)
        assert arrays is x and len(rest) == 0 and nnx.merge(graphdef, arrays, rest) is x
        graphdef, flat = nnx.graphlib.flatten(x)
        assert flat[0] == ((), x) and nnx.merge(graphdef, flat) is x
        assert nnx.graphlib.unflatten(graphdef, flat) is x


# ------------------------------------------------------------------- held states
class Sgd(nnx.Object):
    def __init__(self, params):
        self.params = nnx.State(params)


class TestStateAttributes:
    def make(self):
        return Sgd({"layer": {"w": nnx.Param(jnp.ones(2))}, "b": nnx.Param(jnp.zeros(1))})

    def test_a_state_attribute_is_state_and_rebuilds_as_a_state(self):
        opt = self.make()
        assert isinstance(opt.params, nnx.State)
        graphdef, state = nnx.split(opt)
        assert flat_paths(state) == [("params", "b"), ("params", "layer", "w")]
        copy = nnx.merge(graphdef, state)
        assert isinstance(copy.params, nnx.State) and copy.params["layer"]["w"] is opt.params.layer.w
        assert [x.shape for x in jax.tree.leaves(opt)] == [(1,), (2,)]

    def test_every_change_to_a_held_state_is_seen_by_the_cached_plan(self):
        opt = self.make()
        routes = [
            lambda p: p.__setitem__("c", nnx.Param(1.0)),
            lambda p: p.__delitem__("b"),
            lambda p: p["layer"].__setitem__("v", nnx.Param(2.0)),  # a nested view
            lambda p: setattr(p, "d", nnx.BatchStat(3.0)),
            lambda p: p.update({"e": nnx.Param(4.0)}),
            lambda p: p["layer"].pop("w"),
        ]
        for route in routes:
            before = plan_for(opt)
            route(opt.params)
            assert not before.is_valid()
            fresh = nnx.graph.flatten(opt)[0]
            assert nnx.graphdef(opt) == fresh  # a cached structure equals a fresh walk

    def test_held_state_through_jit_and_pickle(self):
        opt = self.make()

        @nnx.jit
        def step(o):
            o.params["layer"]["w"][...] *= 3

        step(opt)
        assert opt.params["layer"]["w"][...].tolist() == [3.0, 3.0]
        again = pickle.loads(pickle.dumps(opt))
        assert isinstance(again.params, nnx.State)
        assert again.params["layer"]["w"][...].tolist() == [3.0, 3.0]


# ------------------------------------------------------------------- tree mode
class TestTreeModeRefusesOpaqueNodes:
    class Opaque(nnx.Pytree, pytree=False):
        def __init__(self):
            self.x = nnx.Param(1.0)

    def test_pytree_false_nodes_in_tree_mode(self):
        node = nnx.List([self.Opaque()])
        for call in (lambda: nnx.split(node, graph=False),
                     lambda: list(nnx.iter_graph(node, graph=False)),
                     lambda: nnx.recursive_map(lambda p, x: x, node, graph=False)):
            with pytest.raises(ValueError, match=r"pytree=False.*Found at path: `\[0\]`"):
                call()
        with pytest.raises(ValueError, match="pytree=False"):
            list(nnx.iter_children(self.Opaque(), graph=False))
        assert len(nnx.state(node, graph=True)) == 1  # graph mode walks it


def test_recursive_map_works_on_a_copy_and_leaves_the_original_alone():
    model = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    kernel = model.layers[0].kernel
    seen = []

    def zero(path, x):
        seen.append(path)
        return nnx.Param(jnp.zeros_like(x[...])) if isinstance(x, nnx.Param) else x

    new = nnx.recursive_map(zero, model)
    assert float(new.layers[0].kernel[...].sum()) == 0.0
    # flax.nnx copies the modules too, but writes f's new variables into the shared
    # original ones; nnxlib leaves the original model as it was
    assert model.layers[0].kernel is kernel and float(kernel[...].sum()) != 0.0
    assert new.layers[0] is not model.layers[0] and ("layers", 0, "kernel") in seen
    same = nnx.recursive_map(lambda p, x: x, model)
    assert same is not model and same.layers[0].kernel is kernel  # variables shared


def test_array_values_of_a_tree():
    tree = {"a": np.ones(2), "b": [nnx.Param(jnp.zeros(1))]}
    assert flat_paths(nnx.state(tree)) == [("a",), ("b", 0)]
