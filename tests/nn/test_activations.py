"""Tests for nnxlib.nn.activations: flax.nnx name coverage, JAX identity, PReLU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib.nn import activations

NAMES = [n for n in activations.__all__ if n != "PReLU"]


def test_every_flax_nnx_activation_exists_at_top_level():
    import flax.nnx.nn.activations as flax_activations

    flax_names = {n for n in dir(flax_activations)
                  if not n.startswith("_") and getattr(flax_nnx, n, None) is
                  getattr(flax_activations, n)}
    assert flax_names <= set(activations.__all__)
    for name in activations.__all__:
        assert getattr(nnx, name) is getattr(activations, name)


@pytest.mark.parametrize("name", NAMES)
def test_functions_are_jax_functions(name):
    expected = jnp.tanh if name == "tanh" else getattr(jax.nn, name)
    assert getattr(nnx, name) is expected


def test_prelu_matches_flax_nnx():
    x = jnp.linspace(-3.0, 3.0, 13)
    ours, ref = nnx.PReLU(0.2), flax_nnx.PReLU(0.2)
    np.testing.assert_array_equal(ours(x), ref(x))
    assert type(ours.negative_slope) is nnx.Param and ours.negative_slope.shape == ()
    np.testing.assert_allclose(ours(x), np.where(x >= 0, x, 0.2 * x), rtol=1e-6)


def test_prelu_dtypes():
    x = jnp.array([-2.0, 1.0], jnp.bfloat16)
    assert nnx.PReLU()(x).dtype == jnp.bfloat16                       # input dtype wins
    assert nnx.PReLU(dtype=jnp.float32)(x).dtype == jnp.float32
    assert nnx.PReLU(param_dtype=jnp.float16).negative_slope.dtype == jnp.float16


def test_prelu_slope_is_trainable():
    act = nnx.PReLU(0.5)
    graphdef, state = nnx.split(act)
    grads = jax.grad(lambda s: nnx.merge(graphdef, s)(jnp.array([-2.0, 3.0])).sum())(state)
    np.testing.assert_allclose(grads["negative_slope"][...], -2.0)
