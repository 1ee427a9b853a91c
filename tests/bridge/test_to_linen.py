"""ToLinen / to_linen / to_linen_class: nnxlib modules used inside Flax Linen."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from bridge import ToLinen, to_linen, to_linen_class
from bridge import to_linen as to_linen_module

X = jnp.arange(12.0).reshape(3, 4) / 10


def _first_params_key(rng, name=None):
    """The key Linen's make_rng('params') gives a module at the top or at ``name``."""

    class Probe(nn.Module):
        @nn.compact
        def __call__(self):
            return self.make_rng("params")

    class Parent(nn.Module):
        @nn.compact
        def __call__(self):
            return Probe(name=name)()

    module = Probe() if name is None else Parent()
    return module.init_with_output(rng)[0]


def test_init_values_are_those_of_the_nnx_module_with_the_same_key():
    rng = jax.random.key(0)
    variables = ToLinen(nnx.Linear, args=(4, 3)).init(rng, X)
    reference = nnx.Linear(4, 3, rngs=nnx.Rngs(params=_first_params_key(rng)))
    np.testing.assert_array_equal(variables["params"]["kernel"], reference.kernel[...])
    np.testing.assert_array_equal(variables["params"]["bias"], reference.bias[...])
    assert list(variables) == ["params"]  # no graph-definition collection
    y = ToLinen(nnx.Linear, args=(4, 3)).apply(variables, X)
    np.testing.assert_allclose(y, reference(X), rtol=1e-6)


class Setup(nn.Module):
    def setup(self):
        self.inner = ToLinen(nnx.Linear, args=(4, 3))

    def __call__(self, x):
        return self.inner(x)


class Compact(nn.Module):
    @nn.compact
    def __call__(self, x):
        return ToLinen(nnx.Linear, args=(4, 3), name="inner")(x)


@pytest.mark.parametrize("parent", [Setup, Compact])
def test_inside_setup_and_compact_parents(parent):
    rng = jax.random.key(3)
    variables = parent().init(rng, X)
    reference = nnx.Linear(4, 3, rngs=nnx.Rngs(params=_first_params_key(rng, "inner")))
    np.testing.assert_array_equal(variables["params"]["inner"]["kernel"], reference.kernel[...])
    np.testing.assert_allclose(parent().apply(variables, X), reference(X), rtol=1e-6)


class NormDrop(nnx.Module):
    """Linear + BatchNorm + Dropout + a sown value, as an nnxlib module."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, train: bool = True):
        x = self.bn(self.linear(x), use_running_average=not train)
        self.sow(nnx.Intermediate, "h", x)
        return self.drop(x, deterministic=not train)

    def attend(self, x):
        return self.linear(x) * 2


def _as_nnx(variables, key):
    model = NormDrop(nnx.Rngs(params=key, dropout=key))
    model.linear.kernel[...] = variables["params"]["linear"]["kernel"]
    model.linear.bias[...] = variables["params"]["linear"]["bias"]
    model.bn.mean[...] = variables["batch_stats"]["bn"]["mean"]
    model.bn.var[...] = variables["batch_stats"]["bn"]["var"]
    return model


def test_collections_mutable_and_new_variables():
    wrapper = ToLinen(NormDrop)
    variables = wrapper.init(jax.random.key(0), X, train=False)
    assert sorted(variables) == ["batch_stats", "params"]
    assert sorted(variables["batch_stats"]["bn"]) == ["mean", "var"]
    y, updates = wrapper.apply(variables, X, rngs={"dropout": jax.random.key(1)},
                               mutable=["batch_stats"])
    assert list(updates) == ["batch_stats"]
    reference = _as_nnx(variables, jax.random.key(0))
    reference.bn(reference.linear(X))
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["mean"], reference.bn.mean[...],
                               rtol=1e-6)
    # A variable created during apply (the sown value) lands in its collection.
    y_eval, sown = wrapper.apply(variables, X, train=False, mutable=["intermediates"])
    assert list(sown) == ["intermediates"]
    (h,) = sown["intermediates"]["h"]
    np.testing.assert_allclose(y_eval, h, rtol=1e-6)
    np.testing.assert_allclose(y_eval, _as_nnx(variables, jax.random.key(0))(X, train=False),
                               rtol=1e-6)


def test_dropout_varies_with_the_key_and_needs_one():
    wrapper = ToLinen(NormDrop)
    variables = wrapper.init(jax.random.key(0), X, train=False)

    batch = jax.random.normal(jax.random.key(0), (16, 4))

    def run(seed):
        return wrapper.apply(variables, batch, rngs={"dropout": jax.random.key(seed)},
                             mutable=["batch_stats"])[0]

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    with pytest.raises(nnx.errors.MissingRngStreamError, match="dropout"):
        wrapper.apply(variables, X, mutable=["batch_stats"])
    wrapper.apply(variables, X, train=False)  # no key needed when none is drawn


def test_nnx_method_and_attribute_forwarding():
    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            inner = ToLinen(NormDrop, name="inner")
            return inner(x, train=False), inner.attend(x), inner(x, nnx_method="attend")

    variables = Parent().init(jax.random.key(0), X)
    y, attended, by_name = Parent().apply(variables, X)
    reference = _as_nnx({"params": variables["params"]["inner"],
                         "batch_stats": variables["batch_stats"]["inner"]}, jax.random.key(0))
    np.testing.assert_allclose(attended, reference.attend(X), rtol=1e-6)
    np.testing.assert_allclose(by_name, attended, rtol=1e-6)
    np.testing.assert_allclose(y, reference(X, train=False), rtol=1e-6)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        layer = to_linen(nnx.Linear, 4, 4, kernel_metadata={"out_sharding": ("embed", "mlp")})
        return jnp.tanh(layer(x)), None


def _manual_stack(kernels, biases, x):
    for k, b in zip(kernels, biases):
        x = jnp.tanh(x @ k + b)
    return x


def test_under_nn_scan_partition_name_follows_the_axis_exactly_once():
    stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3,
                    metadata_params={nn.PARTITION_NAME: "layers"})()
    variables = stack.init(jax.random.key(0), X, None)
    kernel = variables["params"]["ToLinen_0"]["kernel"]
    assert kernel.value.shape == (3, 4, 4)
    assert not np.array_equal(kernel.value[0], kernel.value[1])
    spec = nn.get_partition_spec(variables)["params"]["ToLinen_0"]["kernel"]
    assert spec == jax.sharding.PartitionSpec("layers", "embed", "mlp")
    (y, _), updates = stack.apply(variables, X, None, mutable=["params"])
    np.testing.assert_allclose(
        y, _manual_stack(kernel.value, variables["params"]["ToLinen_0"]["bias"], X), rtol=1e-5)
    # Removed on the way in, added on the way out: still exactly one "layers".
    again = nn.get_partition_spec(updates)["params"]["ToLinen_0"]["kernel"]
    assert again == spec


def test_under_nn_vmap_jit_and_remat():
    batched = nn.vmap(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(0, None), metadata_params={nn.PARTITION_NAME: "batch"})()
    xs = jnp.stack([X, X + 1])
    variables = batched.init(jax.random.key(0), xs, None)
    assert nn.get_partition_spec(variables)["params"]["ToLinen_0"]["kernel"] == \
        jax.sharding.PartitionSpec("batch", "embed", "mlp")
    y, _ = batched.apply(variables, xs, None)
    p = variables["params"]["ToLinen_0"]
    for i in range(2):
        np.testing.assert_allclose(y[i], jnp.tanh(xs[i] @ p["kernel"].value[i] + p["bias"][i]),
                                   rtol=1e-5)

    class JitRemat(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.jit(ToLinen)(nnx.Linear, args=(4, 4))(x)
            return nn.remat(ToLinen)(nnx.Linear, args=(4, 2))(x)

    variables = JitRemat().init(jax.random.key(0), X)
    p = variables["params"]
    hidden = X @ p["JitToLinen_0"]["kernel"] + p["JitToLinen_0"]["bias"]
    expected = hidden @ p["CheckpointToLinen_0"]["kernel"] + p["CheckpointToLinen_0"]["bias"]
    np.testing.assert_allclose(JitRemat().apply(variables, X), expected, rtol=1e-5)
    grads = jax.grad(lambda v: JitRemat().apply(v, X).sum())(variables)
    np.testing.assert_allclose(grads["params"]["CheckpointToLinen_0"]["bias"], [3.0, 3.0])


def test_to_linen_class_instantiates_with_overrides_and_readable_names():
    LinenLinear = to_linen_class(nnx.Linear)
    layer = LinenLinear(in_features=4, out_features=3)
    variables = layer.init(jax.random.key(0), X)
    assert variables["params"]["kernel"].shape == (4, 3)
    NoBias = to_linen_class(nnx.Linear, use_bias=False, out_features=5)
    assert list(NoBias(in_features=4).init(jax.random.key(0), X)["params"]) == ["kernel"]
    overridden = NoBias(in_features=4, use_bias=True, out_features=2)
    assert overridden.init(jax.random.key(0), X)["params"]["bias"].shape == (2,)

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = LinenLinear(in_features=4, out_features=4)(x)
            return LinenLinear(4, 2)(x)   # positional arguments work too

    variables = Parent().init(jax.random.key(0), X)
    assert sorted(variables["params"]) == ["LinearToLinen_0", "LinearToLinen_1"]
    assert Parent().apply(variables, X).shape == (3, 2)
    # Linen's transforms subclass it; the subclass accepts the arguments too.
    Batched = nn.vmap(LinenLinear, variable_axes={"params": 0}, split_rngs={"params": True})
    batched = Batched(in_features=4, out_features=3)
    variables = batched.init(jax.random.key(0), jnp.stack([X, X]))
    assert variables["params"]["kernel"].shape == (2, 4, 3)


class CountsConstruction(nnx.Module):
    concrete = 0

    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 3, rngs=rngs)
        if not isinstance(self.linear.kernel[...], jax.core.Tracer):
            CountsConstruction.concrete += 1

    def __call__(self, x):
        return self.linear(x)


@pytest.mark.parametrize("abstract_init", [True, False])
def test_abstract_init_is_honoured(abstract_init):
    from bridge import to_linen as make
    from bridge.nnx_in_linen import _STRUCTURES

    wrapper = make(CountsConstruction, abstract_init=abstract_init)
    CountsConstruction.concrete = 0
    variables = wrapper.init(jax.random.key(0), X)
    assert CountsConstruction.concrete == 1  # init materialises the module once
    wrapper.apply(variables, X)
    assert CountsConstruction.concrete == 1  # apply reuses the structure init learnt
    _STRUCTURES.clear()  # as in a fresh process that restored a checkpoint
    y = wrapper.apply(variables, X)
    assert CountsConstruction.concrete == (1 if abstract_init else 2)
    np.testing.assert_allclose(
        y, X @ variables["params"]["linear"]["kernel"] + variables["params"]["linear"]["bias"],
        rtol=1e-6)


# ------------------------------------------------------------------------ bad input
def test_an_instance_instead_of_a_class_is_an_error():
    with pytest.raises(TypeError, match="instance of Linear.*args="):
        ToLinen(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="to_linen_class"):
        to_linen_class(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))


def test_missing_collection_in_apply_is_an_error_naming_it():
    wrapper = ToLinen(NormDrop)
    variables = wrapper.init(jax.random.key(0), X, train=False)
    with pytest.raises(nnx.errors.StateMismatchError, match="batch_stats/bn/mean"):
        wrapper.apply({"params": variables["params"]}, X, train=False)


def test_missing_stream_at_init_is_an_error():
    with pytest.raises(nnx.errors.MissingRngStreamError, match="params"):
        to_linen_module(nnx.Linear, 4, 3).init({}, X)


def _counter(lib):
    @lib.register_variable_name("Steps", overwrite=True)
    class Steps(lib.Variable):
        pass

    class Counter(lib.Module):
        def __init__(self):
            self.steps = Steps(jnp.array(0))
            self.bn = lib.BatchNorm(2, use_running_average=False, rngs=lib.Rngs(0))

        def __call__(self, x):
            self.steps[...] += 1
            self.seen = lib.Intermediate(x.sum())   # a new attribute every call
            return self.bn(x)

    return Counter


def test_init_keeps_the_built_values_and_apply_writes_back_as_flax():
    from flax import nnx as fnnx
    from flax.nnx import bridge as fbridge

    x = jnp.arange(6.0).reshape(3, 2)
    results = []
    for lib, wrap in ((nnx, ToLinen), (fnnx, fbridge.ToLinen)):
        model = wrap(_counter(lib), skip_rng=True)
        variables = model.init(jax.random.key(0), x)
        _, updates = model.apply(variables, x, mutable=["Steps", "batch_stats",
                                                        "intermediates"])
        results.append((variables, updates))
    (ours_init, ours_upd), (flax_init, flax_upd) = results
    # init: what the module held when built (the call's changes are not kept)
    assert int(ours_init["Steps"]["steps"]) == 0
    np.testing.assert_array_equal(ours_init["batch_stats"]["bn"]["mean"], jnp.zeros(2))
    assert jax.tree.structure(ours_init) == jax.tree.structure(flax_init)
    # apply: the counter, the statistics and the attribute created by the call
    assert int(ours_upd["Steps"]["steps"]) == 1 and float(ours_upd["intermediates"]["seen"]) == 15
    for a, b in zip(jax.tree.leaves(ours_upd), jax.tree.leaves(flax_upd)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
