"""Embed against flax.linen.Embed (same table) and flax.nnx.Embed (same seed)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from tests.nn.layer_oracles import assert_same_state_as_flax, layer_eqns, linen_eqns, normal


def _table(num, features, param_dtype=jnp.float32, **kwargs):
    layer = nnx.Embed(num, features, param_dtype=param_dtype,
                      embedding_init=jax.nn.initializers.zeros, rngs=nnx.Rngs(0), **kwargs)
    layer.embedding[...] = normal((num, features), seed=3, dtype=param_dtype)
    return layer


def _vars(layer):
    return {"params": {"embedding": layer.embedding[...]}}


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
@pytest.mark.parametrize("num", [1, 7])
def test_lookup_matches_linen(shape, num):
    layer = _table(num, 5)
    idx = jnp.asarray(np.random.default_rng(0).integers(-num, num, shape), jnp.int32)
    out = layer(idx)
    assert out.shape == (*shape, 5)
    if shape or num > 1:  # linen cannot broadcast its one row to a scalar index
        np.testing.assert_array_equal(out, linen.Embed(num, 5).apply(_vars(layer), idx))
    # Negative indices count from the end, as in NumPy.
    np.testing.assert_array_equal(out, np.asarray(layer.embedding[...])[np.asarray(idx)])


@pytest.mark.parametrize(
    "dtype,param_dtype",
    [(None, jnp.float32), (jnp.bfloat16, jnp.float32), (None, jnp.bfloat16),
     (jnp.float32, jnp.float16)],
)
def test_dtypes_match_linen(dtype, param_dtype):
    layer = _table(6, 4, param_dtype, dtype=dtype)
    ref_module = linen.Embed(6, 4, dtype=dtype, param_dtype=param_dtype)
    idx = jnp.array([[0, 5, 2]])
    out, ref = layer(idx), ref_module.apply(_vars(layer), idx)
    assert out.dtype == ref.dtype == (dtype or param_dtype)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))
    q = normal((2, 4), seed=1)
    att = layer.attend(q)
    # flax.nnx (unlike linen) computes attend in the table's dtype when dtype is None.
    att_ref = linen.Embed(6, 4, dtype=dtype or param_dtype, param_dtype=param_dtype).apply(
        _vars(layer), q, method="attend")
    assert att.shape == (2, 6) and att.dtype == att_ref.dtype == (dtype or param_dtype)
    np.testing.assert_allclose(np.asarray(att, np.float32), np.asarray(att_ref, np.float32),
                               rtol=1e-2, atol=1e-2)


def test_attend_is_dot_with_table():
    layer = _table(9, 3)
    q = normal((2, 4, 3), seed=2)
    np.testing.assert_allclose(layer.attend(q), np.asarray(q) @ np.asarray(
        layer.embedding[...]).T, rtol=1e-5, atol=1e-5)


def test_out_of_range_index_gives_nan_like_linen():
    layer = _table(3, 2)
    out = layer(jnp.array([0, 3]))
    assert np.isnan(np.asarray(out[1])).all() and not np.isnan(np.asarray(out[0])).any()


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(param_dtype=jnp.bfloat16),
     dict(embedding_init=jax.nn.initializers.normal(0.5)),
     dict(embedding_metadata={"note": "token table"})],
)
def test_same_state_as_flax_nnx(kwargs):
    ours = nnx.Embed(11, 4, rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.Embed(11, 4, rngs=flax_nnx.Rngs(0), **kwargs)
    assert_same_state_as_flax(ours, theirs)
    idx = jnp.array([1, 10, 3])
    np.testing.assert_array_equal(ours(idx), theirs(idx))
    if "embedding_metadata" in kwargs:
        assert ours.embedding.note == "token table"


def test_jaxpr_no_larger_than_linen():
    layer = _table(7, 4)
    idx = jnp.zeros((2, 3), jnp.int32)
    assert layer_eqns(layer, idx) <= linen_eqns(linen.Embed(7, 4), _vars(layer), idx)
    q = jnp.ones((2, 4))
    assert layer_eqns(layer, q, method="attend") <= linen_eqns(
        linen.Embed(7, 4), _vars(layer), q, method="attend")


def test_float_indices_are_rejected_with_a_hint():
    layer = _table(5, 2)
    with pytest.raises(ValueError, match=r"Embed\(5, 2\): expected integer indices, got "
                                         r"dtype float32.*Hint: .*astype"):
        layer(jnp.array([1.0, 2.0]))


def test_attend_with_wrong_size_names_layer_and_sizes():
    layer = _table(5, 2)
    with pytest.raises(nnx.errors.ShapeMismatchError,
                       match=r"Embed\(5, 2\)\.attend: expected inputs whose last axis has 2 "
                             r"entries.*shape \(3, 4\).*Hint"):
        layer.attend(jnp.ones((3, 4)))


def test_grad_flows_to_looked_up_rows_only():
    layer = _table(4, 2)
    graphdef, state = nnx.split(layer)

    def loss(state):
        return nnx.merge(graphdef, state)(jnp.array([1, 1, 3])).sum()

    g = jax.grad(loss)(state)["embedding"][...]
    np.testing.assert_array_equal(g, np.array([[0, 0], [2, 2], [0, 0], [1, 1]], np.float32))
