"""Property-based tests: graph operations on random module graphs.

A hypothesis strategy draws a *spec* (plain data) for a random graph: a tree of Modules,
``nnx.List``/``nnx.Dict`` containers, tuples, plain lists/dicts inside tuples, with
``Param``/``BatchStat``/``Cache``/``Variable`` leaves, raw arrays and static values, plus

* shared references: a ``ref`` re-uses an already built variable, module or container at
  another position (possibly one that is still being built, which makes a cycle);
* back-references: an ``ancestor`` points at an enclosing module (a cycle).

``build(spec, seed)`` turns a spec into live objects, deterministically, with array
values drawn from ``seed``. ``canon(root)`` is an independent reference walk (it does not
use nnxlib's graph code) that lists every position in sorted-key depth-first order with
its type, static value or array value, and, for objects with identity, either a fresh
index or a reference to the index of the first position that reached the same object.
Two graphs with equal ``canon`` have the same structure, the same values and the same
sharing pattern (same object where the original had the same object, different objects
where it had different ones).
"""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnxlib as nnx

SETTINGS = settings(max_examples=75, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class ModA(nnx.Module):
    pass


class ModB(nnx.Module):
    pass


MODULE_TYPES = (ModA, ModB)
VARIABLE_TYPES = (nnx.Param, nnx.BatchStat, nnx.Cache, nnx.Variable)
SHAPES = ((), (2,), (1, 3))
DTYPES = (np.float32, np.int32)
METADATA = ({}, {"out_sharding": ("embed",)}, {"tag": "t", "note": [1, 2]})
ATTRIBUTE_NAMES = ("a", "b", "c", "layers", "w")
DICT_KEYS = ("x", "y", 0, 1, 2)


# ----------------------------------------------------------------------- strategy
statics = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["relu", "x", ""]),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
variable_specs = st.tuples(
    st.just("var"), st.integers(0, len(VARIABLE_TYPES) - 1),
    st.integers(0, len(SHAPES) - 1), st.integers(0, len(DTYPES) - 1),
    st.integers(0, len(METADATA) - 1))
leaf_specs = st.one_of(
    variable_specs,
    variable_specs,
    st.tuples(st.just("array"), st.integers(0, len(SHAPES) - 1),
              st.integers(0, len(DTYPES) - 1), st.booleans()),
    st.tuples(st.just("static"), statics),
    st.tuples(st.just("ref"), st.integers(0, 50)),
    st.tuples(st.just("ancestor"), st.integers(0, 10)),
)


def module_specs(children):
    return st.tuples(
        st.just("module"), st.integers(0, len(MODULE_TYPES) - 1),
        st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), children, max_size=4).map(
            lambda d: tuple(sorted(d.items()))))


def container_specs(children):
    items = st.lists(children, max_size=3).map(tuple)
    entries = st.dictionaries(st.sampled_from(DICT_KEYS), children, max_size=3).map(
        lambda d: tuple(d.items()))
    return st.one_of(
        module_specs(children),
        module_specs(children),
        st.tuples(st.just("list"), items),
        st.tuples(st.just("dict"), entries),
        st.tuples(st.just("tuple"), items),
        st.tuples(st.just("plainlist"), items),  # stays plain only inside tuples
        st.tuples(st.just("plaindict"), entries),
    )


graph_specs = module_specs(st.recursive(leaf_specs, container_specs, max_leaves=14))


# ------------------------------------------------------------------------ builder
class Builder:
    """Materialise a spec; ``pool`` holds every object with identity in build order."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.pool = []
        self.ancestors = []

    def array(self, shape_index, dtype_index):
        shape, dtype = SHAPES[shape_index], DTYPES[dtype_index]
        if dtype == np.int32:
            return self.rng.integers(-100, 100, size=shape).astype(np.int32)
        return self.rng.normal(size=shape).astype(np.float32)

    def build(self, spec):
        kind = spec[0]
        if kind == "module":
            module = MODULE_TYPES[spec[1]]()
            self.pool.append(module)
            self.ancestors.append(module)
            for name, child in spec[2]:
                setattr(module, name, self.build(child))
            self.ancestors.pop()
            return module
        if kind == "list":
            items = nnx.List()
            self.pool.append(items)
            for child in spec[1]:
                items.append(self.build(child))
            return items
        if kind == "dict":
            table = nnx.Dict()
            self.pool.append(table)
            for key, child in spec[1]:
                table[key] = self.build(child)
            return table
        if kind == "tuple":
            return tuple(self.build(child) for child in spec[1])
        if kind == "plainlist":
            return [self.build(child) for child in spec[1]]
        if kind == "plaindict":
            return {key: self.build(child) for key, child in spec[1]}
        if kind == "var":
            _, type_index, shape_index, dtype_index, meta_index = spec
            var = VARIABLE_TYPES[type_index](
                jnp.asarray(self.array(shape_index, dtype_index)),
                **copy.deepcopy(METADATA[meta_index]))
            self.pool.append(var)
            return var
        if kind == "array":
            value = self.array(spec[1], spec[2])
            return jnp.asarray(value) if spec[3] else value
        if kind == "static":
            return spec[1]
        if kind == "ref":
            return self.pool[spec[1] % len(self.pool)] if self.pool else None
        if kind == "ancestor":
            return self.ancestors[spec[1] % len(self.ancestors)]
        raise AssertionError(spec)


def build(spec, seed=0):
    return Builder(seed).build(spec)


# ------------------------------------------------------------ reference walker
def key_order(key):
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


def children(x):
    if isinstance(x, nnx.Module):
        items = vars(x).items()
    elif isinstance(x, dict):
        items = x.items()
    else:
        items = enumerate(x)
    return sorted(items, key=lambda kv: key_order(kv[0]))


def array_key(x):
    a = np.asarray(x)
    return ("array", a.dtype.str, a.shape, a.tobytes())


def walk(root):
    """Yield ``(path, event)`` for every position, depth-first in sorted-key order."""
    index_of = {}

    def visit(x, path):
        if isinstance(x, (nnx.Variable, nnx.Module, nnx.List, nnx.Dict)):
            if id(x) in index_of:
                yield path, ("ref", index_of[id(x)]), x
                return
            index_of[id(x)] = len(index_of)
            if isinstance(x, nnx.Variable):
                yield path, ("var", type(x), x.get_metadata(), array_key(x[...])), x
                return
            yield path, ("node", type(x)), x
        elif isinstance(x, (tuple, list, dict)):
            yield path, ("pytree", type(x)), x
        elif isinstance(x, (jax.Array, np.ndarray)):
            yield path, array_key(x), x
            return
        else:
            yield path, ("static", x), x
            return
        for key, child in children(x):
            yield from visit(child, path + (key,))

    yield from visit(root, ())


def canon(root):
    return [(path, event) for path, event, _ in walk(root)]


def structure(root):
    """``canon`` without values: what a GraphDef must capture (shapes are not in it)."""
    return [(path, event[:3] if event[0] == "var" else
             ("array",) if event[0] == "array" else event) for path, event in canon(root)]


def identities(root):
    """ids of every object with identity (modules, containers, variables)."""
    return {id(x) for _, event, x in walk(root) if event[0] in ("node", "var")}


def variable_ids(root):
    return {id(x) for _, event, x in walk(root) if event[0] == "var"}


def leaf_positions(root):
    """path -> object for the first occurrence of each variable and every raw array."""
    return {path: x for path, event, x in walk(root) if event[0] in ("var", "array")}


def flat(state):
    return list(nnx.to_flat_state(state))


# ------------------------------------------------------------------------ properties
@SETTINGS
@given(graph_specs)
def test_split_merge_round_trip(spec):
    root = build(spec)
    expected = canon(root)
    graphdef, state = nnx.split(root)
    new = nnx.merge(graphdef, state)
    assert canon(new) == expected
    assert canon(root) == expected  # split does not disturb the original
    # merge builds new nodes and re-uses the state's variables (as flax.nnx does)
    assert new is not root
    assert variable_ids(new) == variable_ids(root)
    node_ids = identities(root) - variable_ids(root)
    assert node_ids.isdisjoint(identities(new) - variable_ids(new))


@SETTINGS
@given(graph_specs)
def test_split_merge_with_new_values(spec):
    root = build(spec)
    graphdef, state = nnx.split(root)
    copied = jax.tree.map(lambda x: x, state)  # fresh Variable boxes, same values
    new = nnx.merge(graphdef, copied)
    assert canon(new) == canon(root)
    assert variable_ids(new).isdisjoint(variable_ids(root))


@SETTINGS
@given(graph_specs)
def test_clone_round_trips_and_is_disjoint(spec):
    root = build(spec)
    twin = nnx.clone(root)
    assert canon(twin) == canon(root)
    assert identities(twin).isdisjoint(identities(root))
    assert nnx.graphdef(twin) == nnx.graphdef(root)


@SETTINGS
@given(graph_specs)
def test_deepcopy_and_pickle_round_trip(spec):
    root = build(spec)
    for twin in (copy.deepcopy(root), pickle.loads(pickle.dumps(root))):
        assert canon(twin) == canon(root)
        assert identities(twin).isdisjoint(identities(root))


def plus_one(x):
    # numpy turns `0-d array + 1` into a numpy scalar; keep arrays arrays
    return np.asarray(x + 1) if isinstance(x, np.ndarray) else x + 1


@SETTINGS
@given(graph_specs)
def test_update_writes_every_value(spec):
    root = build(spec)
    graphdef, state = nnx.split(root)
    before_ids = identities(root)
    new_state = jax.tree.map(plus_one, state)
    nnx.update(root, new_state)
    # the graph now reads exactly like a merge of the new state ...
    assert canon(root) == canon(nnx.merge(graphdef, new_state))
    # ... with the structure and the objects it had before
    assert nnx.graphdef(root) == graphdef
    assert identities(root) == before_ids
    for (path, got), (_, want) in zip(flat(nnx.state(root)), flat(new_state)):
        got = got[...] if isinstance(got, nnx.Variable) else got
        np.testing.assert_array_equal(got, want[...] if isinstance(want, nnx.Variable)
                                      else want)


FILTER_SETS = (
    (nnx.Param, ...),
    (nnx.Param, nnx.BatchStat, ...),
    ("batch_stats", nnx.Not(nnx.Variable), ...),
    (nnx.PathContains("a"), nnx.PathContains(0), nnx.Everything()),
    (nnx.WithTag("t"), nnx.Any(nnx.Cache, jax.Array), True),
    (nnx.All(nnx.Variable, nnx.Not(nnx.Param)), nnx.Nothing(), ...),
)


@SETTINGS
@given(graph_specs, st.sampled_from(FILTER_SETS), st.randoms(use_true_random=False))
def test_split_with_filters_and_merge_all_parts(spec, filters, random):
    root = build(spec)
    graphdef, *parts = nnx.split(root, *filters)
    assert len(parts) == len(filters)
    paths = [[p for p, _ in flat(part)] for part in parts]
    all_paths = [p for p, _ in flat(nnx.state(root))]
    assert sorted(sum(paths, []), key=lambda p: tuple(map(key_order, p))) == all_paths
    assert sum(len(p) for p in paths) == len(set(sum(paths, [])))  # a partition
    random.shuffle(parts)
    assert canon(nnx.merge(graphdef, *parts)) == canon(root)


@SETTINGS
@given(graph_specs)
def test_graphdef_of_independent_equal_builds(spec):
    a, b = build(spec, seed=0), build(spec, seed=1)
    ga, gb = nnx.graphdef(a), nnx.graphdef(b)
    assert ga is not gb
    assert ga == gb and hash(ga) == hash(gb)
    state_b = nnx.state(b)
    assert canon(nnx.merge(ga, state_b)) == canon(b)  # either graphdef fits either state


@SETTINGS
@given(graph_specs, graph_specs)
def test_graphdef_equality_is_structural_equality(spec_a, spec_b):
    a, b = build(spec_a), build(spec_b)
    assert (nnx.graphdef(a) == nnx.graphdef(b)) == (structure(a) == structure(b))


@SETTINGS
@given(graph_specs)
def test_state_paths_are_first_occurrence_paths(spec):
    root = build(spec)
    expected = leaf_positions(root)
    state = flat(nnx.state(root))
    assert [p for p, _ in state] == sorted(expected, key=lambda p: tuple(map(key_order, p)))
    for path, leaf in state:
        assert leaf is expected[path]
    assert len(state) == len(nnx.graphdef(root).paths)


@SETTINGS
@given(graph_specs)
def test_structure_cache(spec):
    root = build(spec)
    graphdef, state = nnx.split(root)
    assert nnx.split(root)[0] is graphdef
    nnx.update(root, jax.tree.map(lambda x: x * 2, state))  # values only
    assert nnx.graphdef(root) == graphdef
    again = nnx.graphdef(root)
    assert nnx.graphdef(root) is again
    root.brand_new_attribute = nnx.Param(jnp.zeros(1))  # structural
    changed = nnx.graphdef(root)
    assert changed is not again and changed != graphdef
    del root.brand_new_attribute
    assert nnx.graphdef(root) == graphdef


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_specs)
def test_round_trip_through_jit(spec):
    root = build(spec)
    graphdef, state = nnx.split(root)

    @jax.jit
    def identity(state):
        return nnx.state(nnx.merge(graphdef, state))

    assert canon(nnx.merge(graphdef, identity(state))) == canon(root)
