"""Stateful property test: the cached structure always equals a fresh walk.

A hypothesis ``RuleBasedStateMachine`` grows a random module graph (nested plain
lists, tuples, dicts, ``List``/``Dict``, shared submodules and variables, cycles) and
mutates it through every public route (attribute set/delete, every container method,
nested containers, metadata and value changes), interleaved with ``split``/``merge``,
``state``, ``clone``, ``update`` and jitted calls. After every step:

* ``nnx.graphdef``/``nnx.state`` (served from the cache) equal an uncached walk, and hold
  the very same variable objects in the same order;
* a deep copy walks to an equal graph definition;
* a jitted reduction over the state equals the eager one, and a jitted in-place update
  equals the same update applied eagerly.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import nnxlib as nnx
from nnxlib.graph import _graphdef

NAMES = ("a", "b", "c")


class Node(nnx.Module):
    pass


def make_leaf(seed: int) -> Node:
    node = Node()
    node.w = nnx.Param(jnp.full((2,), float(seed)))
    return node


def params_of(root):
    return [v for _, v in nnx.iter_graph(root) if isinstance(v, nnx.Param)]


@nnx.jit
def jitted_total(root):
    return sum((jnp.sum(v[...]) for v in params_of(root)), jnp.zeros(()))


@nnx.jit
def jitted_scale(root):
    for v in params_of(root):
        v[...] = v[...] * 2.0 + 1.0


class StructureCacheMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = Node()
        self.count = 0

    # ---------------------------------------------------------------- helpers
    def reachable(self, kind):
        """Every object of ``kind`` reachable from the root through attributes and
        container items (plain ones too: a user mutates whatever the attribute holds)."""
        found, seen, stack = [], set(), [self.root]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, kind):
                found.append(obj)
            if isinstance(obj, nnx.Module):
                stack.extend(vars(obj).values())
            elif isinstance(obj, (list, tuple)):
                stack.extend(obj)
            elif isinstance(obj, dict):
                stack.extend(obj.values())
        return found

    def fresh(self) -> int:
        self.count += 1
        return self.count

    def value(self, data, depth: int = 0):
        """A value to store: new or existing objects, containers of them, statics."""
        choices = ["leaf", "static", "array", "variable"]
        if depth < 2:  # containers twice as likely: they are what goes stale
            choices += ["list", "dict", "tuple", "nnx_list", "nnx_dict"] * 2
        modules = self.reachable(nnx.Module)
        variables = self.reachable(nnx.Variable)
        if modules:
            choices.append("shared_module")
        if variables:
            choices.append("shared_variable")
        kind = data.draw(st.sampled_from(choices))
        if kind == "leaf":
            return make_leaf(self.fresh())
        if kind == "static":
            return data.draw(st.integers(0, 3))
        if kind == "array":
            return jnp.full((3,), float(self.fresh()))
        if kind == "variable":
            return nnx.Param(jnp.full((2,), float(self.fresh())))
        if kind == "shared_module":
            return data.draw(st.sampled_from(modules))
        if kind == "shared_variable":
            return data.draw(st.sampled_from(variables))
        n = data.draw(st.integers(0, 2))
        items = [self.value(data, depth + 1) for _ in range(n)]
        if kind == "list":
            return items
        if kind == "nnx_list":
            return nnx.List(items)
        if kind == "tuple":
            return tuple(items)
        pairs = {NAMES[i]: item for i, item in enumerate(items)}
        return pairs if kind == "dict" else nnx.Dict(pairs)

    # ------------------------------------------------------------------ rules
    @initialize(data=st.data())
    def start_with_containers(self, data):
        """Start from a graph that already holds every kind of container, so that short
        programs reach the interesting mutations."""
        self.root.a = nnx.Dict(x=make_leaf(self.fresh()))
        self.root.b = [make_leaf(self.fresh())]
        self.root.c = ([], {"y": make_leaf(self.fresh())})
        if data.draw(st.booleans()):
            self.root.a["z"] = self.root.b[0]  # a shared reference

    @rule(data=st.data())
    def set_attribute(self, data):
        owner = data.draw(st.sampled_from(self.reachable(nnx.Module)))
        setattr(owner, data.draw(st.sampled_from(NAMES)), self.value(data))

    @rule(data=st.data())
    def delete_attribute(self, data):
        owners = [m for m in self.reachable(nnx.Module) if set(vars(m)) & set(NAMES)]
        if owners:
            owner = data.draw(st.sampled_from(owners))
            delattr(owner, data.draw(st.sampled_from(sorted(set(vars(owner)) & set(NAMES)))))

    @rule(data=st.data())
    def mutate_list(self, data):
        lists = self.reachable(list)
        if not lists:
            return
        target = data.draw(st.sampled_from(lists))
        op = data.draw(st.sampled_from(
            ["append", "insert", "extend", "iadd", "setitem", "slice_set", "pop", "del",
             "slice_del", "reverse", "clear", "remove"]))
        if op == "append":
            target.append(self.value(data))
        elif op == "insert":
            target.insert(data.draw(st.integers(-2, 2)), self.value(data))
        elif op == "extend":
            target.extend([self.value(data), self.value(data)])
        elif op == "iadd":
            target += [self.value(data)]
        elif target and op == "setitem":
            target[data.draw(st.integers(0, len(target) - 1))] = self.value(data)
        elif op == "slice_set":
            target[0:1] = [self.value(data), self.value(data)]
        elif target and op == "pop":
            target.pop()
        elif target and op == "del":
            del target[0]
        elif op == "slice_del":
            del target[:1]
        elif op == "reverse":
            target.reverse()
        elif op == "clear":
            target.clear()
        elif target and op == "remove":
            # the first item: list.remove matches it by identity, before comparing any
            # other item with == (which, for a Variable, is elementwise as for arrays)
            target.remove(target[0])

    @rule(data=st.data())
    def mutate_dict(self, data):
        dicts = self.reachable(dict)
        if not dicts:
            return
        target = data.draw(st.sampled_from(dicts))
        key = data.draw(st.sampled_from(NAMES))
        op = data.draw(st.sampled_from(
            ["setitem", "setdefault", "update", "ior", "pop", "popitem", "del", "clear",
             "setattr"]))
        if op == "setitem":
            target[key] = self.value(data)
        elif op == "setdefault":
            stored = target.setdefault(key, [])
            if isinstance(stored, list):
                stored.append(self.value(data))
        elif op == "update":
            target.update({key: self.value(data)})
        elif op == "ior":
            target |= {key: self.value(data)}
        elif op == "pop":
            target.pop(key, None)
        elif target and op == "popitem":
            target.popitem()
        elif key in target and op == "del":
            del target[key]
        elif op == "clear":
            target.clear()
        elif op == "setattr" and isinstance(target, nnx.Dict):
            setattr(target, key, self.value(data))

    # Container mutations are what goes stale: give them twice the weight of other rules.
    @rule(data=st.data())
    def mutate_list_again(self, data):
        self.mutate_list(data)

    @rule(data=st.data())
    def mutate_dict_again(self, data):
        self.mutate_dict(data)

    @rule(data=st.data())
    def change_metadata(self, data):
        variables = self.reachable(nnx.Variable)
        if variables:
            data.draw(st.sampled_from(variables)).set_metadata(tag=self.fresh())

    @rule(data=st.data())
    def replace_value(self, data):
        variables = self.reachable(nnx.Variable)
        if variables:
            var = data.draw(st.sampled_from(variables))
            size = data.draw(st.sampled_from([2, 4]))  # sometimes a new shape
            var.value = jnp.full((size,), float(self.fresh()))

    @rule()
    def split_and_merge(self):
        graphdef, state = nnx.split(self.root)
        self.root = nnx.merge(graphdef, state)

    @rule()
    def clone(self):
        self.root = nnx.clone(self.root)

    @rule()
    def update_from_own_state(self):
        state = nnx.state(self.root)
        nnx.update(self.root, jax.tree.map(lambda x: x + 1, state))

    @rule()
    def jitted_update_equals_eager(self):
        expected = copy.deepcopy(self.root)
        for v in params_of(expected):
            v[...] = v[...] * 2.0 + 1.0
        jitted_scale(self.root)
        got = [np.asarray(v[...]) for v in params_of(self.root)]
        want = [np.asarray(v[...]) for v in params_of(expected)]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b)

    # ------------------------------------------------------------- invariants
    @invariant()
    def cache_equals_fresh_walk(self):
        graphdef, leaves, _ = _graphdef.flatten(self.root)
        assert nnx.graphdef(self.root) == graphdef
        paths, state_leaves = nnx.state(self.root)._flat()
        assert paths == graphdef.paths
        assert len(state_leaves) == len(leaves)
        assert all(a is b for a, b in zip(state_leaves, leaves))
        assert nnx.graphdef(copy.deepcopy(self.root)) == graphdef

    @rule()
    def jitted_reduction_equals_eager(self):
        eager = sum((float(jnp.sum(v[...])) for v in params_of(self.root)), 0.0)
        np.testing.assert_allclose(float(jitted_total(self.root)), eager, rtol=1e-5)


StructureCacheMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestStructureCache = StructureCacheMachine.TestCase
