"""Tests for nnxlib.module: attribute rules, sow, perturb, iteration, modes, repr, copies."""

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

    def __call__(self, x):
        return x @ self.kernel + self.bias


class Drop(nnx.Module):
    """Stands in for a dropout layer: only the mode flag matters here."""

    def __init__(self, deterministic=False):
        self.deterministic = deterministic


class Norm(nnx.Module):
    """Stands in for a batch norm layer: running stats plus a mode flag."""

    def __init__(self, n):
        self.mean = nnx.BatchStat(jnp.zeros(n))
        self.use_running_average = False


class Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = Linear(2, 3, rngs)
        self.drop = Drop()
        self.norm = Norm(3)
        self.heads = [Linear(3, 1, rngs), Linear(3, 1, rngs)]

    def __call__(self, x):
        return self.heads[0](self.linear(x))


def flat_paths(state):
    return [p for p, _ in nnx.to_flat_state(state)]


# ------------------------------------------------------------------ attribute rules
class TestAttributeRules:
    def test_variables_are_state(self):
        m = nnx.Module()
        m.w = nnx.Param(jnp.ones(2))
        m.s = nnx.BatchStat(jnp.zeros(1))
        assert flat_paths(nnx.state(m)) == [("s",), ("w",)]

    def test_submodules_are_walked(self):
        m = Net(nnx.Rngs(0))
        assert ("linear", "kernel") in flat_paths(nnx.state(m))
        assert ("norm", "mean") in flat_paths(nnx.state(m))

    def test_plain_list_becomes_tracked_list(self):
        m = nnx.Module()
        m.layers = [nnx.Param(1.0)]
        assert type(m.layers) is nnx.List and isinstance(m.layers, list)
        m.layers.append(nnx.Param(2.0))  # an in-place change after assignment
        assert flat_paths(nnx.state(m)) == [("layers", 0), ("layers", 1)]

    def test_plain_dict_becomes_tracked_dict(self):
        m = nnx.Module()
        m.heads = {"a": nnx.Param(1.0)}
        assert type(m.heads) is nnx.Dict and isinstance(m.heads, dict)
        m.heads["b"] = nnx.Param(2.0)
        assert flat_paths(nnx.state(m)) == [("heads", "a"), ("heads", "b")]

    def test_nested_plain_containers_are_tracked(self):
        m = nnx.Module()
        m.groups = [[nnx.Param(1.0)], {"x": [nnx.Param(2.0)]}]
        assert type(m.groups[0]) is nnx.List
        assert type(m.groups[1]) is nnx.Dict and type(m.groups[1]["x"]) is nnx.List
        m.groups[0].append(nnx.Param(3.0))
        assert flat_paths(nnx.state(m)) == [
            ("groups", 0, 0), ("groups", 0, 1), ("groups", 1, "x", 0)]

    def test_tuples_of_modules(self):
        rngs = nnx.Rngs(0)
        m = nnx.Module()
        m.pair = (Linear(1, 1, rngs), Linear(1, 1, rngs))
        assert type(m.pair) is tuple
        assert flat_paths(nnx.state(m)) == [
            ("pair", 0, "bias"), ("pair", 0, "kernel"), ("pair", 1, "bias"),
            ("pair", 1, "kernel")]
        new = nnx.merge(*nnx.split(m))
        assert type(new.pair) is tuple and isinstance(new.pair[1], Linear)

    def test_namedtuple_attribute(self):
        from collections import namedtuple

        Pair = namedtuple("Pair", ["a", "b"])
        m = nnx.Module()
        m.pair = Pair(nnx.Param(1.0), 2)
        new = nnx.merge(*nnx.split(m))
        assert type(new.pair) is Pair and new.pair.b == 2 and new.pair.a is m.pair.a

    def test_arrays_are_state_not_constants(self):
        m = nnx.Module()
        m.jax_array = jnp.ones(2)
        m.np_array = np.zeros(3)
        graphdef, state = nnx.split(m)
        assert flat_paths(state) == [("jax_array",), ("np_array",)]
        new = nnx.merge(graphdef, jax.tree.map(lambda x: x + 1, state))
        np.testing.assert_array_equal(new.jax_array, [2.0, 2.0])
        np.testing.assert_array_equal(new.np_array, [1.0, 1.0, 1.0])

    def test_arrays_flow_through_jit(self):
        m = nnx.Module()
        m.offset = jnp.ones(2)
        graphdef, state = nnx.split(m)
        out = jax.jit(lambda s, x: nnx.merge(graphdef, s).offset + x)(state, jnp.ones(2))
        np.testing.assert_array_equal(out, [2.0, 2.0])
        # a new value is picked up without retracing a constant
        m.offset = jnp.zeros(2)
        out = jax.jit(lambda s: nnx.merge(graphdef, s).offset)(nnx.state(m))
        np.testing.assert_array_equal(out, [0.0, 0.0])

    def test_static_values_live_in_graphdef(self):
        m = nnx.Module()
        m.features = 3
        m.name = "net"
        m.shape = (2, 3)
        m.act = jax.nn.relu
        m.nothing = None
        graphdef, state = nnx.split(m)
        assert flat_paths(state) == []
        new = nnx.merge(graphdef, state)
        assert (new.features, new.name, new.shape, new.nothing) == (3, "net", (2, 3), None)
        assert new.act is jax.nn.relu
        other = nnx.Module()
        other.features, other.name, other.shape, other.act, other.nothing = (
            4, "net", (2, 3), jax.nn.relu, None)
        assert nnx.graphdef(other) != graphdef

    def test_python_scalars_are_static(self):
        m = nnx.Module()
        m.lr = 0.1
        assert flat_paths(nnx.state(m)) == []

    def test_private_attributes_are_ordinary(self):
        m = nnx.Module()
        m._hidden = nnx.Param(1.0)
        assert flat_paths(nnx.state(m)) == [("_hidden",)]

    def test_attributes_can_be_deleted_and_reassigned(self):
        m = nnx.Module()
        m.a = nnx.Param(1.0)
        del m.a
        assert not hasattr(m, "a")
        with pytest.raises(AttributeError):
            del m.a
        m.a = 5
        assert m.a == 5

    def test_subclass_without_super_init(self):
        class NoSuper(nnx.Module):
            def __init__(self):
                self.w = nnx.Param(1.0)

        assert flat_paths(nnx.state(NoSuper())) == [("w",)]

    def test_object_base_class(self):
        class Holder(nnx.Object):
            def __init__(self):
                self.v = nnx.Variable(1)

        assert flat_paths(nnx.state(Holder())) == [("v",)]
        assert not isinstance(Holder(), nnx.Module)


# ------------------------------------------------------------------------------ sow
class TestSow:
    def test_sow_appends_to_tuple(self):
        m = nnx.Module()
        m.sow(nnx.Intermediate, "h", 1)
        m.sow(nnx.Intermediate, "h", 2)
        assert type(m.h) is nnx.Intermediate and m.h.value == (1, 2)

    def test_sow_custom_reduce(self):
        m = nnx.Module()
        for x in (1.0, 2.0, 3.0):
            m.sow(nnx.Intermediate, "total", x, reduce_fn=lambda a, b: a + b,
                  init_fn=lambda: 0.0)
        assert m.total.value == 6.0

    def test_sow_by_collection_name(self):
        m = nnx.Module()
        m.sow("intermediates", "h", 1)
        assert type(m.h) is nnx.Intermediate

    def test_sow_other_variable_type(self):
        m = nnx.Module()
        m.sow(nnx.Cache, "seen", jnp.ones(2))
        assert type(m.seen) is nnx.Cache

    def test_sow_in_call_and_pop(self):
        class Probe(nnx.Module):
            def __init__(self):
                self.w = nnx.Param(jnp.array(2.0))

            def __call__(self, x):
                h = x * self.w
                self.sow(nnx.Intermediate, "h", h)
                return h + 1

        m = Probe()
        m(jnp.array(1.0))
        m(jnp.array(3.0))
        assert [float(v) for v in m.h.value] == [2.0, 6.0]
        popped = nnx.pop(m, nnx.Intermediate)
        assert [float(v) for v in popped["h"].value] == [2.0, 6.0]
        assert flat_paths(nnx.state(m)) == [("w",)]

    def test_sow_under_jit_via_split_merge(self):
        class Probe(nnx.Module):
            def __call__(self, x):
                self.sow(nnx.Intermediate, "h", x * 2)
                return x

        graphdef, state = nnx.split(Probe())

        @jax.jit
        def run(state, x):
            m = nnx.merge(graphdef, state)
            m(x)
            return nnx.split(m, nnx.Intermediate, ...)[1]

        intermediates = run(state, jnp.ones(2))
        np.testing.assert_array_equal(intermediates["h"].value[0], [2.0, 2.0])

    def test_sow_into_wrong_type_raises(self):
        m = nnx.Module()
        m.h = nnx.Param(1.0)
        with pytest.raises(ValueError, match=r"Module\.h holds a Param.*Intermediate"):
            m.sow(nnx.Intermediate, "h", 1)
        assert m.h.value == 1.0


# -------------------------------------------------------------------------- perturb
class Perturbed(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.array([1.0, 2.0]))

    def __call__(self, x):
        h = self.perturb("h", x * self.w)
        return jnp.sum(h ** 2)


class TestPerturb:
    def test_creates_zero_perturbation(self):
        m = Perturbed()
        out = m(jnp.array([3.0, 4.0]))
        assert float(out) == 9.0 + 64.0
        assert type(m.h) is nnx.Perturbation
        np.testing.assert_array_equal(m.h[...], [0.0, 0.0])

    def test_perturbation_is_added(self):
        m = Perturbed()
        x = jnp.array([3.0, 4.0])
        m(x)
        m.h[...] = jnp.array([1.0, 0.0])
        assert float(m(x)) == 16.0 + 64.0

    def test_gradient_wrt_intermediate(self):
        m = Perturbed()
        x = jnp.array([3.0, 4.0])
        m(x)  # creates the perturbation
        graphdef, params, perturbations = nnx.split(m, nnx.Param, nnx.Perturbation)

        def loss(params, perturbations):
            return nnx.merge(graphdef, params, perturbations)(x)

        grad_params, grad_h = jax.grad(loss, argnums=(0, 1))(params, perturbations)
        h = x * m.w[...]
        np.testing.assert_allclose(grad_h["h"][...], 2 * h)  # dL/dh
        np.testing.assert_allclose(grad_params["w"][...], 2 * h * x)  # dL/dw
        assert type(grad_h["h"]) is nnx.Perturbation

    def test_perturb_created_inside_grad(self):
        x = jnp.array([3.0, 4.0])
        graphdef, state = nnx.split(Perturbed())

        def loss(state):
            m = nnx.merge(graphdef, state)
            return m(x), nnx.state(m, nnx.Perturbation)

        _, created = jax.grad(loss, has_aux=True)(state)
        assert flat_paths(created) == [("h",)]

    def test_custom_variable_type(self):
        class Tap(nnx.Perturbation):
            pass

        m = nnx.Module()
        m.perturb("t", jnp.ones(2), variable_type=Tap)
        assert type(m.t) is Tap


# ------------------------------------------------------------------------ iteration
class TestIteration:
    def test_iter_modules(self):
        m = Net(nnx.Rngs(0))
        got = [(path, type(mod).__name__) for path, mod in m.iter_modules()]
        assert got[-1] == ((), "Net")
        assert set(got) == {
            ((), "Net"), (("drop",), "Drop"), (("heads", 0), "Linear"),
            (("heads", 1), "Linear"), (("linear",), "Linear"), (("norm",), "Norm")}
        assert [p for p, _ in nnx.iter_modules(m)] == [p for p, _ in got]

    def test_iter_modules_children_before_parents(self):
        m = Net(nnx.Rngs(0))
        paths = [p for p, _ in nnx.iter_modules(m)]
        for path in paths:
            for other in paths:
                if len(other) > len(path) and other[:len(path)] == path:
                    assert paths.index(other) < paths.index(path)

    def test_iter_modules_shared_once(self):
        m = nnx.Module()
        m.a = Drop()
        m.b = m.a
        m.me = m
        assert [p for p, _ in nnx.iter_modules(m)] == [("a",), ()]

    def test_iter_children_direct_only(self):
        m = Net(nnx.Rngs(0))
        assert [k for k, _ in m.iter_children()] == ["drop", "linear", "norm"]
        assert [k for k, _ in nnx.iter_children(m)] == ["drop", "heads", "linear", "norm"]


# ------------------------------------------------------------------ modes, set_attrs
class TestSetAttributes:
    def test_train_and_eval(self):
        m = Net(nnx.Rngs(0))
        m.eval()
        assert m.drop.deterministic is True and m.norm.use_running_average is True
        m.train()
        assert m.drop.deterministic is False and m.norm.use_running_average is False

    def test_train_eval_extra_attributes(self):
        m = Net(nnx.Rngs(0))
        m.drop.decode = False
        m.eval(decode=True)
        assert m.drop.decode is True
        m.train(decode=False)
        assert m.drop.decode is False

    def test_set_attributes_everywhere(self):
        m = nnx.Sequential(Drop(), Drop(), Norm(1))
        m.set_attributes(deterministic=True)
        assert [layer.deterministic for layer in m.layers[:2]] == [True, True]
        assert not hasattr(m.layers[2], "deterministic")

    def test_set_attributes_with_filter(self):
        m = nnx.Sequential(Drop(), Norm(1))
        m.layers[1].deterministic = False
        m.set_attributes(Drop, deterministic=True)
        assert m.layers[0].deterministic is True
        assert m.layers[1].deterministic is False
        m.set_attributes(nnx.PathContains(1), deterministic=True)
        assert m.layers[1].deterministic is True

    def test_set_attributes_missing_raises(self):
        m = nnx.Sequential(Drop())
        with pytest.raises(ValueError, match=r"no submodule.*\['nope'\]"):
            m.set_attributes(nope=1)
        m.set_attributes(nope=1, raise_if_not_found=False)
        assert not hasattr(m.layers[0], "nope")

    def test_set_attributes_does_not_replace_submodules(self):
        m = nnx.Module()
        m.deterministic = Drop()
        m.set_attributes(deterministic=True)
        assert isinstance(m.deterministic, Drop)
        assert m.deterministic.deterministic is True

    def test_mode_change_is_structural(self):
        m = Net(nnx.Rngs(0))
        g = nnx.graphdef(m)
        m.eval()
        assert nnx.graphdef(m) != g
        m.train()
        assert nnx.graphdef(m) == g


# ----------------------------------------------------------------------------- repr
class TestRepr:
    def test_readable(self):
        text = repr(Net(nnx.Rngs(0)))
        assert text.startswith("Net(  # Param: ")
        assert "  linear=Linear(  # Param: 9 (36 B)\n" in text  # kernel 2x3 + bias 3
        assert "    kernel=Param(" in text
        assert "  heads=List([\n    Linear(  # Param: " in text
        assert "deterministic=False," in text
        assert text.endswith("\n)")

    def test_empty_module(self):
        assert repr(nnx.Module()) == "Module()"

    def test_shared_and_cycles_shown_once(self):
        m = nnx.Module()
        m.a = Drop()
        m.b = m.a
        m.items = [m.a]
        m.me = m
        text = repr(m)
        assert text.count("Drop(\n") == 1
        assert "b=<shared Drop, shown above>" in text
        assert "me=<shared Module, shown above>" in text

    def test_static_containers_stay_on_one_line(self):
        m = nnx.Module()
        m.shape = (2, 3)
        assert "shape=(2, 3)," in repr(m)


# ---------------------------------------------------------------- copies and pickle
def build_shared_model():
    m = Net(nnx.Rngs(0))
    m.tied = m.linear  # shared submodule
    m.tied_bias = m.heads[1].bias  # shared variable
    m.heads[0].parent = m  # cycle
    m.heads[1].siblings = m.heads  # cycle through a List
    m.config = {"lr": 0.1}
    m.offset = jnp.ones(2)
    return m


def check_copy(orig, new):
    assert new is not orig and type(new) is Net
    assert new.tied is new.linear
    assert new.tied_bias is new.heads[1].bias
    assert new.heads[0].parent is new
    assert new.heads[1].siblings is new.heads
    assert new.linear is not orig.linear
    assert new.linear.kernel is not orig.linear.kernel
    assert nnx.graphdef(new) == nnx.graphdef(orig)
    for (pa, a), (pb, b) in zip(nnx.to_flat_state(nnx.state(orig)),
                                nnx.to_flat_state(nnx.state(new))):
        assert pa == pb
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the copy is a working, independent module
    new.linear.kernel[...] = jnp.zeros((2, 3))
    assert float(jnp.abs(orig.linear.kernel[...]).sum()) > 0
    new.extra = nnx.Param(1.0)
    assert not hasattr(orig, "extra")
    new.heads.append(Drop())
    assert len(orig.heads) == 2


class TestCopyPickle:
    def test_deepcopy(self):
        m = build_shared_model()
        check_copy(m, copy.deepcopy(m))

    def test_pickle(self):
        m = build_shared_model()
        check_copy(m, pickle.loads(pickle.dumps(m)))

    def test_copied_model_runs(self):
        m = Net(nnx.Rngs(0))
        x = jnp.ones((1, 2))
        np.testing.assert_allclose(copy.deepcopy(m)(x), m(x))

    def test_rngs_pickle_and_deepcopy(self):
        rngs = nnx.Rngs(0, dropout=1)
        for twin in (copy.deepcopy(rngs), pickle.loads(pickle.dumps(rngs))):
            assert jnp.array_equal(jax.random.key_data(twin.dropout()),
                                   jax.random.key_data(nnx.Rngs(0, dropout=1).dropout()))

    def test_pickle_keeps_split_cache_working(self):
        m = pickle.loads(pickle.dumps(Net(nnx.Rngs(0))))
        g = nnx.graphdef(m)
        assert nnx.graphdef(m) is g
        m.new = 1
        assert nnx.graphdef(m) is not g


# ------------------------------------------------------------ nnx.data / nnx.static
def test_data_and_static_markers_match_flax_state():
    from flax import nnx as flax_nnx

    def build(lib):
        class M(lib.Module):
            def __init__(self):
                self.x = lib.data(1.5)
                self.n = lib.static(3)
                self.layers = lib.data([lib.Linear(1, 1, rngs=lib.Rngs(0))])
                self.pair = lib.data((jnp.ones(1), 2))

        return M()

    ours, theirs = build(nnx), build(flax_nnx)
    ours_flat = {p: v for p, v in nnx.to_flat_state(nnx.state(ours))}
    theirs_flat = {p: v for p, v in flax_nnx.to_flat_state(flax_nnx.state(theirs))}
    assert set(ours_flat) == set(theirs_flat)
    for path in ours_flat:
        np.testing.assert_allclose(jax.tree.leaves(ours_flat[path])[0],
                                   jax.tree.leaves(theirs_flat[path])[0])
    assert ours.n == 3

    @nnx.jit
    def bump(m):
        m.x = m.x + 1

    bump(ours)
    assert float(ours.x) == 2.5


def test_static_of_state_is_an_error():
    with pytest.raises(ValueError, match="holds state.*Hint"):
        nnx.static([nnx.Param(1.0)])
    with pytest.raises(ValueError, match="holds state"):
        nnx.static(jnp.ones(2))


# ------------------------------------------- view, set_attributes, module children
class ViewBlock(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)


def test_view_matches_flax_and_leaves_the_original_alone():
    from flax import nnx as flax_nnx

    class FlaxBlock(flax_nnx.Module):
        def __init__(self, rngs):
            self.linear = flax_nnx.Linear(2, 3, rngs=rngs)
            self.dropout = flax_nnx.Dropout(0.5, rngs=rngs)
            self.bn = flax_nnx.BatchNorm(3, rngs=rngs)

    for lib, block in ((nnx, ViewBlock(nnx.Rngs(0))), (flax_nnx, FlaxBlock(flax_nnx.Rngs(0)))):
        both = lib.view(block, deterministic=True, use_running_average=True)
        only = lib.view(block, only=lib.Dropout, deterministic=True)
        assert (both.dropout.deterministic, both.bn.use_running_average) == (True, True)
        assert (only.dropout.deterministic, only.bn.use_running_average) == (True, False)
        assert (block.dropout.deterministic, block.bn.use_running_average) == (False, False)
        # new modules, the same Variables: training the view trains the original
        assert both.linear is not block.linear and both.linear.kernel is block.linear.kernel
        copy = lib.with_attributes(block, deterministic=True)
        assert copy.dropout is not block.dropout and copy.bn.mean is block.bn.mean
        assert copy.dropout.deterministic and not block.dropout.deterministic


def test_view_calls_set_view_with_the_keywords_it_takes():
    calls = []

    class Decoder(nnx.Module):
        def __init__(self):
            self.decode = False

        def set_view(self, decode: bool | None = None, length: int = 0):
            calls.append((decode, length))
            if decode is not None:
                self.decode = decode

    model = nnx.Sequential(Decoder(), nnx.Dropout(0.5))
    view = nnx.view(model, decode=True, length=4, deterministic=True)
    assert calls == [(True, 4)] and view.layers[0].decode and view.layers[1].deterministic
    assert not model.layers[0].decode and not model.layers[1].deterministic
    with pytest.raises(ValueError, match=r"Unused keys found in nnx.view: \['lenght'\]"):
        nnx.view(model, decode=True, lenght=4)
    assert len(calls) == 1  # nothing was called before the error
    info = nnx.view_info(model)
    assert "Decoder:\n  decode: bool | None = None\n  length: int = 0" in info


def test_set_attributes_with_an_unknown_name_sets_nothing():
    block = ViewBlock(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\['detreministic'\].*nothing was set.*Hint"):
        block.set_attributes(use_running_average=True, detreministic=True)
    assert block.bn.use_running_average is False
    with pytest.raises(ValueError, match="Unused keys found in nnx.view"):
        nnx.view(block, detreministic=True)
    block.set_attributes(use_running_average=True, detreministic=True,
                         raise_if_not_found=False)
    assert block.bn.use_running_average is True


def test_iter_module_children_lists_direct_submodules_only():
    block = ViewBlock(nnx.Rngs(0))
    assert [(k, type(m).__name__) for k, m in nnx.iter_module_children(block)] == [
        ("bn", "BatchNorm"), ("dropout", "Dropout"), ("linear", "Linear")]
