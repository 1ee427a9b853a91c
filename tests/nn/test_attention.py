"""MultiHeadAttention and the attention functions against flax.linen (same parameters)
and flax.nnx (same seed)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx
from jax.extend import core as jax_core

import nnxlib as nnx
from nnxlib.errors import CacheNotInitializedError, ShapeMismatchError

# Test data comes from numpy: every new shape drawn with jax.random costs a compile.


def _randomize(layer, seed: int = 1) -> None:
    """Non-trivial values for every parameter (zero biases would hide layout bugs)."""
    rng = np.random.default_rng(seed)
    for _, var in nnx.state(layer, nnx.Param).flat_state():
        var[...] = jnp.asarray(0.5 * rng.normal(size=var.shape), var.dtype)


def _linen_params(layer) -> dict:
    return {"params": nnx.to_pure_dict(nnx.state(layer, nnx.Param))}


def _normal(seed, shape, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr, those of nested jaxprs (jit, custom_jvp, ...) included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax_core.ClosedJaxpr):
                    total += _count_equations(sub.jaxpr)
                elif isinstance(sub, jax_core.Jaxpr):
                    total += _count_equations(sub)
    return total


def _flat(state) -> dict:
    return {tuple(path): var for path, var in state.flat_state()}


def _raw(value):
    value = value[...] if hasattr(value, "shape") or hasattr(value, "value") else value
    if jnp.issubdtype(jnp.asarray(value).dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(value))
    return np.asarray(value)


# ------------------------------------------------------------------ vs flax.linen


@pytest.mark.parametrize(
    "config,batch",
    [
        (dict(), (2,)),
        (dict(qkv_features=12, out_features=5), (2,)),
        (dict(use_bias=False), ()),
        (dict(normalize_qk=True), (2, 3)),
    ],
)
def test_self_attention_matches_linen(config, batch):
    layer = nnx.MultiHeadAttention(3, 6, decode=False, rngs=nnx.Rngs(0), **config)
    _randomize(layer)
    x = _normal(2, (*batch, 4, 6))
    ref = linen.MultiHeadDotProductAttention(3, **config).apply(_linen_params(layer), x)
    out = layer(x)
    assert out.shape == (*batch, 4, config.get("out_features", 6))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_cross_attention_matches_linen():
    layer = nnx.MultiHeadAttention(2, 4, qkv_features=8, out_features=3, rngs=nnx.Rngs(0))
    _randomize(layer)
    q, k, v = _normal(1, (2, 3, 4)), _normal(2, (2, 7, 4)), _normal(3, (2, 7, 4))
    lm = linen.MultiHeadDotProductAttention(2, qkv_features=8, out_features=3)
    params = _linen_params(layer)
    np.testing.assert_allclose(layer(q, k, v), lm.apply(params, q, k, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(q, k), lm.apply(params, q, k), rtol=1e-5, atol=1e-5)
    # Keys and values really come from their own inputs.
    assert not np.allclose(layer(q, k, v), layer(q, k))


def test_in_kv_features_projects_inputs_of_another_size():
    layer = nnx.MultiHeadAttention(2, 4, in_kv_features=6, rngs=nnx.Rngs(0))
    assert layer.key.kernel.shape == (6, 2, 2) and layer.query.kernel.shape == (4, 2, 2)
    _randomize(layer)
    q, kv = _normal(1, (2, 3, 4)), _normal(2, (2, 5, 6))
    ref = linen.MultiHeadDotProductAttention(2).apply(_linen_params(layer), q, kv)
    np.testing.assert_allclose(layer(q, kv), ref, rtol=1e-5, atol=1e-5)


def test_masks_match_linen():
    layer = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    _randomize(layer)
    x = _normal(1, (2, 5, 4))
    tokens = jnp.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    padding = nnx.make_attention_mask(tokens > 0, tokens > 0)
    mask = nnx.combine_masks(padding, nnx.make_causal_mask(tokens))
    ref = linen.MultiHeadDotProductAttention(2).apply(_linen_params(layer), x, mask=mask)
    out = layer(x, mask=mask)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Causal: the first position's output depends on nothing after it.
    y = x.at[:, 1:].set(100.0)
    np.testing.assert_allclose(layer(y, mask=mask)[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)
    # is_causal gives the same as the causal mask.
    np.testing.assert_allclose(layer(x, is_causal=True),
                               layer(x, mask=nnx.make_causal_mask(tokens)), rtol=1e-6)


@pytest.mark.parametrize(
    "dtype,param_dtype",
    [(jnp.bfloat16, jnp.float32), (None, jnp.bfloat16), (jnp.float16, jnp.float16)],
)
def test_dtypes_match_linen(dtype, param_dtype):
    layer = nnx.MultiHeadAttention(2, 4, dtype=dtype, param_dtype=param_dtype,
                                   rngs=nnx.Rngs(0))
    assert layer.query.kernel.dtype == param_dtype
    _randomize(layer)
    x = _normal(1, (2, 3, 4))
    ref = linen.MultiHeadDotProductAttention(2, dtype=dtype, param_dtype=param_dtype).apply(
        _linen_params(layer), x)
    out = layer(x)
    assert out.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("broadcast_dropout", [True, False])
def test_dropout_matches_linen_with_the_same_key(broadcast_dropout):
    layer = nnx.MultiHeadAttention(2, 4, dropout_rate=0.5, broadcast_dropout=broadcast_dropout,
                                   rngs=nnx.Rngs(0))
    _randomize(layer)
    x, key = _normal(1, (2, 6, 4)), jax.random.key(9)
    lm = linen.MultiHeadDotProductAttention(2, dropout_rate=0.5,
                                            broadcast_dropout=broadcast_dropout)
    params = _linen_params(layer)
    ref = lm.apply(params, x, deterministic=False, dropout_rng=key)
    out = layer(x, deterministic=False, rngs=key)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    deterministic = lm.apply(params, x, deterministic=True)
    assert not np.allclose(out, deterministic)
    np.testing.assert_allclose(layer(x, deterministic=True), deterministic, rtol=1e-5,
                               atol=1e-5)


def test_dropout_mode_follows_train_and_eval_and_stored_stream_advances():
    layer = nnx.MultiHeadAttention(2, 4, dropout_rate=0.5, rngs=nnx.Rngs(0, dropout=3))
    x = _normal(1, (1, 6, 4))
    layer.eval()
    np.testing.assert_array_equal(layer(x), layer(x))
    layer.train()
    count = int(layer.rngs.count[...])
    a, b = layer(x), layer(x)
    assert int(layer.rngs.count[...]) == count + 2
    assert not np.allclose(a, b)


def test_custom_attention_fn_with_the_linen_signature():
    seen = []

    def attention_fn(query, key, value, **kwargs):
        seen.append(sorted(kwargs))
        return linen.dot_product_attention(query, key, value, **kwargs)

    layer = nnx.MultiHeadAttention(2, 4, attention_fn=attention_fn, rngs=nnx.Rngs(0))
    x = _normal(1, (2, 3, 4))
    np.testing.assert_allclose(layer(x), nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))(x),
                               rtol=1e-6)
    assert "is_causal" not in seen[0] and "mask" in seen[0]


def test_sow_weights_records_the_softmax():
    layer = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    x = _normal(1, (2, 3, 4))
    layer(x, sow_weights=True)
    (weights,) = nnx.pop(layer, nnx.Intermediate)["attention_weights"].value
    assert weights.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    layer(x)
    assert not hasattr(layer, "attention_weights")


# ----------------------------------------------------------- functions vs linen


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_dot_product_attention_matches_linen(batch):
    q, k, v = _normal(1, (*batch, 4, 2, 3)), _normal(2, (*batch, 5, 2, 3)), _normal(
        3, (*batch, 5, 2, 6))
    bias = _normal(4, (*batch, 2, 4, 5))
    mask = jnp.asarray(np.random.default_rng(5).random((*batch, 1, 4, 5)) < 0.7)
    out = nnx.dot_product_attention(q, k, v, bias=bias, mask=mask)
    ref = linen.dot_product_attention(q, k, v, bias=bias, mask=mask)
    assert out.shape == (*batch, 4, 2, 6)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    key = jax.random.key(6)
    np.testing.assert_allclose(
        nnx.dot_product_attention_weights(q, k, bias, mask, dropout_rng=key, dropout_rate=0.3),
        linen.dot_product_attention_weights(q, k, bias, mask, dropout_rng=key,
                                            dropout_rate=0.3),
        rtol=1e-5, atol=1e-5)


def test_grouped_query_attention_matches_repeated_heads_and_flax_nnx():
    q, k, v = _normal(1, (2, 4, 6, 3)), _normal(2, (2, 5, 2, 3)), _normal(3, (2, 5, 2, 3))
    repeat = lambda a: jnp.repeat(a, 3, axis=-2)  # noqa: E731  key head h serves 3h..3h+2
    np.testing.assert_allclose(nnx.dot_product_attention(q, k, v),
                               nnx.dot_product_attention(q, repeat(k), repeat(v)), rtol=1e-5,
                               atol=1e-6)
    ours = nnx.MultiHeadAttention(4, 8, num_kv_heads=2, rngs=nnx.Rngs(0))
    ref = flax_nnx.MultiHeadAttention(4, 8, num_kv_heads=2, rngs=flax_nnx.Rngs(0))
    x = _normal(4, (2, 3, 8))
    np.testing.assert_allclose(ours(x), ref(x, decode=False), rtol=1e-5, atol=1e-5)


def test_mask_helpers_match_linen():
    tokens = jnp.array([[3, 1, 0], [2, 0, 0]])
    for ours, ref in [
        (nnx.make_attention_mask(tokens > 0, tokens > 0),
         linen.make_attention_mask(tokens > 0, tokens > 0)),
        (nnx.make_attention_mask(tokens, tokens, jnp.greater, extra_batch_dims=2,
                                 dtype=jnp.int32),
         linen.make_attention_mask(tokens, tokens, jnp.greater, extra_batch_dims=2,
                                   dtype=jnp.int32)),
        (nnx.make_causal_mask(tokens, extra_batch_dims=1),
         linen.make_causal_mask(tokens, extra_batch_dims=1)),
    ]:
        assert ours.shape == ref.shape and ours.dtype == ref.dtype
        np.testing.assert_array_equal(ours, ref)
    a, b = nnx.make_causal_mask(tokens), nnx.make_attention_mask(tokens > 0, tokens > 0)
    np.testing.assert_array_equal(nnx.combine_masks(a, None, b), linen.combine_masks(a, b))
    assert nnx.combine_masks(None, None) is None


# ------------------------------------------------------------- vs flax.nnx (seed)


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(qkv_features=8, out_features=5, in_kv_features=3, num_kv_heads=1),
        dict(normalize_qk=True, use_bias=False, param_dtype=jnp.bfloat16),
        dict(dropout_rate=0.1),
        dict(dropout_rate=0.1, keep_rngs=False),
        dict(kernel_init=nnx.initializers.normal(1.0), bias_init=nnx.initializers.normal(1.0),
             out_kernel_init=nnx.initializers.uniform()),
    ],
)
def test_same_state_as_flax_nnx_for_the_same_seed(config):
    ours = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0, dropout=1), **config)
    theirs = flax_nnx.MultiHeadAttention(2, 4, rngs=flax_nnx.Rngs(0, dropout=1), **config)
    mine, ref = _flat(nnx.state(ours)), _flat(flax_nnx.state(theirs))
    assert sorted(mine) == sorted(ref)
    for path, var in ref.items():
        assert type(mine[path]).__name__ == type(var).__name__, path
        assert mine[path].dtype == var.dtype, path
        np.testing.assert_array_equal(_raw(mine[path]), _raw(var), err_msg=str(path))


def test_dropout_outputs_equal_flax_nnx_for_the_same_seed():
    ours = nnx.MultiHeadAttention(2, 4, dropout_rate=0.5, rngs=nnx.Rngs(0, dropout=1))
    theirs = flax_nnx.MultiHeadAttention(2, 4, dropout_rate=0.5,
                                         rngs=flax_nnx.Rngs(0, dropout=1))
    x = _normal(1, (2, 5, 4))
    for _ in range(2):
        np.testing.assert_allclose(ours(x, deterministic=False),
                                   theirs(x, deterministic=False, decode=False), rtol=1e-5,
                                   atol=1e-6)


# ------------------------------------------------------------------------ decode


def _decode_all(layer, x):
    layer.init_cache(x.shape)
    step = nnx.jit(lambda layer, token: layer(token, decode=True))  # one compile, 6 calls
    return jnp.concatenate([step(layer, x[:, i:i + 1]) for i in range(x.shape[1])], axis=1)


@pytest.mark.parametrize("config", [dict(), dict(num_kv_heads=1, normalize_qk=True)])
def test_decoding_token_by_token_equals_the_causal_forward_pass(config):
    layer = nnx.MultiHeadAttention(2, 4, qkv_features=8, rngs=nnx.Rngs(0), **config)
    _randomize(layer)
    x = _normal(1, (3, 6, 4))
    full = layer(x, mask=nnx.make_causal_mask(x[..., 0]))
    np.testing.assert_allclose(_decode_all(layer, x), full, rtol=1e-5, atol=1e-5)
    assert int(layer.cache_index[...]) == 6
    # The cache holds every position's (normalised) key projection.
    keys = layer.key(x)
    if layer.key_ln is not None:
        keys = layer.key_ln(keys)
    np.testing.assert_allclose(layer.cached_key[...], keys, rtol=1e-5, atol=1e-6)


def test_decode_under_jit_matches_linen_cache():
    layer = nnx.MultiHeadAttention(2, 4, decode=True, rngs=nnx.Rngs(0))
    _randomize(layer)
    x = _normal(1, (2, 5, 4))
    layer.init_cache(x.shape)
    lm = linen.MultiHeadDotProductAttention(2, decode=True)
    # Applying to the whole sequence creates linen's (empty) cache of that length.
    _, cache = lm.apply(_linen_params(layer), x, mutable=["cache"])
    variables = {**_linen_params(layer), **cache}

    @nnx.jit
    def step(layer, token):
        return layer(token)

    for i in range(5):
        token = x[:, i:i + 1]
        ref, mutated = lm.apply(variables, token, mutable=["cache"])
        variables = {**variables, **mutated}
        np.testing.assert_allclose(step(layer, token), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.cached_value[...], variables["cache"]["cached_value"],
                               rtol=1e-5, atol=1e-6)
    assert int(layer.cache_index[...]) == int(variables["cache"]["cache_index"]) == 5


def test_init_cache_dtype_and_set_view():
    layer = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    layer.init_cache((2, 7, 4), dtype=jnp.bfloat16)
    assert type(layer.cached_key) is nnx.Cache
    assert layer.cached_key.shape == (2, 7, 2, 2) and layer.cached_key.dtype == jnp.bfloat16
    assert sorted(nnx.state(layer, nnx.Cache)) == ["cache_index", "cached_key", "cached_value"]
    fresh = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    fresh.set_view(decode=True, batch_size=(2, 3), max_length=5)
    assert fresh.decode is True and fresh.cached_key.shape == (2, 3, 5, 2, 2)


# -------------------------------------------------------------------------- jaxpr


def test_jaxpr_has_no_more_equations_than_linen():
    layer = nnx.MultiHeadAttention(2, 8, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    x = jnp.ones((2, 5, 8))
    mask = nnx.make_causal_mask(x[..., 0])
    lm = linen.MultiHeadDotProductAttention(2)
    params = jax.eval_shape(lm.init, jax.random.key(0), x)  # shapes suffice for a jaxpr
    ours = jax.make_jaxpr(lambda s, x, m: nnx.merge(graphdef, s)(x, mask=m))(state, x, mask)
    ref = jax.make_jaxpr(lambda p, x, m: lm.apply(p, x, mask=m))(params, x, mask)
    assert _count_equations(ours.jaxpr) <= _count_equations(ref.jaxpr)

    layer.init_cache(x.shape)
    graphdef, state = nnx.split(layer)
    token = x[:, :1]
    lm = linen.MultiHeadDotProductAttention(2, decode=True)
    variables = jax.eval_shape(lm.init, jax.random.key(0), x)

    def linen_step(v, t):
        return lm.apply(v, t, mutable=["cache"])

    def our_step(s, t):
        model = nnx.merge(graphdef, s)
        return model(t, decode=True), nnx.state(model, nnx.Cache)

    ours = jax.make_jaxpr(our_step)(state, token)
    ref = jax.make_jaxpr(linen_step)(variables, token)
    assert _count_equations(ours.jaxpr) <= _count_equations(ref.jaxpr)


# -------------------------------------------------------------------- bad inputs


def test_wrong_feature_size_names_the_projection_expected_and_actual():
    layer = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ShapeMismatchError,
                       match=r"MultiHeadAttention\.query\.kernel: expected inputs_q of shape "
                             r"\[batch\.\.\., length, 4\].*got shape \(2, 3, 5\).*Hint"):
        layer(jnp.ones((2, 3, 5)))
    with pytest.raises(ShapeMismatchError, match=r"\.key\.kernel: expected inputs_k.*\(2, 3, 6\)"):
        layer(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 6)))
    with pytest.raises(ValueError, match="inputs_v was given without inputs_k"):
        layer(jnp.ones((2, 3, 4)), inputs_v=jnp.ones((2, 3, 4)))


def test_wrong_mask_shape_names_the_argument_expected_and_actual():
    layer = nnx.MultiHeadAttention(2, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ShapeMismatchError,
                       match=r"MultiHeadAttention \(argument mask\): expected a mask "
                             r"broadcastable to .*\(2, 2, 3, 3\).*got shape \(2, 1, 3, 4\).*"
                             r"Hint"):
        layer(x, mask=jnp.ones((2, 1, 3, 4)))
    with pytest.raises(ShapeMismatchError, match=r"got shape \(3, 2, 2, 3, 3\)"):
        layer(x, mask=jnp.ones((3, 2, 2, 3, 3)))
    with pytest.raises(ShapeMismatchError, match="same rank"):
        nnx.combine_masks(jnp.ones((1, 3, 3)), jnp.ones((3, 3)))
    with pytest.raises(ShapeMismatchError, match=r"query and key depths.*query \(3, 2, 4\)"):
        nnx.dot_product_attention(jnp.ones((3, 2, 4)), jnp.ones((3, 2, 5)), jnp.ones((3, 2, 5)))


def test_decode_before_init_cache_raises_and_changes_nothing():
    layer = nnx.MultiHeadAttention(2, 4, decode=True, rngs=nnx.Rngs(0))
    before = nnx.clone(layer)
    with pytest.raises(CacheNotInitializedError,
                       match=r"MultiHeadAttention\.cached_key does not exist.*init_cache.*Hint"):
        layer(jnp.ones((1, 1, 4)))
    assert isinstance(CacheNotInitializedError("x"), ValueError)
    assert layer.cached_key is None
    assert nnx.graphdef(layer) == nnx.graphdef(before)


def test_decode_with_a_wrong_length_or_mask_leaves_the_cache_unchanged():
    layer = nnx.MultiHeadAttention(2, 4, decode=True, rngs=nnx.Rngs(0))
    layer.init_cache((2, 5, 4))
    layer(jnp.ones((2, 1, 4)))
    cached = layer.cached_key[...]
    with pytest.raises(ShapeMismatchError,
                       match=r"cached_key has shape \(2, 5, 2, 2\).*one position at a time.*"
                             r"expected inputs_q of shape \(2, 1, '...'\), got \(2, 3, 4\)"):
        layer(jnp.ones((2, 3, 4)))
    with pytest.raises(ShapeMismatchError, match=r"expected a mask .*\(2, 2, 1, 5\)"):
        layer(jnp.ones((2, 1, 4)), mask=jnp.ones((2, 1, 1, 3)))
    assert int(layer.cache_index[...]) == 1
    np.testing.assert_array_equal(layer.cached_key[...], cached)


def test_dropout_without_mode_or_keys_explains_the_fix():
    layer = nnx.MultiHeadAttention(2, 4, dropout_rate=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 3, 4))
    with pytest.raises(ValueError, match="deterministic is None.*Hint"):
        layer(x)
    no_stream = nnx.MultiHeadAttention(2, 4, dropout_rate=0.5, keep_rngs=False,
                                       rngs=nnx.Rngs(0))
    assert no_stream.rngs is None
    with pytest.raises(ValueError, match=r"MultiHeadAttention\.rngs: .*no random key.*Hint"):
        no_stream(x, deterministic=False)
    assert no_stream(x, deterministic=False, rngs=nnx.Rngs(dropout=1)).shape == (1, 3, 4)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"qkv_features \(6\) must be divisible by num_heads \(4\)"):
        nnx.MultiHeadAttention(4, 6, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"num_heads \(4\) must be divisible by num_kv_heads"):
        nnx.MultiHeadAttention(4, 8, num_kv_heads=3, rngs=nnx.Rngs(0))


def test_metadata_reaches_the_variables():
    layer = nnx.MultiHeadAttention(
        2, 4, normalize_qk=True, kernel_metadata={"out_sharding": ("embed", "heads", "kv")},
        out_kernel_metadata={"out_sharding": ("heads", "kv", "embed")},
        query_ln_scale_metadata={"out_sharding": ("kv",)}, rngs=nnx.Rngs(0))
    assert layer.query.kernel.out_sharding == ("embed", "heads", "kv")
    assert layer.out.kernel.out_sharding == ("heads", "kv", "embed")
    assert layer.query_ln.scale.out_sharding == ("kv",)
