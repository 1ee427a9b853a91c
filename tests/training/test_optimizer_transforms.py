"""Optimizer with optax transformations that take extra arguments (value=, value_fn=),
multi-transform and masked optimizers: each against plain optax on the same arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx


class Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 4, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


X = jax.random.normal(jax.random.key(0), (16, 3))
Y = jnp.sin(X.sum(1, keepdims=True))


def _loss(model):
    return jnp.mean((model(X) - Y) ** 2)


def _arrays(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _pure_loss(graphdef, params):
    return jnp.mean((nnx.merge(graphdef, params)(X) - Y) ** 2)


def _reference(tx, model, steps, extra=lambda loss_fn, params, loss, grads: {}):
    """Plain optax on the model's arrays (a State, as the Optimizer passes them)."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda v: v[...], params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    loss_fn = lambda p: _pure_loss(graphdef, p)  # noqa: E731
    opt_state = tx.init(params)
    for _ in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params,
                                       **extra(loss_fn, params, loss, grads))
        params = optax.apply_updates(params, updates)
    return nnx.to_pure_dict(params)


def _assert_close(a, b, rtol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6)


def test_reduce_on_plateau_receives_the_loss_under_jit():
    # rtol=0.5: a step must halve the loss to count as progress, so the plateau comes soon.
    tx = optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(
        patience=1, factor=0.5, rtol=0.5, accumulation_size=1))
    ref = _reference(tx, Net(nnx.Rngs(0)), 6,
                     extra=lambda loss_fn, params, loss, grads: {"value": loss})
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(_loss)(model)
        optimizer.update(model, grads, value=loss)

    for _ in range(6):
        step(model, optimizer)
    _assert_close(_arrays(model), ref)
    scale = optimizer.opt_state[1]["scale"][...]
    assert float(scale) < 1.0       # the plateau logic saw the losses and cut the step


def test_zoom_linesearch_gets_value_grad_and_value_fn():
    tx = optax.chain(optax.sgd(1.0), optax.scale_by_zoom_linesearch(max_linesearch_steps=8))
    ref = _reference(tx, Net(nnx.Rngs(0)), 3, extra=lambda loss_fn, params, loss, grads: {
        "value": loss, "grad": grads, "value_fn": loss_fn})
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        graphdef, _ = nnx.split(model, nnx.Param)
        loss, grads = nnx.value_and_grad(_loss)(model)
        optimizer.update(model, grads, value=loss, grad=grads,
                         value_fn=lambda params: _pure_loss(graphdef, params))
        return loss

    losses = [float(step(model, optimizer)) for _ in range(3)]
    _assert_close(_arrays(model), ref, rtol=1e-4)
    assert losses[-1] < losses[0]


def test_lbfgs_trains_like_plain_optax():
    tx = optax.lbfgs()
    ref = _reference(tx, Net(nnx.Rngs(0)), 2, extra=lambda loss_fn, params, loss, grads: {
        "value": loss, "grad": grads, "value_fn": loss_fn})
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(2):
        graphdef, _ = nnx.split(model, nnx.Param)
        loss, grads = nnx.value_and_grad(_loss)(model)
        optimizer.update(model, grads, value=loss, grad=grads,
                         value_fn=lambda params: _pure_loss(graphdef, params))
    _assert_close(_arrays(model), ref, rtol=1e-4)


def _labels(params):
    """'fast' for the hidden layer, 'frozen' for the output layer (a State like params)."""
    return nnx.map_state(lambda path, _: "fast" if path[0] == "hidden" else "frozen", params)


def test_multi_transform_updates_each_group_with_its_transformation():
    tx = optax.multi_transform({"fast": optax.adam(0.1), "frozen": optax.set_to_zero()},
                               _labels)
    ref = _reference(tx, Net(nnx.Rngs(0)), 3)
    model = Net(nnx.Rngs(0))
    out_kernel, hidden_kernel = model.out.kernel[...], model.hidden.kernel[...]
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    step = nnx.jit(lambda m, o: o.update(m, nnx.grad(_loss)(m)))
    for _ in range(3):
        step(model, optimizer)
    _assert_close(_arrays(model), ref)
    np.testing.assert_array_equal(model.out.kernel[...], out_kernel)      # frozen
    assert not np.allclose(model.hidden.kernel[...], hidden_kernel)           # trained
    # adam's moments exist for the "fast" group, keyed by parameter path.
    assert optimizer.opt_state["inner_states"]["fast"]["inner_state"][0]["mu"]["hidden"][
        "kernel"].shape == (3, 4)


@pytest.mark.parametrize("mask", [
    lambda params: jax.tree.map(lambda v: v.ndim == 2, params),          # kernels only
    lambda params: nnx.map_state(lambda path, _: path[0] == "out", params),
], ids=["by-rank", "by-path"])
def test_masked_transformation_matches_optax(mask):
    tx = optax.chain(optax.masked(optax.add_decayed_weights(0.5), mask), optax.sgd(0.1))
    ref = _reference(tx, Net(nnx.Rngs(0)), 3)
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(3):
        optimizer.update(model, nnx.grad(_loss)(model))
    _assert_close(_arrays(model), ref)
    # Decay changes the result: the masked variant is not plain sgd.
    plain = _reference(optax.sgd(0.1), Net(nnx.Rngs(0)), 3)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(_arrays(model)),
                                                     jax.tree.leaves(plain)))


def test_masked_adam_state_survives_split_merge():
    tx = optax.masked(optax.adam(0.1), lambda p: jax.tree.map(lambda v: v.ndim == 2, p))
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, nnx.grad(_loss)(model))
    graphdef, state = nnx.split((model, optimizer))
    model2, optimizer2 = nnx.merge(graphdef, state)
    optimizer2.update(model2, nnx.grad(_loss)(model2))
    ref = _reference(tx, Net(nnx.Rngs(0)), 2)
    _assert_close(_arrays(model2), ref)
