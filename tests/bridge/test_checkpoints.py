"""load_linen_variables: Linen checkpoints into ToNNX-wrapped and native nnxlib models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from bridge import ToNNX, load_linen_variables

X = jax.random.normal(jax.random.key(0), (4, 3))


class LinenNet(nn.Module):
    def setup(self):
        self.layers = [nn.Dense(5), nn.Dense(2)]
        self.norm = nn.BatchNorm(use_running_average=True)

    def __call__(self, x):
        return self.layers[1](self.norm(nn.relu(self.layers[0](x))))


class NativeNet(nnx.Module):
    def __init__(self, rngs):
        self.layers = [nnx.Linear(3, 5, rngs=rngs), nnx.Linear(5, 2, rngs=rngs)]
        self.norm = nnx.BatchNorm(5, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return self.layers[1](self.norm(nnx.relu(self.layers[0](x))))


def _saved():
    variables = LinenNet().init(jax.random.key(42), X)
    stats = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])  # not the defaults
    return {"params": variables["params"], "batch_stats": stats}


@pytest.mark.parametrize("nested", [False, True])
def test_into_a_native_model_with_list_naming(nested):
    saved = _saved()
    model = NativeNet(nnx.Rngs(0))
    load_linen_variables(model, {"params": saved} if nested else saved)
    np.testing.assert_allclose(model(X), LinenNet().apply(saved, X), rtol=1e-5)
    np.testing.assert_array_equal(model.norm.mean[...], saved["batch_stats"]["norm"]["mean"])


def test_into_a_tonnx_wrapped_model():
    saved = _saved()
    model = ToNNX(LinenNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    load_linen_variables(model, saved)
    np.testing.assert_allclose(model(X), LinenNet().apply(saved, X), rtol=1e-6)


def test_mismatch_lists_paths_and_changes_nothing():
    saved = _saved()
    model = NativeNet(nnx.Rngs(0))
    before = jax.tree.map(lambda v: v, nnx.state(model))
    bad = {"params": {**saved["params"], "extra": {"kernel": jnp.ones(2)}},
           "batch_stats": saved["batch_stats"]}
    bad["params"]["layers_1"] = {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}
    with pytest.raises(nnx.errors.StateMismatchError) as info:
        load_linen_variables(model, bad)
    message = str(info.value)
    assert "params/extra/kernel" in message
    assert "model.layers[1].kernel" in message and "(4, 2)" in message
    after = nnx.state(model)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), after, before)


def test_strict_false_leaves_missing_variables():
    saved = _saved()
    model = NativeNet(nnx.Rngs(0))
    mean = model.norm.mean[...]
    with pytest.raises(nnx.errors.StateMismatchError, match=r"model\.norm\.mean"):
        load_linen_variables(model, {"params": saved["params"]})
    load_linen_variables(model, {"params": saved["params"]}, strict=False)
    np.testing.assert_array_equal(model.norm.mean[...], mean)
    np.testing.assert_array_equal(model.layers[0].kernel[...],
                                  saved["params"]["layers_0"]["kernel"])


def test_uninitialised_wrapper_is_an_error():
    with pytest.raises(nnx.errors.LazyInitError, match="lazy_init"):
        load_linen_variables(ToNNX(LinenNet(), rngs=nnx.Rngs(0)), _saved())
