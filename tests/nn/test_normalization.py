"""Tests for BatchNorm, LayerNorm and RMSNorm against flax.linen with identical parameters."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from tests.nn.layer_oracles import norm_params as _params
from tests.nn.layer_oracles import randomize_norm as _randomize


def _batch_stats(bn: nnx.BatchNorm) -> dict:
    return {"mean": bn.mean[...], "var": bn.var[...]}


def _data(shape, seed=0, dtype=jnp.float32):
    # A non-zero mean and non-unit spread so the statistics actually matter.
    return (3.0 + 2.0 * jax.random.normal(jax.random.key(seed), shape)).astype(dtype)


# ------------------------------------------------------------------------ BatchNorm
def test_batchnorm_state_layout():
    bn = nnx.BatchNorm(4, rngs=nnx.Rngs(0))
    assert type(bn.mean) is nnx.BatchStat and type(bn.var) is nnx.BatchStat
    assert type(bn.scale) is nnx.Param and type(bn.bias) is nnx.Param
    np.testing.assert_array_equal(bn.mean[...], jnp.zeros(4))
    np.testing.assert_array_equal(bn.var[...], jnp.ones(4))
    np.testing.assert_array_equal(bn.scale[...], jnp.ones(4))
    np.testing.assert_array_equal(bn.bias[...], jnp.zeros(4))
    assert sorted(nnx.state(bn, nnx.BatchStat)) == ["mean", "var"]
    assert sorted(nnx.state(bn, nnx.Param)) == ["bias", "scale"]
    bare = nnx.BatchNorm(4, use_bias=False, use_scale=False, rngs=nnx.Rngs(0))
    assert bare.bias is None and bare.scale is None
    assert sorted(nnx.state(bare)) == ["mean", "var"]


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({}, (8, 4)),
        ({"momentum": 0.9, "epsilon": 1e-3}, (8, 4)),
        ({"axis": 1}, (3, 4, 5, 2)),          # NCHW-style feature axis
        ({"axis": -1}, (2, 3, 5, 4)),
        ({"use_bias": False}, (8, 4)),
        ({"use_scale": False}, (8, 4)),
        ({"use_fast_variance": False}, (8, 4)),
    ],
)
def test_batchnorm_matches_linen_train_and_eval_over_steps(kwargs, shape):
    features = shape[kwargs.get("axis", -1)]
    bn = nnx.BatchNorm(features, rngs=nnx.Rngs(0), **kwargs)
    _randomize(bn)
    ref = linen.BatchNorm(**kwargs)
    variables = {"params": _params(bn), "batch_stats": _batch_stats(bn)}
    for step in range(4):
        x = _data(shape, seed=step)
        y_ref, updates = ref.apply(variables, x, use_running_average=False,
                                   mutable=["batch_stats"])
        variables = {"params": variables["params"], **updates}
        y = bn(x)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.mean[...], variables["batch_stats"]["mean"], rtol=1e-6)
        np.testing.assert_allclose(bn.var[...], variables["batch_stats"]["var"], rtol=1e-6)
    x = _data(shape, seed=99)
    y_ref = ref.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(bn(x, use_running_average=True), y_ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_running_average_formula():
    momentum = 0.8
    bn = nnx.BatchNorm(3, momentum=momentum, rngs=nnx.Rngs(0))
    mean, var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = np.asarray(_data((16, 3), seed=step))
        bn(x)
        mean = momentum * mean + (1 - momentum) * x.mean(0)
        var = momentum * var + (1 - momentum) * x.var(0)
        np.testing.assert_allclose(bn.mean[...], mean, rtol=1e-5)
        np.testing.assert_allclose(bn.var[...], var, rtol=1e-5)


def test_batchnorm_train_output_is_normalized_and_eval_uses_stored_stats():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    x = _data((64, 2))
    y = bn(x)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), 1.0, atol=1e-3)
    bn.mean[...] = jnp.array([1.0, -1.0])
    bn.var[...] = jnp.array([4.0, 0.25])
    before = (bn.mean[...], bn.var[...])
    out = bn(jnp.array([[3.0, 0.0]]), use_running_average=True)
    eps = bn.epsilon
    np.testing.assert_allclose(out, [[2.0 / np.sqrt(4.0 + eps), 1.0 / np.sqrt(0.25 + eps)]],
                               rtol=1e-6)
    assert bn.mean[...] is before[0] and bn.var[...] is before[1]  # untouched in eval


def test_batchnorm_mode_precedence_train_eval_and_missing_mode():
    x = _data((8, 2))
    bn = nnx.BatchNorm(2, use_running_average=True, rngs=nnx.Rngs(0))
    bn(x)
    np.testing.assert_array_equal(bn.mean[...], jnp.zeros(2))   # constructor says eval
    bn(x, use_running_average=False)                             # call argument wins
    assert not np.allclose(bn.mean[...], 0.0)
    bn.eval()
    assert bn.use_running_average is True
    bn.train()
    assert bn.use_running_average is False
    undecided = nnx.BatchNorm(2, use_running_average=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="use_running_average.*Hint"):
        undecided(x)


def test_batchnorm_mask_matches_linen():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    _randomize(bn)
    x = _data((10, 3))
    mask = jnp.broadcast_to((jnp.arange(10) % 3 != 0)[:, None], x.shape)
    variables = {"params": _params(bn), "batch_stats": _batch_stats(bn)}
    y_ref, updates = linen.BatchNorm().apply(variables, x, use_running_average=False,
                                             mask=mask, mutable=["batch_stats"])
    np.testing.assert_allclose(bn(x, mask=mask), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], updates["batch_stats"]["mean"], rtol=1e-6)
    # Masked-out rows really are ignored: only rows with mask True shape the mean.
    np.testing.assert_allclose(bn.mean[...], 0.01 * x[np.arange(10) % 3 != 0].mean(0),
                               rtol=1e-5)


@pytest.mark.parametrize(
    "dtype,param_dtype",
    [(jnp.bfloat16, jnp.float32), (None, jnp.bfloat16), (jnp.float16, jnp.float16)],
)
def test_batchnorm_dtypes_match_linen(dtype, param_dtype):
    bn = nnx.BatchNorm(4, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    assert bn.scale.dtype == param_dtype and bn.mean.dtype == jnp.float32
    _randomize(bn)
    ref = linen.BatchNorm(dtype=dtype, param_dtype=param_dtype)
    variables = {"params": _params(bn), "batch_stats": _batch_stats(bn)}
    x = _data((16, 4))
    y_ref, updates = ref.apply(variables, x, use_running_average=False,
                               mutable=["batch_stats"])
    y = bn(x)
    assert y.dtype == y_ref.dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32),
                               rtol=1e-2, atol=1e-2)
    assert bn.mean.dtype == jnp.float32
    np.testing.assert_allclose(bn.mean[...], updates["batch_stats"]["mean"], rtol=1e-3)


def test_batchnorm_running_stats_are_differentiable_like_flax():
    # As in flax (linen and nnx), the running-average update is plain arithmetic: no
    # stop_gradient is inserted, so the compiled train step has no extra equations.
    # (nnx.grad never differentiates through it anyway: new statistics leave a grad
    # transform as auxiliary state.)
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(bn)
    m = bn.momentum

    def new_stats_sum(x, state):
        module = nnx.merge(graphdef, state)
        module(x)
        return module.mean[...].sum() + module.var[...].sum()

    def plain(x):
        mu = x.mean(0)
        var = jnp.maximum(0.0, (x * x).mean(0) - mu * mu)
        return (m * 0.0 + (1 - m) * mu).sum() + (m * 1.0 + (1 - m) * var).sum()

    x = _data((4, 2))
    grad_x, grad_state = jax.grad(new_stats_sum, argnums=(0, 1))(x, state)
    np.testing.assert_allclose(grad_x, jax.grad(plain)(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_state["mean"][...], jnp.full(2, m), rtol=1e-6)


def test_batchnorm_gradients_match_linen():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    _randomize(bn)
    x = _data((6, 3))
    graphdef, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)

    def ours(params, x, stats):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, params, stats)(x)))

    def ref(params, x):
        y, _ = linen.BatchNorm().apply({"params": params, "batch_stats": _batch_stats(bn)}, x,
                                       use_running_average=False, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y))

    g, gx, _ = jax.grad(ours, argnums=(0, 1, 2))(params, x, stats)
    g_ref, gx_ref = jax.grad(ref, argnums=(0, 1))(_params(bn), x)
    np.testing.assert_allclose(g["scale"][...], g_ref["scale"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["bias"][...], g_ref["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)


def _vmapped_train_step(bn: nnx.BatchNorm, x: jax.Array, axis_name: str):
    """Run BatchNorm functionally under jax.vmap over the leading axis of x."""
    graphdef, state = nnx.split(bn)

    def step(state, x):
        module = nnx.merge(graphdef, state)
        y = module(x)
        return y, nnx.state(module)

    return jax.vmap(step, in_axes=(None, 0), axis_name=axis_name)(state, x)


def test_batchnorm_axis_name_under_vmap_equals_full_batch():
    x = _data((4, 5, 3))  # 4 "devices" of 5 examples each
    synced = nnx.BatchNorm(3, axis_name="batch", momentum=0.5, rngs=nnx.Rngs(0))
    _randomize(synced)
    full = nnx.BatchNorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    _randomize(full)
    ys, new_state = _vmapped_train_step(synced, x, "batch")
    y_full = full(x.reshape(20, 3))
    np.testing.assert_allclose(ys.reshape(20, 3), y_full, rtol=1e-5, atol=1e-5)
    # pmean makes every member's running stats equal to the full-batch ones.
    for member in range(4):
        np.testing.assert_allclose(new_state["mean"][...][member], full.mean[...], rtol=1e-5)
        np.testing.assert_allclose(new_state["var"][...][member], full.var[...], rtol=1e-5)
    # Without axis_name each member normalises with its own statistics: different.
    local = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    _randomize(local)
    ys_local, _ = _vmapped_train_step(local, x, "batch")
    assert not np.allclose(ys_local, ys, atol=1e-3)


def test_batchnorm_axis_name_under_vmap_matches_linen():
    x = _data((3, 6, 2))
    bn = nnx.BatchNorm(2, axis_name="b", rngs=nnx.Rngs(0))
    _randomize(bn)
    variables = {"params": _params(bn), "batch_stats": _batch_stats(bn)}
    ref = jax.vmap(
        lambda x: linen.BatchNorm(axis_name="b").apply(
            variables, x, use_running_average=False, mutable=["batch_stats"]),
        axis_name="b",
    )(x)
    ys, new_state = _vmapped_train_step(bn, x, "b")
    np.testing.assert_allclose(ys, ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["mean"][...], ref[1]["batch_stats"]["mean"], rtol=1e-6)


def test_batchnorm_axis_index_groups_under_pmap():
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices (tests/conftest.py forces 8 CPU devices)")
    x = _data((4, 5, 2))
    bn = nnx.BatchNorm(2, axis_name="d", axis_index_groups=[[0, 1], [2, 3]], rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(bn)

    def step(state, x):
        module = nnx.merge(graphdef, state)
        return module(x), module.mean[...]

    _, means = jax.pmap(step, axis_name="d", in_axes=(None, 0),
                        devices=jax.local_devices()[:4])(state, x)
    # Each group of two devices shares the mean of its own 10 examples.
    for group in ([0, 1], [2, 3]):
        expected = 0.01 * x[np.array(group)].reshape(-1, 2).mean(0)
        for member in group:
            np.testing.assert_allclose(means[member], expected, rtol=1e-5)


@pytest.mark.skipif(not hasattr(nnx, "jit"), reason="nnx.jit not available yet")
def test_batchnorm_updates_stats_under_nnx_jit():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    eager = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    step = nnx.jit(lambda m, x: m(x))
    for seed in range(3):
        x = _data((8, 2), seed=seed)
        np.testing.assert_allclose(step(bn, x), eager(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.mean[...], eager.mean[...], rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], eager.var[...], rtol=1e-6)


# ------------------------------------------------------------------------ LayerNorm
@pytest.mark.parametrize(
    "kwargs,shape,features",
    [
        ({}, (4, 6), 6),
        ({"epsilon": 1e-2, "use_fast_variance": False}, (2, 3, 6), 6),
        ({"use_bias": False}, (4, 6), 6),
        ({"use_scale": False}, (4, 6), 6),
        ({"reduction_axes": (1, 2), "feature_axes": -1}, (2, 3, 5), 5),
        ({"reduction_axes": -1, "feature_axes": 1}, (2, 4, 5), 4),
    ],
)
def test_layernorm_matches_linen(kwargs, shape, features):
    ln = nnx.LayerNorm(features, rngs=nnx.Rngs(0), **kwargs)
    _randomize(ln)
    x = _data(shape)
    ref = linen.LayerNorm(**kwargs).apply({"params": _params(ln)}, x)
    np.testing.assert_allclose(ln(x), ref, rtol=1e-5, atol=1e-5)


def test_layernorm_state_mask_and_dtype():
    ln = nnx.LayerNorm(4, use_bias=False, rngs=nnx.Rngs(0))
    assert ln.bias is None and sorted(nnx.state(ln)) == ["scale"]
    x = _data((3, 4))
    mask = jnp.array([[True, True, False, True]] * 3)
    ref = linen.LayerNorm(use_bias=False).apply({"params": _params(ln)}, x, mask=mask)
    np.testing.assert_allclose(ln(x, mask=mask), ref, rtol=1e-5, atol=1e-5)
    half = nnx.LayerNorm(4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    ref_half = linen.LayerNorm(dtype=jnp.bfloat16).apply({"params": _params(half)}, x)
    out = half(x)
    assert out.dtype == jnp.bfloat16 == ref_half.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_half, np.float32),
                               rtol=1e-2, atol=1e-2)


def test_layernorm_axis_name_pools_statistics_over_feature_shards():
    x = _data((2, 4, 3))  # 2 shards of a 6-wide feature axis
    ln = nnx.LayerNorm(3, axis_name="f", rngs=nnx.Rngs(0))
    ys = jax.vmap(ln, in_axes=1, out_axes=1, axis_name="f")(x.transpose(1, 0, 2))
    full = nnx.LayerNorm(6, rngs=nnx.Rngs(0))(x.transpose(1, 0, 2).reshape(4, 6))
    np.testing.assert_allclose(ys.reshape(4, 6), full, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize(
    "kwargs,shape,features",
    [
        ({}, (4, 6), 6),
        ({"epsilon": 1e-1}, (2, 3, 6), 6),
        ({"use_scale": False}, (4, 6), 6),
        ({"use_fast_variance": False}, (4, 6), 6),
        ({"reduction_axes": (1, 2), "feature_axes": -1}, (2, 3, 5), 5),
    ],
)
def test_rmsnorm_matches_linen(kwargs, shape, features):
    rms = nnx.RMSNorm(features, rngs=nnx.Rngs(0), **kwargs)
    _randomize(rms)
    x = _data(shape)
    ref = linen.RMSNorm(**kwargs).apply({"params": _params(rms)}, x)
    np.testing.assert_allclose(rms(x), ref, rtol=1e-5, atol=1e-5)


def test_rmsnorm_does_not_center():
    rms = nnx.RMSNorm(2, epsilon=0.0, rngs=nnx.Rngs(0))
    assert sorted(nnx.state(rms)) == ["scale"]
    x = jnp.array([[1.0, 1.0]])
    np.testing.assert_allclose(rms(x), x, rtol=1e-6)  # LayerNorm would give zeros
    np.testing.assert_allclose(rms(jnp.array([[3.0, 4.0]])),
                               [[3.0 / np.sqrt(12.5), 4.0 / np.sqrt(12.5)]], rtol=1e-6)


@pytest.mark.parametrize("make, x", [
    (lambda: nnx.BatchNorm(3, rngs=nnx.Rngs(0)), jnp.ones((2, 4))),
    (lambda: nnx.BatchNorm(3, axis=2, rngs=nnx.Rngs(0)), jnp.ones((2, 3))),
    (lambda: nnx.LayerNorm(3, rngs=nnx.Rngs(0)), jnp.ones((2, 4))),
    (lambda: nnx.RMSNorm(3, rngs=nnx.Rngs(0)), jnp.ones((2, 4))),
], ids=["batchnorm", "batchnorm-bad-axis", "layernorm", "rmsnorm"])
def test_wrong_feature_size_is_a_clear_error_and_changes_nothing(make, x):
    layer = make()
    before = jax.tree.map(np.asarray, nnx.state(layer))
    with pytest.raises(ValueError, match=r"num_features=3.*must hold 3 entries.*Hint"):
        layer(x)
    after = nnx.state(layer)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
