"""Tests for nnxlib.nn.linear.Linear against flax.linen.Dense with identical parameters."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import nnxlib as nnx
from nnxlib.nn import dtypes


def _random_params(layer: nnx.Linear, seed: int = 1) -> None:
    """Give kernel and bias non-trivial values so a wrong bias or layout shows."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    layer.kernel[...] = jax.random.normal(k1, layer.kernel.shape, layer.kernel.dtype)
    if layer.bias is not None:
        layer.bias[...] = jax.random.normal(k2, layer.bias.shape, layer.bias.dtype)


def _linen_variables(layer: nnx.Linear) -> dict:
    params = {"kernel": layer.kernel[...]}
    if layer.bias is not None:
        params["bias"] = layer.bias[...]
    return {"params": params}


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("in_shape", [(3,), (5, 3), (2, 4, 3)])
def test_matches_linen_dense(use_bias, in_shape):
    layer = nnx.Linear(3, 4, use_bias=use_bias, rngs=nnx.Rngs(0))
    _random_params(layer)
    x = jax.random.normal(jax.random.key(2), in_shape)
    ref = linen.Dense(4, use_bias=use_bias).apply(_linen_variables(layer), x)
    out = layer(x)
    assert out.shape == in_shape[:-1] + (4,)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, x @ layer.kernel[...] + (layer.bias[...] if use_bias else 0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype,param_dtype",
    [(None, jnp.float32), (jnp.bfloat16, jnp.float32), (None, jnp.bfloat16),
     (jnp.float32, jnp.bfloat16), (jnp.float16, jnp.float16)],
)
def test_dtype_and_param_dtype_match_linen(dtype, param_dtype):
    layer = nnx.Linear(6, 5, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    assert layer.kernel.dtype == param_dtype and layer.bias.dtype == param_dtype
    _random_params(layer)
    x = jax.random.normal(jax.random.key(3), (4, 6))
    ref = linen.Dense(5, dtype=dtype, param_dtype=param_dtype).apply(_linen_variables(layer), x)
    out = layer(x)
    assert out.dtype == ref.dtype
    expected_dtype = dtype if dtype is not None else jnp.result_type(x, param_dtype)
    assert out.dtype == expected_dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))


def test_integer_inputs_are_promoted_to_float():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    out = layer(jnp.array([[1, 2]], jnp.int32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, jnp.array([[1.0, 2.0]]) @ layer.kernel[...] + layer.bias[...],
                               rtol=1e-6)


def test_parameters_are_params_with_flax_shapes():
    layer = nnx.Linear(3, 7, rngs=nnx.Rngs(0))
    assert type(layer.kernel) is nnx.Param and type(layer.bias) is nnx.Param
    assert layer.kernel.shape == (3, 7) and layer.bias.shape == (7,)
    np.testing.assert_array_equal(layer.bias[...], jnp.zeros(7))
    assert sorted(nnx.state(layer, nnx.Param)) == ["bias", "kernel"]
    no_bias = nnx.Linear(3, 7, use_bias=False, rngs=nnx.Rngs(0))
    assert no_bias.bias is None
    assert sorted(nnx.state(no_bias)) == ["kernel"]


def test_same_parameters_as_flax_nnx_for_the_same_seed():
    ours = nnx.Linear(4, 3, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(42))
    ref = flax_nnx.Linear(4, 3, bias_init=flax_nnx.initializers.normal(1.0),
                          rngs=flax_nnx.Rngs(42))
    np.testing.assert_array_equal(ours.kernel[...], ref.kernel[...])
    np.testing.assert_array_equal(ours.bias[...], ref.bias[...])


def test_default_kernel_init_is_lecun_normal_from_params_stream():
    rngs = nnx.Rngs(0, params=7)
    layer = nnx.Linear(256, 64, rngs=rngs)
    # Kernel first, then bias: two keys from 'params', none from 'default'.
    assert int(rngs.params.count[...]) == 2 and int(rngs.default.count[...]) == 0
    expected = jax.nn.initializers.lecun_normal()(
        jax.random.fold_in(jax.random.key(7), 0), (256, 64), jnp.float32
    )
    np.testing.assert_array_equal(layer.kernel[...], expected)
    assert abs(float(layer.kernel[...].var()) * 256 - 1.0) < 0.1


def test_custom_initializers_receive_shape_and_param_dtype():
    calls = []

    def init(key, shape, dtype):
        calls.append((shape, dtype))
        return jnp.full(shape, 0.5, dtype)

    layer = nnx.Linear(2, 3, kernel_init=init, bias_init=init, param_dtype=jnp.bfloat16,
                       rngs=nnx.Rngs(0))
    assert calls == [((2, 3), jnp.bfloat16), ((3,), jnp.bfloat16)]
    np.testing.assert_array_equal(layer(jnp.ones(2)), jnp.full(3, 1.5))


def test_metadata_is_attached():
    layer = nnx.Linear(2, 3, kernel_metadata={"out_sharding": ("in", "out")},
                       bias_metadata={"out_sharding": ("out",)}, rngs=nnx.Rngs(0))
    assert layer.kernel.out_sharding == ("in", "out") and layer.bias.out_sharding == ("out",)
    init = nnx.with_metadata(nnx.initializers.lecun_normal(), out_sharding=("a", "b"))
    assert nnx.Linear(2, 3, kernel_init=init, rngs=nnx.Rngs(0)).kernel.out_sharding == ("a", "b")


def test_custom_dot_general_promote_dtype_and_precision_are_used():
    seen = {}

    def dot_general(x, k, dims, precision=None, **kwargs):
        seen["dims"], seen["precision"], seen["kwargs"] = dims, precision, kwargs
        return jax.lax.dot_general(x, k, dims, precision=precision, **kwargs)

    def promote(args, *, dtype=None):
        seen["promote_dtype"] = dtype
        return dtypes.promote_dtype(args, dtype=dtype)

    layer = nnx.Linear(3, 2, dot_general=dot_general, promote_dtype=promote,
                       precision=jax.lax.Precision.HIGHEST, dtype=jnp.float32,
                       preferred_element_type=jnp.float32, rngs=nnx.Rngs(0))
    layer(jnp.ones((4, 5, 3)))
    assert seen["dims"] == (((2,), (0,)), ((), ()))
    assert seen["precision"] == jax.lax.Precision.HIGHEST
    assert seen["kwargs"] == {"preferred_element_type": jnp.float32}
    assert seen["promote_dtype"] == jnp.float32


def test_preferred_element_type_sets_output_dtype():
    layer = nnx.Linear(3, 2, dtype=jnp.bfloat16, preferred_element_type=jnp.float32,
                       rngs=nnx.Rngs(0))
    assert layer(jnp.ones((1, 3))).dtype == jnp.float32
    assert nnx.Linear(3, 2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(jnp.ones(3)).dtype == jnp.bfloat16


def test_gradients_match_linen():
    layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _random_params(layer)
    x = jax.random.normal(jax.random.key(5), (6, 3))
    graphdef, state = nnx.split(layer)

    def ours(state):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, state)(x)))

    def ref(params):
        return jnp.sum(jnp.sin(linen.Dense(2).apply({"params": params}, x)))

    g = jax.grad(ours)(state)
    g_ref = jax.grad(ref)(_linen_variables(layer)["params"])
    np.testing.assert_allclose(g["kernel"][...], g_ref["kernel"], rtol=1e-6)
    np.testing.assert_allclose(g["bias"][...], g_ref["bias"], rtol=1e-6)


def test_works_under_jit_and_vmap():
    layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    x = jnp.arange(12.0).reshape(4, 3)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    mapped = jax.vmap(lambda x: nnx.merge(graphdef, state)(x))(x)
    np.testing.assert_allclose(jitted, layer(x), rtol=1e-6)
    np.testing.assert_allclose(mapped, layer(x), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_affine_map(batch, n_in, n_out, use_bias, seed):
    layer = nnx.Linear(n_in, n_out, use_bias=use_bias, rngs=nnx.Rngs(seed))
    _random_params(layer, seed)
    x = np.asarray(jax.random.normal(jax.random.key(seed + 1), (*batch, n_in)))
    expected = x @ np.asarray(layer.kernel[...])
    if use_bias:
        expected = expected + np.asarray(layer.bias[...])
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_wrong_input_size_names_the_layer_and_both_sizes():
    layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    before = layer.kernel[...]
    with pytest.raises(ValueError, match=r"Linear\(3, 2\).*3 entries.*shape \(5, 4\).*Hint"):
        layer(jnp.ones((5, 4)))
    assert layer.kernel[...] is before
