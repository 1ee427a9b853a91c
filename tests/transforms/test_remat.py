"""Tests for ``nnx.remat`` / ``nnx.checkpoint``: the checkpoint really is in the program,
gradients equal those without rematerialisation and those of plain JAX, and state
semantics (write-back, errors, nesting) match eager mode."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Block(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)) * 0.5)
        self.bias = nnx.Param(jnp.zeros((dout,)))
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.count[...] += 1
        return jnp.sin(x @ self.kernel + self.bias)


class MLP(nnx.Module):
    def __init__(self, sizes, *, rngs, remat_blocks=True):
        self.blocks = [Block(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])]
        self.remat_blocks = remat_blocks

    def __call__(self, x):
        for block in self.blocks:
            x = nnx.remat(block.__class__.__call__)(block, x) if self.remat_blocks \
                else block(x)
        return x


def remat_names(jaxpr):
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if "remat" in name or "checkpoint" in name:
                found.append(eqn)
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", None)
                if inner is not None:
                    visit(getattr(inner, "jaxpr", inner))

    visit(jaxpr.jaxpr)
    return found


def loss(model, x):
    return (model(x) ** 2).mean()


def plain_params(model):
    return [{"kernel": b.kernel[...], "bias": b.bias[...]} for b in model.blocks]


def plain_loss(params, x, remat):
    def block(p, x):
        return jnp.sin(x @ p["kernel"] + p["bias"])

    for p in params:
        x = jax.checkpoint(block)(p, x) if remat else block(p, x)
    return (x ** 2).mean()


def test_jaxpr_contains_checkpoint_and_grads_match_non_remat():
    x = jax.random.normal(jax.random.key(0), (4, 3))
    model = MLP([3, 5, 5, 2], rngs=nnx.Rngs(0))
    twin = MLP([3, 5, 5, 2], rngs=nnx.Rngs(0), remat_blocks=False)
    jaxpr = jax.make_jaxpr(lambda x: nnx.grad(loss)(nnx.clone(model), x))(x)
    assert len(remat_names(jaxpr)) == 3
    assert not remat_names(jax.make_jaxpr(lambda x: nnx.grad(loss)(nnx.clone(twin), x))(x))
    grads = nnx.grad(loss)(model, x)
    grads_plain = nnx.grad(loss)(twin, x)
    expected = jax.grad(plain_loss)(plain_params(model), x, True)
    for i in range(3):
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(grads["blocks"][i][name][...],
                                       grads_plain["blocks"][i][name][...], rtol=1e-6)
            np.testing.assert_allclose(grads["blocks"][i][name][...], expected[i][name],
                                       rtol=1e-5)


def test_method_decorator_and_checkpoint_alias():
    assert nnx.checkpoint is nnx.remat

    class Cell(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array([1.0, 2.0]))

        @nnx.checkpoint
        def __call__(self, x):
            return jnp.exp(self.w * x).sum()

    cell = Cell()
    assert cell.__call__.__name__ == "__call__"
    g = nnx.grad(lambda c: c(jnp.array(0.5)))(cell)
    np.testing.assert_allclose(g["w"][...], 0.5 * jnp.exp(cell.w[...] * 0.5), rtol=1e-6)
    assert remat_names(jax.make_jaxpr(lambda x: nnx.grad(lambda c: c(x))(cell))(0.5))


@pytest.mark.parametrize("policy", [None, jax.checkpoint_policies.nothing_saveable,
                                    jax.checkpoint_policies.dots_saveable])
@pytest.mark.parametrize("prevent_cse", [True, False])
def test_policy_and_prevent_cse_are_passed_to_jax(policy, prevent_cse):
    block = Block(3, 3, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    f = nnx.remat(lambda b, x: (b(x) ** 2).sum(), policy=policy, prevent_cse=prevent_cse)
    jaxpr = jax.make_jaxpr(lambda x: nnx.grad(f)(nnx.clone(block), x))(x)
    eqns = remat_names(jaxpr)
    assert eqns and all(e.params["prevent_cse"] == prevent_cse for e in eqns)
    assert all(e.params["policy"] is policy for e in eqns)
    expected = jax.grad(lambda p: (jnp.sin(x @ p["kernel"] + p["bias"]) ** 2).sum())(
        {"kernel": block.kernel[...], "bias": block.bias[...]})
    grads = nnx.grad(f)(block, x)
    np.testing.assert_allclose(grads["kernel"][...], expected["kernel"], rtol=1e-5)


def test_static_argnums_are_python_values():
    block = Block(2, 2, rngs=nnx.Rngs(0))

    def apply(mode, b, x):
        assert isinstance(mode, str)  # not traced
        return b(x) if mode == "forward" else -b(x)

    f = nnx.remat(apply, static_argnums=0)
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(f("reverse", block, x), -f("forward", block, x), rtol=1e-6)
    g = nnx.grad(lambda b: f("forward", b, x).sum())(block)
    assert g["kernel"].shape == (2, 2)
    decorated = nnx.remat(static_argnums=(0,))(apply)
    np.testing.assert_allclose(decorated("forward", block, x), f("forward", block, x))


def test_state_changes_are_written_back_eagerly_and_under_grad_and_jit():
    block = Block(2, 2, rngs=nnx.Rngs(0))
    f = nnx.remat(lambda b, x: b(x).sum())
    f(block, jnp.ones((1, 2)))
    assert int(block.count[...]) == 1
    nnx.grad(f)(block, jnp.ones((1, 2)))
    assert int(block.count[...]) == 2
    nnx.jit(nnx.grad(f))(block, jnp.ones((1, 2)))
    assert int(block.count[...]) == 3
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    twin = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    x = jnp.arange(8.0).reshape(4, 2)
    nnx.jit(nnx.grad(nnx.remat(lambda m, x: m(x).sum())))(bn, x)
    twin(x)
    np.testing.assert_allclose(bn.mean[...], twin.mean[...])


def test_remat_inside_grad_inside_jit_matches_plain_jax():
    model = MLP([2, 4, 1], rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(1), (3, 2))
    grads = nnx.jit(nnx.grad(loss))(model, x)
    expected = jax.jit(jax.grad(plain_loss), static_argnums=2)(plain_params(model), x, True)
    np.testing.assert_allclose(grads["blocks"][0]["kernel"][...], expected[0]["kernel"],
                               rtol=1e-5)


def test_returns_new_module_and_structure_changes():
    def make(x):
        block = Block(2, 2, rngs=nnx.Rngs(0))
        return block, block(x)

    block, y = nnx.remat(make)(jnp.ones((1, 2)))
    assert isinstance(block, Block) and int(block.count[...]) == 1
    np.testing.assert_allclose(y, Block(2, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 2))))
    holder = Block(2, 2, rngs=nnx.Rngs(0))

    def grow(b):
        b.extra = nnx.Param(jnp.ones(3))

    nnx.remat(grow)(holder)
    np.testing.assert_array_equal(holder.extra[...], jnp.ones(3))


def test_exception_leaves_model_unchanged():
    block = Block(2, 2, rngs=nnx.Rngs(0))
    kernel = block.kernel[...]

    def bad(b):
        b.kernel[...] += 1.0
        b.count[...] += 1
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        nnx.remat(bad)(block)
    np.testing.assert_array_equal(block.kernel[...], kernel)
    assert int(block.count[...]) == 0


def test_closure_captured_module_cannot_be_mutated():
    block = Block(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.TraceContextError):
        nnx.remat(lambda x: block(x))(jnp.ones((1, 2)))
    assert int(block.count[...]) == 0
