"""The structure cache can never go stale: regressions for every container route.

After each mutation, ``split``/``state``/``graphdef`` (cached) must give exactly what a
fresh, uncached walk of the graph gives, and a jitted function must see the mutation.
"""

import copy

import jax.numpy as jnp
import pytest

import nnxlib as nnx
from nnxlib.graph import _graphdef


class Leaf(nnx.Module):
    def __init__(self, n: int = 2, seed: int = 0):
        self.w = nnx.Param(jnp.full((n,), float(seed)))


class Holder(nnx.Module):
    pass


def fresh_walk(node):
    graphdef, leaves, _ = _graphdef.flatten(node)
    return graphdef, leaves


def assert_cache_matches_walk(node):
    graphdef, leaves = fresh_walk(node)
    assert nnx.graphdef(node) == graphdef
    paths, state_leaves = nnx.state(node)._flat()
    assert paths == graphdef.paths
    assert all(a is b for a, b in zip(state_leaves, leaves))
    cached = _graphdef.plan_for(node)
    assert cached.graphdef.paths == graphdef.paths
    assert all(a is b for a, b in zip(cached.leaves(), leaves))
    assert len(cached.leaves()) == len(leaves)


@nnx.jit
def count_params(m):
    return sum(1 for _, v in nnx.iter_graph(m) if isinstance(v, nnx.Param))


def params_seen_by_jit(m) -> int:
    return int(count_params(m))


def params_seen_eagerly(m) -> int:
    return sum(1 for _, v in nnx.iter_graph(m) if isinstance(v, nnx.Param))


def check(m):
    assert_cache_matches_walk(m)
    assert params_seen_by_jit(m) == params_seen_eagerly(m)


def test_list_inside_tuple_attribute():
    m = Holder()
    m.t = ([],)
    check(m)
    m.t[0].append(Leaf())
    check(m)
    assert params_seen_by_jit(m) == 1


def test_list_stored_into_dict_after_a_jitted_call():
    m = Holder()
    m.blocks = nnx.Dict()
    m.blocks["enc"] = []
    check(m)
    m.blocks["enc"].append(Leaf())
    check(m)
    assert params_seen_by_jit(m) == 1
    assert type(m.blocks["enc"]) is nnx.List


def test_list_stored_into_list_item():
    m = Holder()
    m.layers = [None]
    check(m)
    m.layers[0] = [Leaf()]
    check(m)
    m.layers[0].append(Leaf())
    check(m)
    assert params_seen_by_jit(m) == 2


@pytest.mark.parametrize("route", [
    "setdefault", "insert", "extend", "iadd", "pop", "del", "slice_set", "slice_del",
    "dict_update", "dict_ior", "dict_pop", "popitem", "clear", "reverse", "remove",
    "tuple_in_dict", "nested_setdefault",
])
def test_every_container_route(route):
    m = Holder()
    m.items = [Leaf(seed=1), Leaf(seed=2)]
    m.table = {"a": Leaf(seed=3)}
    check(m)
    if route == "setdefault":
        m.table.setdefault("b", []).append(Leaf())
    elif route == "insert":
        m.items.insert(0, [Leaf()])
        m.items[0].append(Leaf())
    elif route == "extend":
        m.items.extend([[Leaf()], {"x": Leaf()}])
        m.items[2].append(Leaf())
        m.items[3]["y"] = Leaf()
    elif route == "iadd":
        m.items += [[Leaf()]]
        m.items[-1].append(Leaf())
    elif route == "pop":
        m.items.pop()
    elif route == "del":
        del m.items[0]
        del m.table["a"]
    elif route == "slice_set":
        m.items[0:1] = [[Leaf()], [Leaf(), Leaf()]]
        m.items[1].append(Leaf())
    elif route == "slice_del":
        del m.items[:]
    elif route == "dict_update":
        m.table.update({"b": [Leaf()]}, c=[])
        m.table["c"].append(Leaf())
    elif route == "dict_ior":
        m.table |= {"b": [Leaf()]}
        m.table["b"].append(Leaf())
    elif route == "dict_pop":
        m.table.pop("a")
    elif route == "popitem":
        m.table.popitem()
    elif route == "clear":
        m.items.clear()
        m.table.clear()
    elif route == "reverse":
        m.items.reverse()
    elif route == "remove":
        m.items.remove(m.items[0])
    elif route == "tuple_in_dict":
        m.table["t"] = ([Leaf()], {"z": []})
        m.table["t"][0].append(Leaf())
        m.table["t"][1]["z"].append(Leaf())
    elif route == "nested_setdefault":
        m.table.setdefault("deep", {}).setdefault("er", []).append(Leaf())
    check(m)
    # and the jitted view equals a deep copy's eager view
    assert params_seen_by_jit(m) == params_seen_eagerly(copy.deepcopy(m))


def test_sort_with_a_failing_comparison_still_invalidates():
    m = Holder()
    m.items = [Leaf(), 3]
    check(m)
    with pytest.raises(TypeError):
        m.items.sort()
    check(m)


def test_assigned_plain_list_is_converted_not_aliased():
    """Documented semantics: the graph holds a List copy of an assigned plain list."""
    m = Holder()
    plain = [Leaf()]
    m.layers = plain
    assert type(m.layers) is nnx.List and m.layers is not plain
    plain.append(Leaf())  # not part of the model
    check(m)
    assert params_seen_by_jit(m) == 1


def test_namedtuple_items_are_tracked():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    m = Holder()
    m.p = Pair([], {})
    assert type(m.p) is Pair and type(m.p.a) is nnx.List and type(m.p.b) is nnx.Dict
    m.p.a.append(Leaf())
    m.p.b["k"] = Leaf()
    check(m)
    assert params_seen_by_jit(m) == 2


def test_metadata_change_and_shape_change_are_seen():
    m = Holder()
    m.leaf = Leaf()
    check(m)
    m.leaf.w.set_metadata(tag="x")
    check(m)
    m.leaf.w.value = jnp.zeros((5,))  # a new shape: recorded for merge checks
    check(m)
    graphdef, state = nnx.split(m)
    assert nnx.merge(graphdef, state).leaf.w.shape == (5,)


def test_raw_array_attribute_shape_change_is_seen():
    m = Holder()
    m.a = jnp.zeros(2)
    graphdef, _ = nnx.split(m)
    m.a = jnp.zeros(3)
    graphdef2, state = nnx.split(m)
    assert nnx.merge(graphdef2, state).a.shape == (3,)


def test_jit_shape_change_inside_is_written_back_and_recorded():
    m = Holder()
    m.leaf = Leaf()

    @nnx.jit
    def grow(m):
        m.leaf.w.value = jnp.zeros((4,))

    grow(m)
    assert m.leaf.w.shape == (4,)
    check(m)
    graphdef, state = nnx.split(m)
    assert nnx.merge(graphdef, state).leaf.w.shape == (4,)


def test_static_values_inside_containers_are_structure():
    m = Holder()
    m.cfg = {"depth": 2}
    gd1 = nnx.graphdef(m)
    m.cfg["depth"] = 3
    assert nnx.graphdef(m) != gd1
    check(m)


def test_cycles_through_containers():
    m = Holder()
    m.children = [Leaf()]
    m.children.append(m)  # a cycle back to the root
    check(m)
    clone = nnx.clone(m)
    assert clone.children[1] is clone
