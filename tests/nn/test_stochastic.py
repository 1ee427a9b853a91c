"""Tests for nnxlib.nn.stochastic.Dropout: statistics, determinism, RNG handling, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_drop_fraction_scaling_and_mean(rate):
    n = 200_000
    x = jnp.full((n,), 3.0)
    y = np.asarray(nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))(x))
    dropped = y == 0.0
    # Binomial fraction: 5 standard deviations is a safe bound for a fixed seed.
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[~dropped], 3.0 / (1 - rate), rtol=1e-6)
    assert abs(y.mean() - 3.0) < 0.05 * 3.0


def test_matches_flax_nnx_mask_for_same_seed():
    x = jax.random.normal(jax.random.key(0), (4, 16))
    ours = nnx.Dropout(0.3, broadcast_dims=(0,), rngs=nnx.Rngs(dropout=5))
    ref = flax_nnx.Dropout(0.3, broadcast_dims=(0,), rngs=flax_nnx.Rngs(dropout=5))
    for _ in range(3):  # the stored stream advances identically
        np.testing.assert_array_equal(ours(x), ref(x))
    key = jax.random.key(9)
    np.testing.assert_array_equal(nnx.Dropout(0.5)(x, rngs=key),
                                  flax_nnx.Dropout(0.5)(x, rngs=key))


def test_deterministic_and_rate_zero_return_input_unchanged():
    x = jnp.arange(5.0)
    assert nnx.Dropout(0.5, deterministic=True)(x) is x
    assert nnx.Dropout(0.5, rngs=nnx.Rngs(0))(x, deterministic=True) is x
    assert nnx.Dropout(0.0)(x) is x  # no rngs needed either
    # The call argument overrides the constructor.
    y = nnx.Dropout(0.5, deterministic=True, rngs=nnx.Rngs(0))(jnp.ones(100),
                                                               deterministic=False)
    assert (np.asarray(y) == 0).any()


def test_rate_one_returns_zeros_without_rngs():
    y = nnx.Dropout(1.0)(jnp.ones((2, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, jnp.zeros((2, 3)))


def test_broadcast_dims_share_the_mask():
    y = np.asarray(nnx.Dropout(0.5, broadcast_dims=(0, 2), rngs=nnx.Rngs(0))(
        jnp.ones((6, 40, 5))))
    assert (y == y[:1, :, :1]).all()   # constant along axes 0 and 2
    column = y[0, :, 0]
    assert (column == 0).any() and (column == 2).any()


def test_stored_stream_is_forked_and_advances():
    rngs = nnx.Rngs(dropout=1)
    drop = nnx.Dropout(0.5, rngs=rngs)
    assert int(rngs.dropout.count[...]) == 1            # fork drew one key
    assert isinstance(drop.rngs, nnx.RngStream) and drop.rngs.tag == "dropout"
    x = jnp.ones(64)
    first, second = drop(x), drop(x)
    assert not np.array_equal(first, second)            # a new key per call
    assert int(drop.rngs.count[...]) == 2
    assert int(rngs.dropout.count[...]) == 1            # the caller's stream is untouched
    again = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(again(x), first)      # same seed, same masks
    assert "rngs" in nnx.state(drop)                    # randomness is model state


def test_rng_collection_and_default_fallback():
    x = jnp.ones(64)
    custom = nnx.Dropout(0.5, rng_collection="noise", rngs=nnx.Rngs(noise=3))
    assert custom.rngs.tag == "noise"
    fallback = nnx.Dropout(0.5, rngs=nnx.Rngs(3))      # no 'dropout' stream: uses default
    assert fallback.rngs.tag == "default"
    np.testing.assert_array_equal(custom(x), fallback(x))
    # An RngStream is forked the same way as rngs[rng_collection].
    from_stream = nnx.Dropout(0.5, rngs=nnx.Rngs(noise=3).noise)
    assert from_stream.rngs.tag == "noise"
    np.testing.assert_array_equal(from_stream(x), nnx.Dropout(0.5, rng_collection="noise",
                                                              rngs=nnx.Rngs(noise=3))(x))


def test_call_rngs_take_precedence_over_stored():
    x = jnp.ones(64)
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    key = jax.random.key(123)
    by_key = drop(x, rngs=key)
    np.testing.assert_array_equal(drop(x, rngs=key), by_key)   # a raw key is used as is
    assert int(drop.rngs.count[...]) == 0                       # stored stream not used
    call_rngs = nnx.Rngs(dropout=7)
    by_rngs = drop(x, rngs=call_rngs)
    assert int(call_rngs.dropout.count[...]) == 1
    expected = nnx.Dropout(0.5)(x, rngs=jax.random.fold_in(jax.random.key(7), 0))
    np.testing.assert_array_equal(by_rngs, expected)
    stream = nnx.Rngs(dropout=7).dropout
    np.testing.assert_array_equal(drop(x, rngs=stream), expected)


def test_missing_rngs_error_explains_fix():
    with pytest.raises(ValueError, match=r"`deterministic` is False, but no `rngs` argument "
                       r"was provided to Dropout.*Hint.*Rngs\(dropout=0\)"):  # flax's phrase
        nnx.Dropout(0.5)(jnp.ones(3))


def test_missing_deterministic_error():
    drop = nnx.Dropout(0.5, deterministic=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="deterministic.*Hint"):
        drop(jnp.ones(3))
    assert drop(jnp.ones(3), deterministic=True).shape == (3,)


def test_bad_rngs_types():
    with pytest.raises(TypeError, match="Rngs"):
        nnx.Dropout(0.5, rngs=0)
    with pytest.raises(TypeError, match="Rngs"):
        nnx.Dropout(0.5)(jnp.ones(3), rngs="dropout")


def test_train_eval_toggle_through_parent_module():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.drop(x)

    model = Model(nnx.Rngs(0))
    x = jnp.ones(50)
    model.eval()
    assert model.drop.deterministic is True
    assert model(x) is x
    model.train()
    assert (np.asarray(model(x)) == 0).any()


def test_under_jit_keys_advance_through_state():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=2))
    graphdef, state = nnx.split(drop)

    @jax.jit
    def apply(state, x):
        module = nnx.merge(graphdef, state)
        return module(x), nnx.state(module)

    x = jnp.ones(32)
    y1, state = apply(state, x)
    y2, state = apply(state, x)
    eager = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(y1, eager(x))
    np.testing.assert_array_equal(y2, eager(x))


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (simulated) devices")
@pytest.mark.parametrize("broadcast_dims", [(), (1,), (0,)])
def test_mask_follows_explicitly_sharded_inputs(broadcast_dims):
    # flax.nnx gives the same values, except for a broadcast over the sharded dimension,
    # where it fails (its size-1 mask cannot be sharded there; nnxlib shards the mask
    # once broadcast). The mask is the one of the same key without any mesh.
    from jax.sharding import AxisType
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((2, 2), ("X", "Y"), axis_types=(AxisType.Explicit,) * 2)
    plain = np.arange(32.0).reshape(4, 8)
    unsharded = nnx.Dropout(0.5, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=3))(
        jnp.asarray(plain))
    with jax.set_mesh(mesh):
        x = jax.sharding.reshard(jnp.asarray(plain), P("X", None))
        ours = nnx.Dropout(0.5, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=3))
        y = ours(x)
        jitted = nnx.jit(lambda d, x: d(x))(ours, x)
        if 0 not in broadcast_dims:
            ref = flax_nnx.Dropout(0.5, broadcast_dims=broadcast_dims,
                                   rngs=flax_nnx.Rngs(dropout=3))
            np.testing.assert_array_equal(y, ref(x))
        else:
            ref = flax_nnx.Dropout(0.5, broadcast_dims=broadcast_dims,
                                   rngs=flax_nnx.Rngs(dropout=3))
            with pytest.raises(ValueError):
                ref(x)
    assert jax.typeof(y).sharding.spec == P("X", None)
    assert jax.typeof(jitted).sharding.spec == P("X", None)
    np.testing.assert_array_equal(y, unsharded)
