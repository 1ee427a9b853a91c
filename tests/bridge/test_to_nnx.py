"""ToNNX: Linen modules used as nnxlib modules, eagerly and under nnxlib transforms."""

import subprocess
import sys

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from bridge import ToNNX, current_linen_module, lazy_init


class Net(nn.Module):
    """Dense + BatchNorm + Dropout + a sown value: every collection kind."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        self.sow("intermediates", "h", x)
        return x


class EncDec(nn.Module):
    """Setup-style, with a second method."""

    def setup(self):
        self.enc = nn.Dense(3)
        self.dec = nn.Dense(2)
        self.bn = nn.BatchNorm(use_running_average=False)

    def encode(self, x):
        return self.enc(x)

    def __call__(self, x):
        return self.bn(self.dec(self.encode(x)))


class Counter(nn.Module):
    @nn.compact
    def __call__(self, x):
        count = self.variable("counter", "n", lambda: jnp.zeros((), jnp.int32))
        count.value += 1
        return x


def _plain_linen(model):
    """The Linen variables held by a ToNNX (values, no metadata)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState))):
        node = out.setdefault(nnx.variable_name_from_type(type(var)), {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = var.get_value()
    return out


def test_import_nnxlib_does_not_import_flax():
    code = ("import sys, nnxlib; assert 'flax' not in sys.modules, 'flax imported';"
            "b = nnxlib.bridge; assert 'flax' in sys.modules; import bridge;"
            "assert b is bridge; from nnxlib import bridge as c; assert c is bridge")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_variables_mirror_linen_tree_with_kinds():
    x = jnp.ones((2, 3))
    model = ToNNX(Net(), rngs=nnx.Rngs(0)).lazy_init(x)
    assert isinstance(model.Dense_0.kernel, nnx.Param)
    assert isinstance(model.BatchNorm_0.mean, nnx.BatchStat)
    assert model.Dense_0.kernel.shape == (3, 4)
    assert model.linen_collections == ("batch_stats", "params")
    assert not hasattr(model, "h")  # Linen's init keeps no sown values


def test_output_equals_linen_apply_and_stats_update_in_place():
    x = jax.random.normal(jax.random.key(1), (4, 3))
    model = ToNNX(Net(), rngs=nnx.Rngs(0, dropout=5)).lazy_init(x)
    variables = _plain_linen(model)
    kernel_var = model.Dense_0.kernel
    y = model(x, train=False)
    y_ref = Net().apply(variables, x, train=False)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    y_train = model(x, rngs=nnx.Rngs(dropout=3))
    ref, updates = Net().apply(variables, x, rngs={"dropout": nnx.Rngs(dropout=3).dropout()},
                               mutable=["batch_stats", "intermediates"])
    np.testing.assert_allclose(y_train, ref, rtol=1e-6)
    np.testing.assert_allclose(model.BatchNorm_0.mean[...],
                               updates["batch_stats"]["BatchNorm_0"]["mean"], rtol=1e-6)
    assert model.Dense_0.kernel is kernel_var  # same variable objects, new values
    assert isinstance(model.h, nnx.Intermediate)  # created in this call, kept


def test_mutable_narrows_and_false_updates_nothing():
    x = jnp.ones((2, 3))
    model = ToNNX(Net(), rngs=nnx.Rngs(0)).lazy_init(x)
    mean = model.BatchNorm_0.mean[...]
    model(x, train=False, mutable=False)
    assert not hasattr(model, "h")
    np.testing.assert_array_equal(model.BatchNorm_0.mean[...], mean)
    model(x, train=False, mutable=["intermediates"])
    assert hasattr(model, "h")
    np.testing.assert_array_equal(model.BatchNorm_0.mean[...], mean)
    model(x * 3, mutable=["batch_stats"])
    assert not np.array_equal(model.BatchNorm_0.mean[...], mean)


def test_counter_collection_updates_each_call():
    model = ToNNX(Counter()).lazy_init(1.0)
    assert int(model.n[...]) == 1
    model(1.0)
    nnx.jit(lambda m: m(1.0))(model)
    assert int(model.n[...]) == 3
    assert nnx.variable_name_from_type(type(model.n)) == "counter"


def test_dropout_keys_advance_and_reseed_reproduces():
    x = jnp.ones((2, 3))
    model = ToNNX(nn.Dropout(0.5, deterministic=False), rngs=nnx.Rngs(0, dropout=1))
    model.lazy_init(x)
    a, b = model(x, mutable=False), model(x, mutable=False)
    assert not np.array_equal(a, b)
    nnx.reseed(model, dropout=7)
    c = model(x, mutable=False)
    nnx.reseed(model, dropout=7)
    np.testing.assert_array_equal(model(x, mutable=False), c)


def test_method_forwarding_and_lazy_init_of_a_method():
    x = jnp.ones((2, 5))
    model = ToNNX(EncDec(), rngs=nnx.Rngs(0))
    assert lazy_init(model.encode, x) is model
    assert model.linen_collections == ("params",)
    assert hasattr(model, "enc") and not hasattr(model, "dec")
    np.testing.assert_allclose(model.encode(x), x @ model.enc.kernel[...] + model.enc.bias[...],
                               rtol=1e-6)
    # Parameters come from lazy_init only (as in flax.nnx): __call__ needs more.
    with pytest.raises(flax.errors.ScopeParamNotFoundError) as info:
        model(x)
    assert "lazy_init" in str(info.value.__notes__) and not hasattr(model, "dec")
    lazy_init(model, x)
    assert isinstance(model.dec.kernel, nnx.Param)
    # Variables of other collections first created by a later call persist.
    nnx.pop(model, nnx.BatchStat)
    assert sorted(model.bn) == ["bias", "scale"]
    y = model(x)
    assert isinstance(model.bn.var, nnx.BatchStat)
    assert model.linen_collections == ("batch_stats", "params")
    variables = _plain_linen(model)
    ref, _ = EncDec().apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_stable_graphdef_and_jit_equals_eager():
    x = jax.random.normal(jax.random.key(0), (4, 3))
    eager = ToNNX(Net(), rngs=nnx.Rngs(0, dropout=1)).lazy_init(x)
    nnx.pop(eager, nnx.Intermediate)
    jitted = nnx.clone(eager)
    graphdef = nnx.graphdef(eager)
    step = nnx.jit(lambda m, x: m(x, mutable=["batch_stats"]))
    for _ in range(3):
        y_eager = eager(x, mutable=["batch_stats"])
        y_jit = step(jitted, x)
        np.testing.assert_allclose(y_jit, y_eager, rtol=1e-5, atol=1e-6)
    assert nnx.graphdef(jitted) == graphdef
    np.testing.assert_allclose(jitted.BatchNorm_0.var[...], eager.BatchNorm_0.var[...],
                               rtol=1e-5)


def test_grad_through_wrapper_matches_linen():
    x = jax.random.normal(jax.random.key(0), (4, 3))
    model = ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)).lazy_init(x)
    grads = nnx.grad(lambda m: (m(x) ** 2).sum())(model)
    params = {"params": {"kernel": model.kernel[...], "bias": model.bias[...]}}
    ref = jax.grad(lambda p: (nn.Dense(2).apply(p, x) ** 2).sum())(params)
    np.testing.assert_allclose(grads["kernel"].value, ref["params"]["kernel"], rtol=1e-6)


def _stacked(n, rngs):
    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return ToNNX(nn.Dense(2), rngs=rngs).lazy_init(jnp.ones((1, 2)))

    return make(rngs)


def test_vmap_with_split_rngs_stacks_parameters():
    models = _stacked(3, nnx.Rngs(0))
    assert models.kernel.shape == (3, 2, 2)
    assert not np.array_equal(models.kernel[0], models.kernel[1])
    x = jnp.ones((5, 2))
    out = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(models, x)
    for i in range(3):
        ref = x @ models.kernel[i] + models.bias[i]
        np.testing.assert_allclose(out[i], ref, rtol=1e-6)


def test_scan_over_stacked_wrappers_and_remat():
    models = _stacked(3, nnx.Rngs(0))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, m):
        return jnp.tanh(m(x))

    x = jnp.ones((4, 2))
    ref = x
    for i in range(3):
        ref = jnp.tanh(ref @ models.kernel[i] + models.bias[i])
    np.testing.assert_allclose(run(x, models), ref, rtol=1e-5)
    single = ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)).lazy_init(x)
    np.testing.assert_allclose(nnx.remat(lambda m, x: m(x))(single, x), single(x), rtol=1e-6)
    grads = nnx.grad(lambda m: nnx.remat(lambda m: m(x).sum())(m))(single)
    np.testing.assert_allclose(grads["bias"].value, jnp.full(2, 4.0))


def test_current_linen_module_inside_an_nnx_layer_in_linen():
    from bridge import ToLinen

    seen = []

    class Probe(nnx.Module):
        def __init__(self, rngs=None):
            pass

        def __call__(self, x):
            seen.append(current_linen_module())
            return x

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ToLinen(Probe, name="probe")(x)

    Parent().init(jax.random.key(0), 1.0)
    assert isinstance(seen[0], ToLinen) and seen[0].name == "probe"
    assert current_linen_module() is None


# ------------------------------------------------------------------------ bad input
def test_call_before_lazy_init_is_an_error():
    model = ToNNX(nn.Dense(2), rngs=nnx.Rngs(0))
    with pytest.raises(nnx.errors.LazyInitError, match="lazy_init"):
        model(jnp.ones((1, 2)))
    with pytest.raises(AttributeError, match="lazy_init"):
        model.kernel


def test_missing_rng_stream_is_an_error_naming_it():
    with pytest.raises(nnx.errors.MissingRngStreamError, match="params"):
        ToNNX(nn.Dense(2)).lazy_init(jnp.ones((1, 2)))
    model = ToNNX(nn.Dropout(0.5)).lazy_init(jnp.ones(2), deterministic=True)
    with pytest.raises(nnx.errors.MissingRngStreamError, match="dropout"):
        model(jnp.ones(2), deterministic=False)


def test_not_a_linen_module_is_an_error():
    with pytest.raises(TypeError, match="ToLinen"):
        ToNNX(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_linen_name_clashing_with_wrapper_attribute_is_an_error():
    class Clash(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="rngs")(x)

    model = ToNNX(Clash(), rngs=nnx.Rngs(0))
    with pytest.raises(nnx.errors.GraphStructureError, match="'rngs'"):
        model.lazy_init(jnp.ones((1, 2)))
    assert model.linen_collections is None  # left as it was
