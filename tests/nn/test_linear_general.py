"""LinearGeneral vs flax.linen.DenseGeneral and Einsum vs flax.linen.Einsum (same
parameters), both vs flax.nnx for the same seed; jaxpr size and bad input."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from tests.nn.layer_oracles import (
    FAST_INIT,
    assert_same_state_as_flax,
    layer_eqns,
    linen_eqns,
    normal,
    randomize,
)


def _params(layer) -> dict:
    params = {"kernel": layer.kernel[...]}
    if layer.bias is not None:
        params["bias"] = layer.bias[...]
    return {"params": params}


# (in_features, out_features, axis, batch_axis, input shape)
GENERAL_CASES = [
    (5, 3, -1, {}, (2, 4, 5)),
    (5, (2, 3), -1, {}, (4, 5)),
    ((2, 3), 4, (-2, -1), {}, (6, 2, 3)),
    ((4, 3), (2, 2), (1, 3), {}, (2, 4, 5, 3)),   # contracted axes not last
    (3, (2, 5), 1, {}, (2, 3, 4)),
    (3, 2, -1, {0: 4}, (4, 5, 3)),
    ((5, 3), 2, (-2, -1), {0: 2, 1: 3}, (2, 3, 4, 5, 3)),
    (3, 2, -1, {0: 4}, (4, 3)),                   # no free axis
]


@pytest.mark.parametrize("in_f,out_f,axis,batch_axis,shape", GENERAL_CASES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_general_matches_linen(in_f, out_f, axis, batch_axis, shape, use_bias):
    layer = nnx.LinearGeneral(in_f, out_f, axis=axis, batch_axis=batch_axis,
                              use_bias=use_bias, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal(shape, seed=2)
    ref = linen.DenseGeneral(out_f, axis=axis, batch_dims=tuple(batch_axis),
                             use_bias=use_bias).apply(_params(layer), x)
    out = layer(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,param_dtype", [(jnp.bfloat16, jnp.float32),
                                               (None, jnp.bfloat16),
                                               (jnp.float32, jnp.float16)])
def test_linear_general_dtypes_match_linen(dtype, param_dtype):
    layer = nnx.LinearGeneral(4, (2, 3), dtype=dtype, param_dtype=param_dtype,
                              rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((3, 4), seed=1)
    ref = linen.DenseGeneral((2, 3), dtype=dtype, param_dtype=param_dtype).apply(
        _params(layer), x)
    out = layer(x)
    assert out.dtype == ref.dtype and layer.kernel.dtype == param_dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "args,kwargs",
    [((8, (2, 4)), {}),
     (((2, 4), 8), dict(axis=(-2, -1), bias_init=jax.nn.initializers.normal(1.0))),
     ((8, 6), dict(batch_axis={0: 3}, param_dtype=jnp.bfloat16)),
     ((8, (2, 4)), dict(use_bias=False, kernel_init=jax.nn.initializers.he_normal()))],
)
def test_linear_general_same_state_as_flax_nnx(args, kwargs):
    ours = nnx.LinearGeneral(*args, rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.LinearGeneral(*args, rngs=flax_nnx.Rngs(0), **kwargs)
    assert_same_state_as_flax(ours, theirs)


def test_linear_general_initializer_sees_flat_shape_and_keeps_metadata():
    shapes = []

    def init(key, shape, dtype):
        shapes.append(shape)
        return jnp.zeros(shape, dtype)

    layer = nnx.LinearGeneral((2, 3), (4, 5), axis=(-2, -1), batch_axis={0: 7},
                              kernel_init=nnx.with_metadata(init, note="k"), bias_init=init,
                              kernel_metadata={"tag": 1}, rngs=nnx.Rngs(0))
    assert shapes == [(7 * 2 * 3, 4 * 5), (7 * 4 * 5,)]
    assert layer.kernel.shape == (7, 2, 3, 4, 5) and layer.bias.shape == (7, 4, 5)
    assert layer.kernel.note == "k" and layer.kernel.tag == 1


def test_linear_general_overrides_are_used():
    seen = []

    class Counting:
        def __call__(self, *args, **kwargs):
            seen.append(kwargs)
            return jax.lax.dot_general(*args, **kwargs)

    layer = nnx.LinearGeneral(3, 2, dot_general_cls=Counting, precision="highest",
                              preferred_element_type=jnp.float32, rngs=nnx.Rngs(0),
                              **FAST_INIT)
    layer(jnp.ones((2, 3)))
    assert seen == [{"precision": "highest", "preferred_element_type": jnp.float32}]
    layer = nnx.LinearGeneral(3, 2, dot_general=lambda *a, **k: seen.append("fn") or
                              jax.lax.dot_general(*a, **k), rngs=nnx.Rngs(0), **FAST_INIT)
    layer(jnp.ones(3))
    assert seen[-1] == "fn"


@pytest.mark.parametrize("in_f,out_f,axis,batch_axis,shape", GENERAL_CASES[::2])
def test_linear_general_jaxpr_no_larger_than_linen(in_f, out_f, axis, batch_axis, shape):
    layer = nnx.LinearGeneral(in_f, out_f, axis=axis, batch_axis=batch_axis,
                              rngs=nnx.Rngs(0), **FAST_INIT)
    x = jnp.ones(shape)
    module = linen.DenseGeneral(out_f, axis=axis, batch_dims=tuple(batch_axis))
    assert layer_eqns(layer, x) <= linen_eqns(module, _params(layer), x)


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [(dict(), (2, 4), r"LinearGeneral\(\(3,\), \(2, 5\), axis=\(-1,\)\): expected sizes 3 on "
                      r"axis 1, got shape \(2, 4\).*Hint"),
     (dict(axis=2), (2, 3), r"expected inputs with axes \(2,\), got shape \(2, 3\)"),
     (dict(batch_axis={0: 4}), (3, 3), r"4 on axis 0.*shape \(3, 3\)"),
     (dict(batch_axis={0: 4}, axis=0), (4, 3), r"distinct from the batch axes")],
)
def test_linear_general_bad_inputs(kwargs, shape, match):
    layer = nnx.LinearGeneral(3, (2, 5), rngs=nnx.Rngs(0), **kwargs, **FAST_INIT)
    with pytest.raises(nnx.errors.ShapeMismatchError, match=match):
        layer(jnp.ones(shape))


@pytest.mark.parametrize("kwargs,match", [
    (dict(axis=(-1, -2)), r"one contracted axis per in_features entry \(1\).*axis=\(-1, -2\)"),
    (dict(batch_axis={1: 3}), r"batch_axis keys 0, 1.*got \[1\].*Hint"),
])
def test_linear_general_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nnx.LinearGeneral(3, 2, rngs=nnx.Rngs(0), **kwargs)


# ---------------------------------------------------------------- Einsum

EINSUM_CASES = [
    ("btd,dnh->btnh", (6, 2, 3), (4, 5, 6)),
    ("...d,dnh->...nh", (6, 2, 3), (4, 5, 6)),
    ("bd,d->b", (6,), (4, 6)),
    ("btnh,nhd->btd", (2, 3, 6), (4, 5, 2, 3)),
    ("b...,...o->bo", (2, 3, 5), (4, 2, 3)),
    ("bi, io -> ob", (6, 3), (4, 6)),
]


@pytest.mark.parametrize("equation,kernel_shape,shape", EINSUM_CASES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_einsum_matches_linen(equation, kernel_shape, shape, use_bias):
    ref_module = linen.Einsum(kernel_shape, equation, use_bias=use_bias, **FAST_INIT)
    x = normal(shape, seed=1)
    linen_shapes = jax.eval_shape(ref_module.init, jax.random.key(0), x)["params"]
    bias_shape = linen_shapes["bias"].shape if use_bias else None
    layer = nnx.Einsum(equation, kernel_shape, bias_shape, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    out, ref = layer(x), ref_module.apply(_params(layer), x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_einsum_equation_at_call_time_and_dtypes():
    layer = nnx.Einsum(None, (6, 3), (3,), dtype=jnp.bfloat16, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((2, 6), seed=2)
    out = layer(x, "bi,io->bo")
    ref = linen.Einsum((6, 3), "bi,io->bo", dtype=jnp.bfloat16).apply(_params(layer), x)
    assert out.dtype == ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kwargs", [dict(), dict(param_dtype=jnp.bfloat16),
                                    dict(bias_init=jax.nn.initializers.normal(1.0))])
def test_einsum_same_state_as_flax_nnx(kwargs):
    ours = nnx.Einsum("btd,dnh->btnh", (6, 2, 3), (2, 3), rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.Einsum("btd,dnh->btnh", (6, 2, 3), (2, 3), rngs=flax_nnx.Rngs(0),
                             **kwargs)
    assert_same_state_as_flax(ours, theirs)
    x = normal((2, 4, 6))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


def test_einsum_overrides_are_used():
    seen = {}

    def einsum(equation, *operands, **kwargs):
        seen["equation"], seen["kwargs"] = equation, kwargs
        return jnp.einsum(equation, *operands, **kwargs)

    layer = nnx.Einsum("a b,bc->ac", (2, 3), einsum_op=einsum, precision="highest",
                       preferred_element_type=jnp.float32, rngs=nnx.Rngs(0), **FAST_INIT)
    layer(jnp.ones((4, 2)))
    assert seen == {"equation": "ab,bc->ac",
                    "kwargs": {"precision": "highest", "preferred_element_type": jnp.float32}}


@pytest.mark.parametrize("equation,kernel_shape,shape", EINSUM_CASES[:4])
def test_einsum_jaxpr_no_larger_than_linen(equation, kernel_shape, shape):
    ref_module = linen.Einsum(kernel_shape, equation, **FAST_INIT)
    x = jnp.ones(shape)
    bias_shape = jax.eval_shape(ref_module.init, jax.random.key(0), x)["params"]["bias"].shape
    layer = nnx.Einsum(equation, kernel_shape, bias_shape, rngs=nnx.Rngs(0), **FAST_INIT)
    assert layer_eqns(layer, x) <= linen_eqns(ref_module, _params(layer), x)


@pytest.mark.parametrize("equation,match", [
    ("bi,io", r"Einsum\('bi,io', \(3, 2\)\): expected an explicit equation with '->'.*Hint"),
    ("bi->bo", r"exactly two operands.*got 0 commas"),
    ("bi,io,o->bo", r"got 2 commas"),
    ("bi,ijo->bo", r"kernel spec with 2 axes.*got 'ijo'"),
])
def test_einsum_bad_equations(equation, match):
    with pytest.raises(ValueError, match=match):
        nnx.Einsum(equation, (3, 2), rngs=nnx.Rngs(0), **FAST_INIT)
    layer = nnx.Einsum(None, (3, 2), rngs=nnx.Rngs(0), **FAST_INIT)
    with pytest.raises(ValueError, match=match.split(":")[-1]):
        layer(jnp.ones((1, 3)), equation)


def test_einsum_without_any_equation():
    layer = nnx.Einsum(None, (3, 2), rngs=nnx.Rngs(0), **FAST_INIT)
    with pytest.raises(ValueError, match=r"expected an einsum_str, got none.*Hint"):
        layer(jnp.ones((1, 3)))
