"""Tests for nnxlib.nn.initializers: flax.nnx name coverage, JAX identity, nd_dense_init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnxlib.nn import initializers

REEXPORTED = [
    "Initializer",
    "constant",
    "delta_orthogonal",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]


def test_every_flax_nnx_name_exists():
    from flax.nnx import initializers as flax_inits

    # `tp` is flax's private alias of the `typing` module, not part of the API.
    wanted = {n for n in dir(flax_inits) if not n.startswith("_")} - {"tp"}
    missing = wanted - set(dir(initializers))
    assert not missing, f"names in flax.nnx.initializers missing here: {sorted(missing)}"


def test_all_lists_public_names():
    assert set(REEXPORTED) <= set(initializers.__all__)
    for name in initializers.__all__:
        assert hasattr(initializers, name), name


@pytest.mark.parametrize("name", REEXPORTED)
def test_reexports_are_jax_objects(name):
    assert getattr(initializers, name) is getattr(jax.nn.initializers, name)


def test_ones_zeros_factories():
    assert initializers.ones_init() is jax.nn.initializers.ones
    assert initializers.zeros_init() is jax.nn.initializers.zeros
    key = jax.random.key(0)
    np.testing.assert_array_equal(initializers.ones_init()(key, (2, 3)), np.ones((2, 3)))
    np.testing.assert_array_equal(initializers.zeros_init()(key, (4,)), np.zeros(4))


def _fans(shape, in_axes, out_axes):
    nd = len(shape)
    in_axes = {a % nd for a in in_axes}
    out_axes = {a % nd for a in out_axes}
    receptive = math.prod(shape[a] for a in set(range(nd)) - in_axes - out_axes)
    fan_in = math.prod(shape[a] for a in in_axes) * receptive
    fan_out = math.prod(shape[a] for a in out_axes) * receptive
    return fan_in, fan_out


def _expected_variance(scale, mode, fan_in, fan_out):
    denominator = {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2,
        "fan_geo_avg": math.sqrt(fan_in * fan_out),
    }[mode]
    return scale / denominator


CASES = [
    # shape, in_axis, out_axis
    ((256, 512), -2, -1),
    ((16, 32, 512), (0, 1), 2),
    ((512, 8, 64), 0, (1, 2)),
    ((8, 32, 16, 64), (0, 1), (2, 3)),
    ((3, 3, 64, 128), 2, 3),  # conv kernel: the 3x3 window is the receptive field
]


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])
@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("shape,in_axis,out_axis", CASES)
def test_nd_dense_init_variance(mode, distribution, shape, in_axis, out_axis):
    scale = 2.0
    init = initializers.nd_dense_init(scale, mode, distribution)
    x = init(jax.random.key(1), shape, in_axis=in_axis, out_axis=out_axis)
    assert x.shape == shape and x.dtype == jnp.float32
    fan_in, fan_out = _fans(shape, np.atleast_1d(in_axis), np.atleast_1d(out_axis))
    expected = _expected_variance(scale, mode, fan_in, fan_out)
    x = np.asarray(x, dtype=np.float64)
    assert abs(x.mean()) < 4 * math.sqrt(expected / x.size)
    np.testing.assert_allclose(x.var(), expected, rtol=0.05)
    std = math.sqrt(expected)
    if distribution == "truncated_normal":
        # Truncated at two standard deviations of the untruncated normal.
        assert np.abs(x).max() <= 2 * std / 0.87962566103423978 + 1e-6
    if distribution == "uniform":
        np.testing.assert_allclose(np.abs(x).max(), math.sqrt(3) * std, rtol=0.01)


@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("shape,in_axis,out_axis", CASES)
def test_nd_dense_init_matches_variance_scaling(distribution, shape, in_axis, out_axis):
    key = jax.random.key(7)
    ours = initializers.nd_dense_init(0.5, "fan_avg", distribution)(
        key, shape, jnp.float32, in_axis=in_axis, out_axis=out_axis
    )
    theirs = jax.nn.initializers.variance_scaling(
        0.5, "fan_avg", distribution, in_axis=in_axis, out_axis=out_axis
    )(key, shape, jnp.float32)
    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    data=st.data(),
    mode=st.sampled_from(["fan_in", "fan_out", "fan_avg"]),
)
def test_nd_dense_init_matches_variance_scaling_random_axes(shape, data, mode):
    nd = len(shape)
    axes = data.draw(st.permutations(range(nd)))
    n_in = data.draw(st.integers(1, nd - 1))
    n_out = data.draw(st.integers(1, nd - n_in))
    in_axis, out_axis = tuple(axes[:n_in]), tuple(axes[n_in : n_in + n_out])
    key = jax.random.key(3)
    ours = initializers.nd_dense_init(1.0, mode, "normal")(
        key, tuple(shape), in_axis=in_axis, out_axis=out_axis
    )
    theirs = jax.nn.initializers.variance_scaling(
        1.0, mode, "normal", in_axis=in_axis, out_axis=out_axis
    )(key, tuple(shape))
    np.testing.assert_array_equal(ours, theirs)


def test_nd_dense_init_defaults_and_dtype():
    init = initializers.nd_dense_init(1.0, "fan_in", "normal")
    key = jax.random.key(0)
    default = init(key, (4, 5))
    assert default.dtype == jnp.float32
    # Default axes are in_axis=-2, out_axis=-1, as for variance_scaling.
    explicit = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")(key, (4, 5))
    np.testing.assert_array_equal(default, explicit)
    assert init(key, (4, 5), jnp.bfloat16).dtype == jnp.bfloat16


def test_nd_dense_init_batch_axis():
    init = initializers.nd_dense_init(1.0, "fan_in", "normal")
    x = init(jax.random.key(0), (64, 128, 256), in_axis=1, out_axis=2, batch_axis=0)
    np.testing.assert_allclose(np.asarray(x).var(), 1 / 128, rtol=0.05)


@pytest.mark.parametrize(
    "mode,distribution,match",
    [("fan_sum", "normal", "mode"), ("fan_in", "gaussian", "distribution")],
)
def test_nd_dense_init_rejects_bad_names(mode, distribution, match):
    with pytest.raises(ValueError, match=match):
        initializers.nd_dense_init(1.0, mode, distribution)
