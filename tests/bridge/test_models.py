"""Real Linen models wrapped with ToNNX: same outputs as Linen, same training as Linen+optax.

Models: an MLP, a CNN with BatchNorm and Dropout, and a transformer block stack built with
``nn.scan`` and ``nn.with_logical_partitioning``.
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import nnxlib as nnx
from bridge import ToNNX, nnx_attrs_to_linen_vars


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        for width in (16, 16):
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(3)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.3, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def _dense(features, names):
    return nn.Dense(features, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), names))


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=2, qkv_features=8, kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("embed", "heads", "kv")))(h)
        x = x + h
        h = _dense(16, ("embed", "mlp"))(nn.LayerNorm()(x))
        return x + _dense(8, ("mlp", "embed"))(nn.gelu(h)), None


class Transformer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=2, metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack()(x, None)
        return nn.Dense(3)(x.mean(axis=1))


CASES = {
    "mlp": (MLP, (4, 5)),
    "cnn": (CNN, (4, 6, 6, 2)),
    "transformer": (Transformer, (2, 4, 8)),
}


def _linen_variables(model):
    return nnx_attrs_to_linen_vars(nnx.state(model, nnx.Not(nnx.RngState)))


def _data(shape):
    x = jax.random.normal(jax.random.key(10), shape)
    y = jax.random.randint(jax.random.key(11), (shape[0],), 0, 3)
    return x, y


_WRAPPED: dict = {}


def _wrapped(name):
    """A fresh copy of the wrapped model (lazy_init, which compiles, runs once per model)."""
    if name not in _WRAPPED:
        cls, shape = CASES[name]
        x, _ = _data(shape)
        _WRAPPED[name] = ToNNX(cls(), rngs=nnx.Rngs(0, dropout=1)).lazy_init(x, train=False)
    return nnx.clone(_WRAPPED[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_equal_linen_apply(name):
    cls, shape = CASES[name]
    x, _ = _data(shape)
    model = _wrapped(name)
    variables = _linen_variables(model)
    np.testing.assert_allclose(model(x, train=False), cls().apply(variables, x, train=False),
                               rtol=1e-5, atol=1e-6)


def test_transformer_keeps_logical_partitioning():
    x, _ = _data(CASES["transformer"][1])
    model = _wrapped("transformer")
    qkv = model.ScanBlock_0.MultiHeadDotProductAttention_0.query.kernel
    assert qkv.linen_meta_type is nn.LogicallyPartitioned
    assert qkv.out_sharding == ("layers", "embed", "heads", "kv")
    reference = jax.eval_shape(Transformer().init, jax.random.key(0), x)
    assert nn.get_partition_spec(_linen_variables(model)) == nn.get_partition_spec(reference)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_steps_match_linen_with_optax(name):
    cls, shape = CASES[name]
    x, y = _data(shape)
    tx = optax.adam(1e-2)
    model = _wrapped(name)
    start = _linen_variables(model)
    keys = nnx.clone(model.rngs)  # replays the dropout keys the wrapper will draw
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @jax.jit
    def linen_step(params, rest, opt_state, key):
        def loss_fn(params):
            logits, updated = cls().apply({"params": params, **rest}, x, rngs={"dropout": key},
                                          mutable=list(rest))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updated

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    params = start["params"]
    rest = {k: v for k, v in start.items() if k != "params"}
    opt_state = tx.init(params)
    for _ in range(3):
        drawn = {name: stream() for name, stream in keys.items()}
        loss = nnx_step(model, optimizer, x, y)
        params, rest, opt_state, linen_loss = linen_step(params, rest, opt_state,
                                                         drawn["dropout"])
        np.testing.assert_allclose(loss, linen_loss, rtol=1e-5)
    final = _linen_variables(model)
    expected = nn.meta.unbox({"params": params, **rest})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 nn.meta.unbox(final), expected)
