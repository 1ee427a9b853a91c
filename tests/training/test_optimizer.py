"""Tests for nnxlib.training.Optimizer: agreement with plain optax, layout, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib.training import ModelAndOptimizer, OptArray, Optimizer, OptState, OptVariable


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        # Eval-mode BatchNorm: its BatchStats are state the optimizer must leave alone.
        self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.bn(self.l1(x))))


X = jax.random.normal(jax.random.key(10), (16, 3))
Y = jax.random.normal(jax.random.key(11), (16, 2))


def _loss(model) -> jax.Array:
    return jnp.mean((model(X) - Y) ** 2)


def _grads(model, wrt=nnx.Param):
    """Gradients as a State of the wrt variables, via jax.grad over split/merge."""
    graphdef, params, rest = nnx.split(model, wrt, ...)

    def loss(params, rest):
        return _loss(nnx.merge(graphdef, params, rest))

    return jax.grad(loss)(params, rest)


def _pure_params(model) -> dict:
    return nnx.state(model, nnx.Param).to_pure_dict()


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


TRANSFORMS = {
    "sgd": lambda: optax.sgd(0.1),
    "sgd_nesterov": lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),  # reads params in update
    "clipped_adam": lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.adam(3e-2)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_matches_plain_optax_over_several_steps(name):
    tx = TRANSFORMS[name]()
    model = MLP(nnx.Rngs(0))
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    stats_before = jax.tree.map(lambda v: v[...], nnx.state(model, nnx.BatchStat).to_pure_dict())

    def pure_loss(params):
        return _loss(nnx.merge(graphdef, nnx.State(params), rest))

    ref_params = _pure_params(model)
    ref_state = tx.init(ref_params)
    optimizer = Optimizer(model, tx, wrt=nnx.Param)
    for step in range(1, 6):
        ref_grads = jax.grad(pure_loss)(ref_params)
        ref_updates, ref_state = tx.update(ref_grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
        updates = optimizer.update(model, _grads(model))
        _assert_trees_close(_pure_params(model), ref_params)
        _assert_trees_close(updates.to_pure_dict(), ref_updates)
        assert int(optimizer.step[...]) == step
    assert optimizer.step.dtype == jnp.uint32
    _assert_trees_close(nnx.state(model, nnx.BatchStat).to_pure_dict(), stats_before, 0, 0)


def test_adam_state_matches_optax_state_by_path():
    model = MLP(nnx.Rngs(0))
    tx = optax.adam(1e-2)
    optimizer = Optimizer(model, tx, wrt=nnx.Param)
    ref_state = tx.init(_pure_params(model))
    for _ in range(3):
        grads = _grads(model)
        ref_state = tx.update(grads.to_pure_dict(), ref_state, _pure_params(model))[1]
        optimizer.update(model, grads)
    adam = optimizer.opt_state[0]
    assert type(adam["count"]) is OptArray and int(adam["count"][...]) == 3
    for moment in ("mu", "nu"):
        ours = jax.tree.map(lambda v: v[...], nnx.State(adam[moment]).to_pure_dict())
        _assert_trees_close(ours, getattr(ref_state[0], moment), rtol=1e-5, atol=1e-8)


def test_state_paths_match_flax_nnx():
    ours = Optimizer(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), optax.adam(1e-3), wrt=nnx.Param)
    ref = flax_nnx.Optimizer(flax_nnx.Linear(2, 3, rngs=flax_nnx.Rngs(0)), optax.adam(1e-3),
                             wrt=flax_nnx.Param)
    our_paths = {p: type(v).__name__ for p, v in nnx.to_flat_state(nnx.state(ours))}
    ref_paths = {p: type(v).__name__ for p, v in flax_nnx.to_flat_state(flax_nnx.state(ref))}
    assert our_paths == ref_paths
    assert isinstance(ours.step, OptState) and issubclass(OptArray, OptState)


def test_sgd_has_no_optimizer_arrays_and_step_counts():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, optax.sgd(0.5))  # wrt defaults to Param
    assert [p for p, _ in nnx.to_flat_state(nnx.state(optimizer))] == [("step",)]
    kernel = model.kernel[...]
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    optimizer.update(model, grads)
    np.testing.assert_allclose(model.kernel[...], kernel - 1.0, rtol=1e-6)
    assert int(optimizer.step[...]) == 2


def test_wrt_filter_selects_variables():
    model = MLP(nnx.Rngs(0))
    wrt = nnx.All(nnx.Param, nnx.PathContains("kernel"))
    optimizer = Optimizer(model, optax.sgd(0.1), wrt=wrt)
    before = _pure_params(model)
    # Gradients for every Param (and the BatchStats) are given; non-wrt ones are ignored.
    all_grads = jax.tree.map(jnp.ones_like, nnx.state(model))
    optimizer.update(model, all_grads)
    after = _pure_params(model)
    np.testing.assert_allclose(after["l1"]["kernel"], before["l1"]["kernel"] - 0.1, rtol=1e-6)
    np.testing.assert_allclose(after["l2"]["kernel"], before["l2"]["kernel"] - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(after["l1"]["bias"], before["l1"]["bias"])
    np.testing.assert_array_equal(after["bn"]["scale"], before["bn"]["scale"])
    adam = Optimizer(model, optax.adam(1e-3), wrt=wrt)
    assert sorted(adam.opt_state[0]["mu"]) == ["l1", "l2"]
    assert sorted(adam.opt_state[0]["mu"]["l1"]) == ["kernel"]


def test_pure_dict_grads_are_accepted():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
    bias = model.bias[...]
    optimizer.update(model, {"kernel": jnp.zeros((2, 1)), "bias": jnp.array([2.0])})
    np.testing.assert_allclose(model.bias[...], bias - 2.0)


def _snapshot(model, optimizer):
    return jax.tree.map(lambda v: np.array(v), (nnx.state(model).to_pure_dict(),
                                               nnx.state(optimizer).to_pure_dict()))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda g: {"l1": g["l1"], "bn": g["bn"]}, r"missing gradients for \['l2\.bias', 'l2\.kernel'\]"),
        (lambda g: {**g, "extra": {"w": jnp.ones(3)}}, r"unexpected gradients for \['extra\.w'\]"),
        (lambda g: {**g, "l2": {**g["l2"], "kernel": g["l2"]["kernel"].T}},
         r"grads\['l2\.kernel'\] has shape \(2, 8\), the parameter has shape \(8, 2\)"),
    ],
)
def test_mismatched_grads_raise_and_change_nothing(corrupt, message):
    model = MLP(nnx.Rngs(0))
    optimizer = Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    optimizer.update(model, _grads(model))
    before = _snapshot(model, optimizer)
    bad = corrupt(_grads(model).to_pure_dict())
    with pytest.raises(ValueError, match=message) as info:
        optimizer.update(model, bad)
    assert "Hint" in str(info.value) and "wrt=" in str(info.value)
    _assert_trees_close(_snapshot(model, optimizer), before, 0, 0)


def test_missing_grads_argument_and_model_attribute_hints():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, optax.sgd(0.1))
    with pytest.raises(TypeError, match="optimizer.update\\(model, grads\\)"):
        optimizer.update(jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    with pytest.raises(AttributeError, match="does not hold the model"):
        optimizer.model
    with pytest.raises(AttributeError, match="no attribute 'other'"):
        optimizer.other
    with pytest.raises(TypeError, match="State or a nested dict"):
        optimizer.update(model, jnp.ones(3))


def test_params_and_extra_args_reach_the_transformation():
    seen = {}

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, scale):
        seen["params"], seen["scale"] = params, scale
        return jax.tree.map(lambda g: -scale * g, updates), state

    tx = optax.GradientTransformationExtraArgs(init, update)
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, tx, wrt=nnx.Param)
    kernel = model.kernel[...]
    optimizer.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)),
                     scale=nnx.Variable(jnp.array(0.25)))  # variables are unwrapped
    np.testing.assert_array_equal(seen["params"]["kernel"], kernel)
    assert isinstance(seen["scale"], jax.Array)
    np.testing.assert_allclose(model.kernel[...], kernel - 0.25)


def test_optimizer_state_metadata_follows_params():
    model = nnx.Linear(2, 3, kernel_metadata={"out_sharding": ("in", "out")}, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    mu = optimizer.opt_state[0]["mu"]["kernel"]
    assert type(mu) is OptVariable and mu.out_sharding == ("in", "out")
    assert optimizer.opt_state[0]["count"].get_metadata(exclude_required=True) == {}


def test_functional_jit_step_via_split_merge():
    model = MLP(nnx.Rngs(0))
    optimizer = Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    eager_model = MLP(nnx.Rngs(0))
    eager_opt = Optimizer(eager_model, optax.adam(1e-2), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def train_step(state):
        model, optimizer = nnx.merge(graphdef, state)
        optimizer.update(model, _grads(model))
        return nnx.state((model, optimizer))

    for _ in range(3):
        state = train_step(state)
        eager_opt.update(eager_model, _grads(eager_model))
    nnx.update((model, optimizer), state)
    _assert_trees_close(_pure_params(model), _pure_params(eager_model), rtol=1e-5, atol=1e-6)
    assert int(optimizer.step[...]) == 3
    assert int(optimizer.opt_state[0]["count"][...]) == 3


@pytest.mark.skipif(not (hasattr(nnx, "jit") and hasattr(nnx, "grad")),
                    reason="nnx.jit / nnx.grad not available yet")
def test_nnx_jit_and_grad_train_loop_matches_flax_nnx():
    def build(lib):
        class Net(lib.Module):
            def __init__(self, rngs):
                self.l1 = lib.Linear(3, 8, rngs=rngs)
                self.l2 = lib.Linear(8, 2, rngs=rngs)

            def __call__(self, x):
                return self.l2(lib.relu(self.l1(x)))

        model = Net(lib.Rngs(0))
        optimizer = lib.Optimizer(model, optax.adam(1e-2), wrt=lib.Param)

        @lib.jit
        def step(model, optimizer):
            loss, grads = lib.value_and_grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(5)]
        return losses, model

    ours, ours_model = build(nnx)
    ref, ref_model = build(flax_nnx)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    np.testing.assert_allclose(ours_model.l1.kernel[...], ref_model.l1.kernel[...], rtol=1e-5)


def test_split_merge_roundtrip_keeps_a_working_optimizer():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    copy = nnx.merge(*nnx.split(optimizer))
    assert copy.opt_state[0]["mu"]["kernel"] is optimizer.opt_state[0]["mu"]["kernel"]
    cloned = nnx.clone(optimizer)
    cloned.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    assert int(cloned.step[...]) == 1 and int(optimizer.step[...]) == 0
    assert not np.array_equal(cloned.opt_state[0]["mu"]["kernel"][...],
                              optimizer.opt_state[0]["mu"]["kernel"][...])


def test_model_and_optimizer_holds_the_model():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    state = ModelAndOptimizer(model, optax.sgd(1.0))
    bias = model.bias[...]
    state.update(nnx.State({"kernel": jnp.zeros((2, 1)), "bias": jnp.array([0.5])}))
    assert state.model is model
    np.testing.assert_allclose(model.bias[...], bias - 0.5)


def test_top_level_exports():
    assert nnx.Optimizer is Optimizer and nnx.OptState is OptState
