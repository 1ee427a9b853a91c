"""EMA against a hand-computed average and flax.nnx's EMA; TrainState against plain optax
and flax.nnx's TrainState."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx as fnnx

import nnxlib as nnx


class Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.bn(self.linear(x))))


X = jax.random.normal(jax.random.key(0), (8, 3))
Y = jnp.sum(X, axis=1, keepdims=True)


def _loss(model):
    return jnp.mean((model(X) - Y) ** 2)


# ------------------------------------------------------------------------------ EMA
def test_ema_follows_the_formula_inside_nnx_jit():
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    ema = nnx.EMA(model, decay=0.8, only=nnx.Param)
    expected = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    @nnx.jit
    def step(model, optimizer, ema):
        optimizer.update(model, nnx.grad(_loss)(model))
        ema.update(model)

    for _ in range(3):
        step(model, optimizer, ema)
        for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            expected[path] = 0.8 * expected[path] + 0.2 * np.asarray(value[...])
    for path, value in nnx.to_flat_state(nnx.state(ema.params)):
        np.testing.assert_allclose(value[...], expected[path], rtol=1e-5, atol=1e-6)
    # Only Params are averaged; the batch statistics are not.
    assert ("bn", "mean") not in dict(nnx.to_flat_state(nnx.state(ema.params)))


def test_ema_apply_to_shares_the_averages_and_the_rest():
    model = Net(nnx.Rngs(0))
    ema = nnx.EMA(model, decay=0.5, only=nnx.Param)
    averaged = ema.apply_to(model)
    assert averaged.linear.kernel is ema.params.linear.kernel
    assert averaged.bn.mean is model.bn.mean            # untracked: the model's own
    assert averaged.linear.kernel is not model.linear.kernel
    model.linear.kernel[...] = model.linear.kernel[...] + 2.0
    ema.update(model)
    np.testing.assert_allclose(averaged.linear.kernel[...],
                               model.linear.kernel[...] - 1.0, rtol=1e-6)
    assert averaged(X).shape == (8, 1)


def test_ema_same_state_as_flax_nnx():
    ours = Net(nnx.Rngs(0))

    class FNet(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(3, 4, rngs=rngs)
            self.bn = fnnx.BatchNorm(4, rngs=rngs)
            self.out = fnnx.Linear(4, 1, rngs=rngs)

    theirs = FNet(fnnx.Rngs(0))
    ema, ref = nnx.EMA(ours, 0.9), fnnx.EMA(theirs, 0.9)
    flat = {p: (type(v).__name__, np.asarray(v[...]))
            for p, v in nnx.to_flat_state(nnx.state(ema))}
    flat_ref = {p: (type(v).__name__, np.asarray(v[...]))
                for p, v in fnnx.to_flat_state(fnnx.state(ref))}
    assert sorted(flat, key=str) == sorted(flat_ref, key=str)
    for path, (kind, value) in flat.items():
        assert kind == flat_ref[path][0]
        np.testing.assert_array_equal(value, flat_ref[path][1])


def test_ema_mismatched_model_is_a_clear_error_and_changes_nothing():
    ema = nnx.EMA(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), decay=0.9)
    before = jax.tree.map(np.asarray, nnx.state(ema))
    with pytest.raises(nnx.errors.StateMismatchError,
                       match=r"kernel has shape \(4, 3\), the average has shape \(2, 3\).*Hint"):
        ema.update(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.errors.StateMismatchError, match=r"bias is missing"):
        ema.update(nnx.Linear(2, 3, use_bias=False, rngs=nnx.Rngs(0)))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(ema))):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- TrainState
def test_train_state_matches_plain_optax_under_jax_jit():
    graphdef, params, rest = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
    # (sgd, not adam: the bias before BatchNorm has a ~0 gradient whose rounding noise
    # adam would blow up to full-size steps, differently in and out of jit.)
    state = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(0.05, momentum=0.9))
    tx = optax.sgd(0.05, momentum=0.9)
    ref_params = jax.tree.map(lambda v: v[...], params,
                              is_leaf=lambda v: isinstance(v, nnx.Variable))
    ref_opt = tx.init(ref_params)

    def loss(params, rest):
        y, _ = state.apply(params, rest)(X)
        return jnp.mean((y - Y) ** 2)

    @jax.jit
    def step(state, rest):
        return state.apply_gradients(jax.grad(loss)(state.params, rest))

    for _ in range(3):
        grads = jax.grad(loss)(ref_params, rest)
        updates, ref_opt = tx.update(grads, ref_opt, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
        state = step(state, rest)
    assert int(state.step) == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_state_subclass_fields_and_flax_compat():
    class WithStats(nnx.TrainState):
        batch_stats: nnx.State
        note: str = dataclasses.field(metadata={"pytree_node": False}, default="x")

    graphdef, params, stats = nnx.split(Net(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
    state = WithStats.create(graphdef, params=params, tx=optax.sgd(0.1), batch_stats=stats)
    leaves, treedef = jax.tree.flatten(state)
    assert len(leaves) == len(jax.tree.leaves(params)) + len(jax.tree.leaves(stats)) + 1
    assert jax.tree.unflatten(treedef, leaves).note == "x"
    y, (_, new_state) = state.apply("params", "batch_stats")(X)
    assert y.shape == (8, 1)
    new = state.apply_gradients(jax.tree.map(jnp.zeros_like, params),
                                batch_stats=nnx.state(nnx.merge(graphdef, new_state),
                                                      nnx.BatchStat))
    assert not np.allclose(new.batch_stats["bn"]["mean"][...], stats["bn"]["mean"][...])
    with pytest.raises(TypeError, match=r"the field 'note' must be a State.*Hint"):
        state.apply("note")
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.step = 3
    # flax.nnx's TrainState gives the same optimizer state for the same params.
    fgraphdef, fparams = fnnx.split(fnnx.Linear(3, 4, rngs=fnnx.Rngs(0)))
    _, lparams = nnx.split(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    ref = fnnx.TrainState.create(fgraphdef, params=fparams, tx=optax.adam(1e-3))
    mine = nnx.TrainState.create(nnx.graphdef(nnx.Linear(3, 4, rngs=nnx.Rngs(0))),
                                 params=lparams, tx=optax.adam(1e-3))
    for a, b in zip(jax.tree.leaves(mine.opt_state), jax.tree.leaves(ref.opt_state)):
        np.testing.assert_array_equal(a, b)
