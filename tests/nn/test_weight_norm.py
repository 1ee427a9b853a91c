"""SpectralNorm and WeightNorm against flax.linen with the same parameters and statistics,
and the nnxlib semantics: the wrapped layer's raw parameters are kept and trained."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx


def _linear(din=3, dout=4, seed=0):
    layer = nnx.Linear(din, dout, rngs=nnx.Rngs(seed))
    layer.bias[...] = jax.random.normal(jax.random.key(seed + 7), layer.bias.shape)
    return layer


def _x(shape=(5, 3), seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


# --------------------------------------------------------------------- SpectralNorm
def _spectral_variables(layer: nnx.SpectralNorm) -> dict:
    inner = layer.layer_instance
    return {
        "params": {"layer_instance": {"kernel": inner.kernel[...], "bias": inner.bias[...]}},
        "batch_stats": {
            "layer_instance/kernel/u": layer.batch_stats[("kernel", "u")][...],
            "layer_instance/kernel/sigma": layer.batch_stats[("kernel", "sigma")][...],
        },
    }


@pytest.mark.parametrize("n_steps", [1, 3])
def test_spectralnorm_matches_linen_over_steps(n_steps):
    layer = nnx.SpectralNorm(_linear(), n_steps=n_steps, rngs=nnx.Rngs(1))
    ref = linen.SpectralNorm(linen.Dense(4), n_steps=n_steps)
    variables = _spectral_variables(layer)
    raw_kernel = layer.layer_instance.kernel[...]
    for step in range(3):
        x = _x(seed=step)
        y_ref, updates = ref.apply(variables, x, update_stats=True, mutable=["batch_stats"])
        variables = {"params": variables["params"], **updates}
        np.testing.assert_allclose(layer(x), y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_spectral_variables(layer)["batch_stats"]["layer_instance"
                                   "/kernel/u"], updates["batch_stats"]["layer_instance/kernel/u"],
                                   rtol=1e-5, atol=1e-6)
    # The raw kernel is the parameter; it is not overwritten by the normalised one.
    np.testing.assert_array_equal(layer.layer_instance.kernel[...], raw_kernel)
    sigma = layer.batch_stats[("kernel", "sigma")][...]
    np.testing.assert_allclose(sigma, np.linalg.svd(raw_kernel, compute_uv=False)[0],
                               rtol=1e-2)


def test_spectralnorm_eval_mode_uses_but_does_not_update_stats():
    layer = nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1))
    ref = linen.SpectralNorm(linen.Dense(4))
    before = jax.tree.map(np.asarray, nnx.state(layer))
    layer.eval()
    x = _x()
    y_ref = ref.apply(_spectral_variables(layer), x, update_stats=False)
    for _ in range(2):    # same output each time: nothing drifts
        np.testing.assert_allclose(layer(x), y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(layer))):
        np.testing.assert_array_equal(a, b)
    layer.train()
    layer(x)
    assert not np.array_equal(layer.batch_stats[("kernel", "u")][...],
                              before["batch_stats"][("kernel", "u")][...])


def test_spectralnorm_conv_kernel_is_flattened_like_linen():
    conv_kernel = jax.random.normal(jax.random.key(0), (2, 2, 3, 4))
    holder = nnx.Dict()
    holder["kernel"] = nnx.Param(conv_kernel)

    class Apply(nnx.Module):       # a layer whose output is its (normalised) kernel
        def __init__(self):
            self.inner = holder

        def __call__(self, x):
            return self.inner["kernel"][...] * x

    layer = nnx.SpectralNorm(Apply(), rngs=nnx.Rngs(0))
    u = layer.batch_stats[("inner", "kernel", "u")]
    assert u.shape == (1, 4)
    uu = u[...]                       # the stored vector the power iteration starts from
    out = layer(1.0)
    matrix = conv_kernel.reshape(-1, 4)
    v = matrix @ uu.T
    v = (v / jnp.linalg.norm(v)).T
    uu = v @ matrix
    uu = uu / jnp.linalg.norm(uu)
    sigma = (v @ matrix @ uu.T)[0, 0]
    np.testing.assert_allclose(out, conv_kernel / sigma, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"layer_instance\.inner\.kernel.*4 axes.*Hint"):
        nnx.SpectralNorm(Apply(), error_on_non_matrix=True, rngs=nnx.Rngs(0))


def test_spectralnorm_gradients_reach_the_raw_kernel_like_linen():
    layer = nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1))
    ref = linen.SpectralNorm(linen.Dense(4))
    variables = _spectral_variables(layer)
    x = _x()

    def ours(model):
        return jnp.sum(jnp.sin(model(x, update_stats=False)))

    def theirs(params):
        y = ref.apply({**variables, "params": params}, x, update_stats=False)
        return jnp.sum(jnp.sin(y))

    grads = nnx.grad(ours)(layer)
    grads_ref = jax.grad(theirs)(variables["params"])
    np.testing.assert_allclose(grads["layer_instance"]["kernel"][...],
                               grads_ref["layer_instance"]["kernel"], rtol=1e-4, atol=1e-6)


def test_spectralnorm_under_jit_updates_stats_and_keeps_params():
    eager = nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1))
    jitted = nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1))
    step = nnx.jit(lambda m, x: m(x))
    for seed in range(2):
        x = _x(seed=seed)
        np.testing.assert_allclose(step(jitted, x), eager(x), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(jitted)), jax.tree.leaves(nnx.state(eager))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_spectralnorm_missing_stats_is_a_clear_error_and_changes_nothing():
    layer = nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1))
    layer.layer_instance.other = nnx.Param(jnp.ones((2, 2)))   # added after wrapping
    before = jax.tree.map(np.asarray, nnx.state(layer))
    with pytest.raises(nnx.errors.StateMismatchError,
                       match=r"layer_instance\.other has no power-iteration state.*Hint"):
        layer(_x())
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(layer))):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- WeightNorm
def _weight_variables(layer: nnx.WeightNorm) -> dict:
    inner = layer.layer_instance
    params = {"layer_instance": {"kernel": inner.kernel[...], "bias": inner.bias[...]}}
    if layer.scales is not None:
        params["layer_instance/kernel/scale"] = layer.scales[("kernel",)][...]
    return {"params": params}


@pytest.mark.parametrize("kwargs", [
    {},
    {"use_scale": False},
    {"feature_axes": None},
    {"epsilon": 1e-3},
])
def test_weightnorm_matches_linen(kwargs):
    layer = nnx.WeightNorm(_linear(), rngs=nnx.Rngs(0), **kwargs)
    if layer.scales is not None:
        scale = layer.scales[("kernel",)]
        scale[...] = 1.0 + jax.random.uniform(jax.random.key(4), scale.shape)
    ref = linen.WeightNorm(linen.Dense(4), **kwargs)
    x = _x()
    np.testing.assert_allclose(layer(x), ref.apply(_weight_variables(layer), x),
                               rtol=1e-5, atol=1e-5)
    assert layer(x).shape == (5, 4)


def test_weightnorm_scales_are_trained_and_kernel_stays_raw():
    layer = nnx.WeightNorm(_linear(), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
    assert ("scales", ("kernel",)) in dict(nnx.to_flat_state(nnx.state(layer, nnx.Param)))
    x, target = _x(), jnp.ones((5, 4))
    ref = linen.WeightNorm(linen.Dense(4))

    def loss(model):
        return jnp.mean((model(x) - target) ** 2)

    def ref_loss(params):
        return jnp.mean((ref.apply({"params": params}, x) - target) ** 2)

    grads = nnx.grad(loss)(layer)
    grads_ref = jax.grad(ref_loss)(_weight_variables(layer)["params"])
    np.testing.assert_allclose(grads["scales"][("kernel",)][...],
                               grads_ref["layer_instance/kernel/scale"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["layer_instance"]["kernel"][...],
                               grads_ref["layer_instance"]["kernel"], rtol=1e-4, atol=1e-6)
    kernel, scale = layer.layer_instance.kernel[...], layer.scales[("kernel",)][...]
    optimizer.update(layer, grads)
    assert not np.allclose(layer.scales[("kernel",)][...], scale)
    # The stored kernel is the raw weight after one SGD step, not a normalised one.
    np.testing.assert_allclose(layer.layer_instance.kernel[...],
                               kernel - 0.1 * grads["layer_instance"]["kernel"][...],
                               rtol=1e-6)


def test_weightnorm_passes_extra_call_arguments():
    class Scaled(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x, factor, *, shift=0.0):
            return self.linear(x) * factor + shift

    layer = nnx.WeightNorm(Scaled(nnx.Rngs(0)), rngs=nnx.Rngs(0))
    assert sorted(layer.scales) == [("linear", "kernel")]
    x = _x()
    np.testing.assert_allclose(layer(x, 2.0, shift=1.0), 2.0 * layer(x, 1.0) + 1.0,
                               rtol=1e-5, atol=1e-5)


def test_weightnorm_changed_layer_is_a_clear_error_and_changes_nothing():
    layer = nnx.WeightNorm(_linear(), rngs=nnx.Rngs(0))
    layer.layer_instance.kernel = nnx.Param(jnp.ones((3, 5)))    # a differently shaped kernel
    before = jax.tree.map(np.asarray, nnx.state(layer))
    with pytest.raises(nnx.errors.StateMismatchError,
                       match=r"scales\[\('kernel',\)\] has shape \(4,\).*layer_instance\.kernel"
                             r".*needs \(5,\).*Hint"):
        layer(_x())
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(layer))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, ref, kwargs", [
    (lambda: nnx.SpectralNorm(_linear(), rngs=nnx.Rngs(1)),
     lambda: linen.SpectralNorm(linen.Dense(4)), {"update_stats": True}),
    (lambda: nnx.WeightNorm(_linear(), rngs=nnx.Rngs(0)),
     lambda: linen.WeightNorm(linen.Dense(4)), {}),
], ids=["spectral", "weight"])
def test_jaxpr_is_no_larger_than_linen(make, ref, kwargs):
    graphdef, state = nnx.split(make())
    x = _x()

    def ours(state, x):
        module = nnx.merge(graphdef, state)
        return module(x, **kwargs), nnx.state(module)

    theirs, mutable = ref(), ["batch_stats"] if kwargs else False
    variables = theirs.init(jax.random.key(0), x, **kwargs)
    count = lambda f, *a: len(jax.make_jaxpr(f)(*a).jaxpr.eqns)  # noqa: E731
    assert count(ours, state, x) <= count(
        lambda v, x: theirs.apply(v, x, mutable=mutable, **kwargs), variables, x)
