"""The remaining flax.nnx 0.12 names: capture, views, variable options and defaults,
traversals, proxy_caller, tracers, deprecations, helpers, module paths, and the lifted
transforms (split_inputs/merge_inputs, pmap, make_jaxpr, compat)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib.transforms.general import merge_inputs, split_inputs


class Probe(nnx.Module):
    def __init__(self):
        self.inner = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def __call__(self, x):
        self.sow(nnx.Intermediate, "seen", x)
        self.inner.sow(nnx.Intermediate, "twice", 2 * x)
        return 3 * self.perturb("grad_here", x)


class FlaxProbe(flax_nnx.Module):
    def __init__(self):
        self.inner = flax_nnx.Linear(2, 2, rngs=flax_nnx.Rngs(0))

    def __call__(self, x):
        self.sow(flax_nnx.Intermediate, "seen", x)
        self.inner.sow(flax_nnx.Intermediate, "twice", 2 * x)
        return 3 * self.perturb("grad_here", x)


def _flat(state):
    return {p: jax.tree.map(lambda a: a.tolist(), v.get_value())
            for p, v in (state.flat_state() if isinstance(state, nnx.State)
                         else flax_nnx.to_flat_state(state))}


def test_capture_returns_sown_values_like_flax_and_leaves_no_trace():
    model = Probe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = nnx.capture(model, nnx.Intermediate, nnx.Perturbation)(jnp.ones(2))
        theirs = flax_nnx.capture(FlaxProbe(), flax_nnx.Intermediate,
                                  flax_nnx.Perturbation)(jnp.ones(2))
    assert ours[0].tolist() == theirs[0].tolist() == [3.0, 3.0]
    # a Perturbation is an Intermediate: it goes to the first type that takes it
    assert _flat(ours[1]) == _flat(theirs[1]) and _flat(ours[2]) == _flat(theirs[2]) == {}
    assert _flat(ours[1])[("grad_here",)] == [0.0, 0.0]
    assert sorted(vars(model)) == ["inner"]  # nothing left behind
    _, perturbations = nnx.capture(model, nnx.Perturbation)(jnp.ones(2))
    assert list(perturbations) == ["grad_here"]


def test_capture_forms_and_init():
    model = Probe()
    _, a = nnx.capture(model.__call__, nnx.Intermediate)(jnp.ones(2))
    _, b = nnx.capture(lambda m, x: m(x), nnx.Intermediate)(model, jnp.ones(2))
    assert sorted(a) == sorted(b) == ["inner", "seen"]  # no Perturbation store: not kept
    out = nnx.capture(model, init={"grad_here": nnx.Perturbation(jnp.ones(2))})(jnp.ones(2))
    assert out.tolist() == [6.0, 6.0]  # no types asked for: the result alone, as flax
    decorated = nnx.capture(nnx.Intermediate)(model)
    assert sorted(decorated(jnp.ones(2))[1]) == ["inner", "seen"]


def test_capture_method_outputs_records_each_method_by_name():
    class Inner(nnx.Module):
        def __call__(self, x):
            return 2 * x

        def twice(self, x):
            return self(self(x))

    class Outer(nnx.Module):
        def __init__(self):
            self.inner = Inner()

        def __call__(self, x):
            return self.inner.twice(x) + 1

    model = Outer()
    y, outputs = nnx.capture(model, nnx.Intermediate,
                             method_outputs=nnx.Intermediate)(jnp.ones(1))
    assert y.tolist() == [5.0]
    assert [v.tolist() for v in outputs["__call__"].value] == [[5.0]]
    assert [v.tolist() for v in outputs["inner"]["__call__"].value] == [[2.0], [4.0]]
    assert [v.tolist() for v in outputs["inner"]["twice"].value] == [[4.0]]
    assert Inner.twice.__name__ == "twice" and not hasattr(Inner.twice, "__wrapped__")
    assert "__captures__" not in vars(model) and model(jnp.ones(1)).tolist() == [5.0]


def test_capture_reaches_values_sown_inside_transforms():
    class Model(nnx.Module):
        @nnx.jit
        def __call__(self, x):
            self.sow(nnx.Intermediate, "h", 2 * x)
            return 3 * self.perturb("p", x)

    model = Model()
    _, perturbations = nnx.capture(model, nnx.Perturbation)(jnp.ones(2))

    def loss(model, perturbations, x):
        y, sown = nnx.capture(model, nnx.Intermediate, init=perturbations)(x)
        return y.sum(), sown

    grads, sown = nnx.grad(loss, argnums=1, has_aux=True)(model, perturbations, jnp.ones(2))
    assert grads["p"][...].tolist() == [3.0, 3.0]  # d(sum 3 (x + p)) / dp
    assert sown["h"].value[0].tolist() == [2.0, 2.0]


def test_capture_errors():
    with pytest.raises(TypeError, match="cannot find the module"):
        nnx.capture(lambda x: x, nnx.Intermediate)(1.0)
    with pytest.raises(TypeError, match="expected a Variable"):
        nnx.capture(Probe(), init={"grad_here": 1.0})(jnp.ones(2))


def test_a_failing_capture_leaves_the_module_as_it_was():
    class Broken(nnx.Module):
        def __call__(self, x):
            self.sow(nnx.Intermediate, "h", x)
            raise RuntimeError("boom")

    model = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(1.0)
    assert vars(model) == {} and not hasattr(Broken.__call__, "__wrapped__")


def test_with_attributes_is_a_view_and_view_info_lists_flags():
    model = nnx.Sequential(nnx.Dropout(0.5), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
    copy = nnx.with_attributes(model, deterministic=True, use_running_average=True)
    assert copy.layers[0].deterministic and not model.layers[0].deterministic
    assert copy.layers[1].scale[...] is model.layers[1].scale[...]
    with pytest.raises(ValueError, match="nothing was set"):
        nnx.with_attributes(model, no_such_flag=True)
    info = nnx.view_info(model)
    assert "BatchNorm:\n  use_running_average: bool = False" in info
    assert "Dropout:\n  deterministic: bool = False" in info
    assert "BatchNorm" not in nnx.view_info(model, only=nnx.Dropout)


def test_tuple_helpers_are_sows_defaults():
    assert nnx.module.tuple_init() == () and nnx.module.tuple_reduce((1,), 2) == (1, 2)


def test_var_defaults_and_default_metadata_match_flax():
    ours, theirs = nnx.Param(jnp.ones(2)), flax_nnx.Param(jnp.ones(2))
    for key in ("hijax", "ref", "eager_sharding"):
        assert ours.get_metadata(key) == theirs.get_metadata()[key]
        assert getattr(ours, key) == getattr(theirs, key)
    assert nnx.var_defaults() == nnx.variablelib.VarDefaults(False, False)
    with nnx.var_defaults(ref=True):
        assert nnx.Param(1.0).ref and nnx.var_defaults().ref
    assert not nnx.Param(1.0).ref
    assert ours.get_metadata(exclude_required=True) == {}  # defaults are not stored


def test_with_vars_copies_with_options():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    copy = nnx.with_vars(model, ref=True, mutable=False, only=nnx.PathContains("kernel"))
    assert copy.kernel.ref and copy.kernel.mutable is False and not copy.bias.ref
    assert not model.kernel.ref and copy.kernel is not model.kernel
    assert nnx.vars_as(model, hijax=True).bias.hijax

    class Tied(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(1.0)
            self.b = self.a

    with pytest.raises(ValueError, match="allow_duplicates"):
        nnx.with_vars(Tied(), ref=True)
    tied = nnx.with_vars(Tied(), ref=True, allow_duplicates=True)
    assert tied.a is tied.b and tied.a.ref


def test_variable_call_and_positional_set_metadata():
    assert nnx.Variable(lambda x: 2 * x)(4) == 8
    p = nnx.Param(0.0)
    p.set_metadata("note", "x")
    assert p.note == "x"
    assert nnx.Initializer is nnx.initializers.Initializer


def test_traversals_match_flax():
    xs = {"foo": 1, "bar": {"a": 2, "b": {}}}
    assert nnx.traversals.flatten_mapping(xs) == flax_nnx.traversals.flatten_mapping(xs)
    assert nnx.traversals.flatten_to_sequence(xs) == \
        flax_nnx.traversals.flatten_to_sequence(xs)
    flat = nnx.traversals.flatten_mapping(xs, sep="/")
    assert flat == flax_nnx.traversals.flatten_mapping(xs, sep="/")
    assert nnx.traversals.unflatten_mapping(flat, sep="/") == {"foo": 1, "bar": {"a": 2}}
    kept = nnx.traversals.flatten_mapping(xs, keep_empty_nodes=True)
    assert kept[("bar", "b")] is nnx.traversals.empty_node
    assert nnx.traversals.unflatten_mapping(kept) == xs


def test_proxy_caller_records_the_path():
    calls = []
    proxy = nnx.proxy_caller.CallableProxy(lambda acc, *a: calls.append((acc, a)) or 7)
    assert proxy.encoder.layers[2](1) == 7
    accessor, args = calls[0]
    assert args == (1,)

    class Net:
        encoder = type("E", (), {"layers": [0, 1, "target"]})

    assert accessor(Net()) == "target"


def test_trace_state_knows_its_trace():
    outer = nnx.tracers.TraceState()
    assert outer.is_valid()
    assert not bool(jax.jit(lambda: jnp.asarray(outer.is_valid()))())


def test_deprecated_alias_warns_and_delegates():
    def new(x):
        return x + 1

    old = nnx.deprecations.deprecated(new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old(1) == 2
    assert caught[0].category is DeprecationWarning


def test_helpers():
    assert nnx.helpers.List is nnx.List and nnx.helpers.has_keyword_arg(
        lambda x, *, y=0: 0, "y")
    assert not nnx.helpers.has_keyword_arg(lambda x, /: 0, "x")


def test_module_paths_resolve():
    import nnxlib.rnglib

    from nnxlib.graph import SplitContext
    from nnxlib.transforms.general import split_inputs as si

    assert nnxlib.rnglib.Rngs is nnx.Rngs
    assert SplitContext is nnx.SplitContext and si is split_inputs
    assert nnx.nn.linear.Linear is nnx.Linear
    assert nnx.transforms.compilation.jit is nnx.jit
    assert nnx.transforms.iteration.pmap is nnx.pmap
    assert nnx.transforms.autodiff.remat is nnx.remat
    assert nnx.graph.map is nnx.map
    assert "map" not in vars(nnx.graph)  # nnxlib.graph's own map() is still the builtin
    assert nnx.__version__
    from nnxlib.variables import Param

    assert nnx.variables.Param is Param


def test_compat_wraps_the_same_functions():
    for name in nnx.compat.__all__:
        ours = getattr(nnx, name, None) or getattr(nnx.rnglib, name)
        assert getattr(nnx.compat, name).__wrapped__ is ours, name


class Counter(nnx.Module):
    def __init__(self):
        self.count = nnx.Variable(jnp.array(0))
        self.layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))


def test_split_merge_inputs_write_back_and_keep_identity():
    counter = Counter()

    @split_inputs
    @jax.jit
    @merge_inputs
    def step(c, x):
        c.count.value += 1
        return c, c.layer(x)

    same, y = step(counter, jnp.ones((1, 2)))
    assert same is counter and int(counter.count[...]) == 1 and y.shape == (1, 2)


def test_split_merge_inputs_return_new_modules():
    made = split_inputs(jax.jit(merge_inputs(lambda: nnx.Linear(1, 2, rngs=nnx.Rngs(3)))))()
    reference = nnx.Linear(1, 2, rngs=nnx.Rngs(3))
    assert jnp.array_equal(made.kernel[...], reference.kernel[...])


def test_pmap_maps_and_writes_back():
    n = jax.local_device_count()

    class Total(nnx.Module):
        def __init__(self):
            self.total = nnx.Variable(jnp.zeros(n))

    total, scale = Total(), nnx.Variable(jnp.array(2.0))

    @nnx.pmap(in_axes=(0, None, 0), axis_name="d")
    def step(t, s, x):
        t.total.value += jax.lax.psum(x, "d") * s[...]

    step(total, scale, jnp.ones(n))
    assert jnp.allclose(total.total[...], 2.0 * n)


def test_pmap_maps_state_by_state_axes_like_vmap():
    # a Param mapped over the devices, a BatchStat broadcast and updated in place
    n = jax.local_device_count()

    class Block(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.arange(float(n)))
            self.seen = nnx.BatchStat(jnp.array(0))

    def step(m, x):
        m.seen[...] += 1
        return m.w * x

    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    ours = Block()
    out = nnx.pmap(step, in_axes=(axes, 0), axis_name="d")(ours, jnp.ones(n))
    expected = nnx.vmap(step, in_axes=(axes, 0))(Block(), jnp.ones(n))
    np.testing.assert_allclose(out, expected)
    assert int(ours.seen[...]) == 1


def test_make_jaxpr_matches_the_pure_function():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))
    ours = nnx.make_jaxpr(lambda m, x: m(x))(layer, x)
    pure = jax.make_jaxpr(lambda b, k, x: x @ k + b)(layer.bias[...], layer.kernel[...], x)
    ours_prims = [e.primitive.name for e in ours.jaxpr.eqns]
    assert "dot_general" in ours_prims and "add" in ours_prims
    assert len(ours.jaxpr.invars) == len(pure.jaxpr.invars)
    _, shape = nnx.make_jaxpr(lambda m, x: m(x), return_shape=True)(layer, x)
    assert shape.shape == (1, 3)


def test_merge_and_map_accept_recreate_variables_like_flax():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    for recreate in (True, False):
        assert nnx.merge(graphdef, state, recreate_variables=recreate).kernel is state["kernel"]
        assert nnx.merge(graphdef, state, copy=True,
                         recreate_variables=recreate).kernel is not state["kernel"]
        assert nnx.map(lambda p, v: v, model, recreate_variables=recreate).kernel is model.kernel


def test_merge_state_cls():
    a = nnx.State({"x": {"y": nnx.Param(jnp.ones(1))}})
    b = nnx.State({"z": nnx.Param(jnp.zeros(1))})
    plain = nnx.merge_state(a, b, cls=dict)
    assert type(plain) is dict and type(plain["x"]) is dict and plain["z"] is b["z"]
    assert type(nnx.merge_state(a, b)) is nnx.State


def test_not_takes_its_filter_positionally():
    assert nnx.Not(nnx.Param)((), nnx.BatchStat(0.0))
    with pytest.raises(TypeError):
        nnx.Not(filter=nnx.Param)
