"""Tests for ``nnx.cached_partial`` and ``nnx.jit_partial``: same results as calling the
function with all arguments, state changes visible on the bound objects, and flax.nnx's
call signature."""

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx


def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def setup():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
    return model, optimizer


X, Y = jnp.ones((10, 2)), jnp.ones((10, 3))


def test_cached_partial_equals_full_calls():
    model, optimizer = setup()
    twin, twin_opt = setup()
    jitted = nnx.jit(train_step)
    cached = nnx.cached_partial(jitted, model, optimizer)
    for _ in range(3):
        np.testing.assert_allclose(cached(X, Y), jitted(twin, twin_opt, X, Y), rtol=1e-6)
    np.testing.assert_allclose(model.kernel[...], twin.kernel[...], rtol=1e-6)
    assert int(optimizer.step[...]) == int(twin_opt.step[...]) == 3
    assert cached.args == (model, optimizer) and cached.func is jitted
    assert "2 bound" in repr(cached)


def test_cached_partial_allows_structure_changes_and_plain_functions():
    model, _ = setup()

    @nnx.jit
    def tag(model, value):
        model.note = nnx.Variable(value)  # a new attribute: the general path, once

    step = nnx.cached_partial(tag, model)
    step(jnp.array(1.0))
    step(jnp.array(2.0))
    assert float(model.note[...]) == 2.0
    assert nnx.cached_partial(lambda a, b, c=0: a + b + c, 1)(2, c=3) == 6


def test_jit_partial_equals_jit():
    model, optimizer = setup()
    twin, twin_opt = setup()
    step = nnx.jit_partial(train_step, model, optimizer)
    losses = [float(step(X, Y)) for _ in range(3)]
    expected = [float(nnx.jit(train_step)(twin, twin_opt, X, Y)) for _ in range(3)]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    assert losses[0] > losses[-1]
    np.testing.assert_allclose(model.bias[...], twin.bias[...], rtol=1e-6)


def test_jit_partial_argnums_count_the_bound_arguments():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    traces = []

    def apply(model, mode, x):
        traces.append(mode)
        return model(x) if mode == "plain" else -model(x)

    step = nnx.jit_partial(apply, model, static_argnums=1)
    np.testing.assert_allclose(step("neg", X), -step("plain", X), rtol=1e-6)
    step("plain", X)
    assert traces == ["neg", "plain"]
    donating = nnx.jit_partial(lambda m, x: m(x), model, donate_argnums=1)
    np.testing.assert_allclose(donating(jnp.ones((1, 2))), model(jnp.ones((1, 2))))


def test_signatures_follow_flax():
    flax_nnx = pytest.importorskip("flax.nnx")
    ours = inspect.signature(nnx.jit_partial).parameters
    theirs = inspect.signature(flax_nnx.jit_partial).parameters
    flax_names = list(theirs)
    assert list(ours) == flax_names
    for name in flax_names:
        assert ours[name].kind == theirs[name].kind
        assert ours[name].default == theirs[name].default
    ours_cp = list(inspect.signature(nnx.cached_partial).parameters)
    theirs_cp = list(inspect.signature(flax_nnx.cached_partial).parameters)
    assert ours_cp == theirs_cp
