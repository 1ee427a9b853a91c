"""The compiled program of an ``nnx.jit`` function is the one plain ``jax.jit`` builds.

``JitWrapped.trace(*args)`` gives ``jax.jit(pure).trace(...)`` of the pure function of
arrays that a call actually runs (no Python of nnxlib's in it), so its jaxpr can be
compared equation by equation with a hand-written pure-JAX train step on pytrees.
"""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import nnxlib as nnx

WIDTH, BATCH, LR = 8, 4, 0.1


def count_equations(jaxpr) -> int:
    """Equations of a jaxpr, including those of nested jaxprs (pjit, custom_jvp, ...)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    total += count_equations(sub)
    return total


def primitives(jaxpr) -> Counter:
    return Counter(str(eqn.primitive) for eqn in jaxpr.jaxpr.eqns)


def batch(seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, (BATCH, WIDTH)), jax.random.normal(ky, (BATCH, WIDTH)))


# ------------------------------------------------- the same math for both versions
def linear(x, kernel, bias):
    return x @ kernel + bias


def batch_norm(h, scale, bias, mean, var, momentum=0.9, eps=1e-5):
    mu = h.mean(0)
    v = (h * h).mean(0) - mu * mu
    y = (h - mu) * jax.lax.rsqrt(v + eps) * scale + bias
    return y, momentum * mean + (1 - momentum) * mu, momentum * var + (1 - momentum) * v


class Dense(nnx.Module):
    def __init__(self, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (WIDTH, WIDTH)) / 3)
        self.bias = nnx.Param(jnp.zeros(WIDTH))

    def __call__(self, x):
        return linear(x, self.kernel[...], self.bias[...])


class Norm(nnx.Module):
    def __init__(self):
        self.scale = nnx.Param(jnp.ones(WIDTH))
        self.bias = nnx.Param(jnp.zeros(WIDTH))
        self.mean = nnx.BatchStat(jnp.zeros(WIDTH))
        self.var = nnx.BatchStat(jnp.ones(WIDTH))

    def __call__(self, x):
        y, self.mean[...], self.var[...] = batch_norm(
            x, self.scale[...], self.bias[...], self.mean[...], self.var[...])
        return y


class Block(nnx.Module):
    def __init__(self, rngs):
        self.dense = Dense(rngs)
        self.norm = Norm()

    def __call__(self, x):
        return jax.nn.relu(self.norm(self.dense(x)))


class MLP(nnx.Module):
    def __init__(self, depth, seed=0):
        rngs = nnx.Rngs(seed)
        self.blocks = [Block(rngs) for _ in range(depth)]

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def nnx_train_step(model, optimizer, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def pytrees_of(model):
    params = [{"dense": {"kernel": b.dense.kernel[...], "bias": b.dense.bias[...]},
               "norm": {"scale": b.norm.scale[...], "bias": b.norm.bias[...]}}
              for b in model.blocks]
    stats = [{"mean": b.norm.mean[...], "var": b.norm.var[...]} for b in model.blocks]
    return params, stats


def make_raw_train_step(tx, block):
    """The hand-written step: params, batch stats and optimizer state as pytrees. The
    optimizer state carries a step counter, as ``nnx.Optimizer`` (and flax's) does.
    ``block(h, p, s)`` is one layer before its relu: ``(h, new_mean, new_var)``."""

    def train_step(params, stats, opt_state, x, y):
        def loss_fn(params):
            h, new_stats = x, []
            for p, s in zip(params, stats):
                h, mean, var = block(h, p, s)
                h = jax.nn.relu(h)
                new_stats.append({"mean": mean, "var": var})
            return ((h - y) ** 2).mean(), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        step, inner = opt_state
        updates, inner = tx.update(grads, inner, params)
        return loss, optax.apply_updates(params, updates), new_stats, (step + 1, inner)

    return jax.jit(train_step)


def toy_block(h, p, s):
    h = linear(h, p["dense"]["kernel"], p["dense"]["bias"])
    return batch_norm(h, p["norm"]["scale"], p["norm"]["bias"], s["mean"], s["var"])


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("depth", [1, 3])
def test_train_step_has_no_more_equations_than_plain_jax(depth):
    model = MLP(depth)
    tx = optax.sgd(LR)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params, stats = pytrees_of(model)
    opt_state = (jnp.zeros((), jnp.uint32), tx.init(params))
    x, y = batch()
    step = nnx.jit(nnx_train_step)
    raw_step = make_raw_train_step(tx, toy_block)

    ours = step.trace(model, optimizer, x, y).jaxpr
    theirs = raw_step.trace(params, stats, opt_state, x, y).jaxpr
    assert len(ours.eqns) <= len(theirs.eqns)
    assert count_equations(ours) <= count_equations(theirs)
    assert not primitives(ours) - primitives(theirs)  # no kind of operation added
    # inputs: every array once; outputs: only what changed (loss, params, stats, step)
    assert len(ours.in_avals) == len(theirs.in_avals)
    assert len(ours.out_avals) <= len(theirs.out_avals)

    # and the two compute the same numbers
    for _ in range(2):
        loss = step(model, optimizer, x, y)
        raw_loss, params, stats, opt_state = raw_step(params, stats, opt_state, x, y)
        np.testing.assert_allclose(loss, raw_loss, rtol=1e-5)
    got_params, got_stats = pytrees_of(model)
    for got, want in zip(jax.tree.leaves((got_params, got_stats)),
                         jax.tree.leaves((params, stats))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert int(optimizer.step[...]) == int(opt_state[0]) == 2


def test_tracing_does_not_run_or_change_anything():
    model = MLP(2)
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)
    before = [np.asarray(v) for v in jax.tree.leaves(nnx.state((model, optimizer)))]
    graphdef = nnx.graphdef((model, optimizer))
    x, y = batch()
    step = nnx.jit(nnx_train_step)
    step.trace(model, optimizer, x, y)
    step.lower(model, optimizer, x, y).compile()
    after = jax.tree.leaves(nnx.state((model, optimizer)))
    assert nnx.graphdef((model, optimizer)) == graphdef
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
        assert not isinstance(b, jax.core.Tracer)


def test_empty_function_has_no_equations_and_no_outputs():
    model = MLP(3)
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def empty(model, optimizer):
        pass

    jaxpr = empty.trace(model, optimizer).jaxpr
    assert len(jaxpr.eqns) == 0
    assert len(jaxpr.out_avals) == 0
    assert len(jaxpr.in_avals) == len(jax.tree.leaves(nnx.state((model, optimizer))))
    raw = jax.jit(lambda params, stats, opt_state: None).trace(
        *pytrees_of(model), optax.sgd(LR).init(pytrees_of(model)[0])).jaxpr
    assert len(jaxpr.eqns) == len(raw.eqns) == 0
    assert empty(model, optimizer) is None


def test_reading_state_returns_nothing_but_the_result():
    model = MLP(2)

    @nnx.jit
    def forward_eval(model, x):  # reads everything, changes nothing
        h = x
        for block in model.blocks:
            h = block.dense(h)
        return h

    x, _ = batch()
    jaxpr = forward_eval.trace(model, x).jaxpr
    assert len(jaxpr.out_avals) == 1
    params, _ = pytrees_of(model)

    def raw_forward(params, x):
        for p in params:
            x = linear(x, p["dense"]["kernel"], p["dense"]["bias"])
        return x

    raw = jax.jit(raw_forward).trace(params, x).jaxpr
    assert len(jaxpr.eqns) == len(raw.eqns)


def test_only_changed_variables_are_outputs():
    model = MLP(2)

    @nnx.jit
    def bump_one(model):
        model.blocks[1].norm.mean[...] += 1.0

    jaxpr = bump_one.trace(model).jaxpr
    assert len(jaxpr.out_avals) == 1 and len(jaxpr.eqns) == 1
    assert str(jaxpr.eqns[0].primitive) == "add"
    bump_one(model)
    np.testing.assert_array_equal(model.blocks[1].norm.mean[...], np.ones(WIDTH))
    np.testing.assert_array_equal(model.blocks[0].norm.mean[...], np.zeros(WIDTH))


def test_no_copies_for_variables_passed_through_or_reassigned():
    model = MLP(1)

    @nnx.jit
    def reassign(model):
        dense = model.blocks[0].dense
        dense.kernel[...] = dense.kernel[...]  # the same value: no change, no output
        dense.bias.value = dense.bias.value
        return model

    jaxpr = reassign.trace(model).jaxpr
    assert len(jaxpr.eqns) == 0 and len(jaxpr.out_avals) == 0
    assert reassign(model) is model


@pytest.mark.skipif(not all(hasattr(nnx, n) for n in ("Linear", "BatchNorm", "Optimizer")),
                    reason="nnx.Linear, nnx.BatchNorm or nnx.Optimizer not available")
@pytest.mark.parametrize("depth", [1, 3])
def test_nnx_layers_train_step_equals_the_functional_jax_jit_program(depth):
    """With nnxlib's own Linear and BatchNorm, ``nnx.jit`` adds nothing to the program
    ``jax.jit`` builds for the same layers applied functionally to pytrees (params,
    batch stats and optimizer state passed in and returned)."""

    class LayersBlock(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
            self.bn = nnx.BatchNorm(WIDTH, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.bn(self.linear(x)))

    class LayersMLP(nnx.Module):
        def __init__(self, depth, rngs):
            self.blocks = nnx.List([LayersBlock(rngs) for _ in range(depth)])

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    model = LayersMLP(depth, nnx.Rngs(0))
    tx = optax.sgd(LR)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = batch()
    ours = nnx.jit(nnx_train_step).trace(model, optimizer, x, y).jaxpr

    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params = nnx.to_pure_dict(params)
    stats = nnx.to_pure_dict(stats)
    opt_state = (jnp.zeros((), jnp.uint32), tx.init(params))

    def pure_step(params, stats, opt_state, x, y):
        def loss_fn(params):
            m = nnx.merge(graphdef, nnx.State(params), nnx.State(stats))
            loss = ((m(x) - y) ** 2).mean()
            return loss, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        step, inner = opt_state
        updates, inner = tx.update(grads, inner, params)
        return loss, optax.apply_updates(params, updates), new_stats, (step + 1, inner)

    theirs = jax.jit(pure_step).trace(params, stats, opt_state, x, y).jaxpr
    assert len(ours.eqns) <= len(theirs.eqns)
    assert count_equations(ours) <= count_equations(theirs)
    assert len(ours.out_avals) <= len(theirs.out_avals)


def test_trace_and_lower_with_static_and_donated_arguments():
    model = MLP(1)

    @nnx.jit(static_argnums=1, donate_argnums=0)
    def scale(model, factor):
        model.blocks[0].dense.bias[...] = model.blocks[0].dense.bias * factor

    traced = scale.trace(model, 3.0)
    # donated variables all come back (aliased to their inputs); only bias is computed
    assert len(traced.jaxpr.eqns) == 1
    assert len(traced.jaxpr.out_avals) == len(jax.tree.leaves(nnx.state(model)))
    compiled = scale.lower(model, 3.0).compile()
    assert compiled is not None
    model.blocks[0].dense.bias[...] = jnp.ones(WIDTH)
    scale(model, 3.0)
    np.testing.assert_array_equal(model.blocks[0].dense.bias[...], np.full(WIDTH, 3.0))


# ------------------------------------- the library's own layers vs a hand-written step
def raw_batch_norm(h, scale, bias, mean, var, momentum=0.9, eps=1e-5):
    """Train-mode batch norm as a user writes it for pytrees (flax's fast variance)."""
    mu = h.mean(0)
    v = jnp.maximum(0.0, (h * h).mean(0) - mu * mu)
    y = (h - mu) * (jax.lax.rsqrt(v + eps) * scale) + bias
    return y, momentum * mean + (1 - momentum) * mu, momentum * var + (1 - momentum) * v


class LibraryBlock(nnx.Module):
    """``nnx.Linear`` -> ``nnx.BatchNorm`` -> relu: the block of the train-step benchmark."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.bn = nnx.BatchNorm(WIDTH, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.linear(x)))


@pytest.mark.parametrize("depth", [1, 4])
def test_library_layers_train_step_has_no_more_equations_than_plain_jax(depth):
    model = nnx.Sequential(*[LibraryBlock(nnx.Rngs(i)) for i in range(depth)])
    tx = optax.sgd(LR)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = [{"kernel": b.linear.kernel[...], "bias": b.linear.bias[...],
               "scale": b.bn.scale[...], "bn_bias": b.bn.bias[...]} for b in model.layers]
    stats = [{"mean": b.bn.mean[...], "var": b.bn.var[...]} for b in model.layers]
    opt_state = (jnp.zeros((), jnp.uint32), tx.init(params))

    x, y = batch()
    step = nnx.jit(nnx_train_step)
    raw = make_raw_train_step(tx, lambda h, p, s: raw_batch_norm(
        h @ p["kernel"] + p["bias"], p["scale"], p["bn_bias"], s["mean"], s["var"]))
    ours = step.trace(model, optimizer, x, y).jaxpr
    theirs = raw.trace(params, stats, opt_state, x, y).jaxpr
    assert count_equations(ours) <= count_equations(theirs)
    assert len(ours.out_avals) <= len(theirs.out_avals)

    loss = step(model, optimizer, x, y)
    raw_loss, params, stats, opt_state = raw(params, stats, opt_state, x, y)
    np.testing.assert_allclose(loss, raw_loss, rtol=1e-5)
    for block, p, s in zip(model.layers, params, stats):
        np.testing.assert_allclose(block.linear.kernel[...], p["kernel"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(block.bn.mean[...], s["mean"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(block.bn.var[...], s["var"], rtol=1e-4, atol=1e-6)
