"""Pooling functions against flax.linen's (flax.nnx re-exports the same functions)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx
from flax.linen import pooling

import nnxlib as nnx
from tests.nn.layer_oracles import count_eqns, normal

PADDINGS = ["VALID", "SAME", ((1, 0), (0, 2))]


def _padding(padding, rank):
    return padding if isinstance(padding, str) else padding[:rank]


def _linen(name, x, batch, *args, **kwargs):
    """linen's function on one folded batch axis (linen pads only one batch axis when
    the padding is explicit), unfolded again: the oracle for any number of batch axes."""
    if len(batch) > 1:
        x = x.reshape(-1, *x.shape[len(batch):])
    y = getattr(pooling, name)(x, *args, **kwargs)
    return y.reshape(*batch, *y.shape[1:]) if len(batch) > 1 else y


@pytest.mark.parametrize("name", ["max_pool", "min_pool", "avg_pool"])
@pytest.mark.parametrize("window,strides", [((2,), None), ((3,), (2,)), ((2, 2), (2, 2)),
                                            ((3, 2), (1, 2))])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_matches_linen(name, window, strides, padding, batch):
    padding = _padding(padding, len(window))
    x = normal((*batch, *(7, 6)[: len(window)], 3))
    out = getattr(nnx, name)(x, window, strides=strides, padding=padding)
    ref = _linen(name, x, batch, window, strides=strides, padding=padding)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("window,strides", [((3,), None), ((3, 2), (2, 1)), ((2, 3), (2, 2))])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_avg_pool_without_padding_counts_matches_linen(window, strides, padding, batch):
    padding = _padding(padding, len(window))
    x = normal((*batch, *(7, 5)[: len(window)], 2), seed=1)
    out = nnx.avg_pool(x, window, strides, padding, count_include_pad=False)
    ref = _linen("avg_pool", x, batch, window, strides, padding, count_include_pad=False)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_flax_nnx_exports_the_same_functions():
    x = normal((1, 4, 4, 2), seed=2)
    for name in ["avg_pool", "max_pool", "min_pool"]:
        np.testing.assert_allclose(getattr(nnx, name)(x, (2, 2), (2, 2), "SAME"),
                                   getattr(flax_nnx, name)(x, (2, 2), (2, 2), "SAME"))


def test_generic_pool_matches_linen_and_numpy():
    x = normal((2, 6, 3), seed=3)
    out = nnx.pool(x, 1.0, jax.lax.mul, (3,), (3,), "VALID")
    ref = pooling.pool(x, 1.0, jax.lax.mul, (3,), (3,), "VALID")
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(out, np.asarray(x).reshape(2, 2, 3, 3).prod(2), rtol=1e-5)


def test_max_and_min_pool_take_integers():
    x = jnp.array([[-5], [3], [-7], [2]], jnp.int32)
    np.testing.assert_array_equal(nnx.max_pool(x, (2,), padding="SAME")[:, 0], [3, 3, 2, 2])
    np.testing.assert_array_equal(nnx.min_pool(x, (2,), padding="SAME")[:, 0], [-5, -7, -7, 2])
    avg = nnx.avg_pool(x, (2,), (2,))
    assert avg.dtype == jnp.float32
    np.testing.assert_allclose(avg[:, 0], [-1.0, -2.5])


def test_half_precision_stays_half():
    x = normal((1, 4, 1), dtype=jnp.bfloat16)
    assert nnx.avg_pool(x, (2,)).dtype == jnp.bfloat16
    assert nnx.avg_pool(x, (2,), padding="SAME", count_include_pad=False).dtype == jnp.bfloat16


@pytest.mark.parametrize("call", [
    lambda m, x: m.max_pool(x, (2, 2), (2, 2)),
    lambda m, x: m.avg_pool(x, (3, 3), padding="SAME"),
    lambda m, x: m.avg_pool(x, (3, 3), padding="SAME", count_include_pad=False),
])
@pytest.mark.parametrize("shape", [(6, 6, 2), (2, 6, 6, 2)])
def test_jaxpr_no_larger_than_linen(call, shape):
    x = jnp.ones(shape)
    ours = count_eqns(jax.make_jaxpr(lambda x: call(nnx, x))(x).jaxpr)
    theirs = count_eqns(jax.make_jaxpr(lambda x: call(linen, x))(x).jaxpr)
    assert ours <= theirs, (ours, theirs)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(window_shape=(2, 0)), r"max_pool: expected window_shape .*positive.*got \(2, 0\)"),
     (dict(window_shape=(2, 2), strides=(1,)), r"strides as 2 positive ints.*got \(1,\)"),
     (dict(window_shape=(2, 2), padding="FULL"), r"padding 'SAME', 'VALID'.*got 'FULL'"),
     (dict(window_shape=(2, 2), padding=((1, 1),)), r"2 \(low, high\) pairs.*Hint"),
     (dict(window_shape=(2, 2, 2, 2)), r"rank at least 5.*shape \(1, 4, 4, 2\).*Hint")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nnx.max_pool(jnp.ones((1, 4, 4, 2)), **kwargs)
