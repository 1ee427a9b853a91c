"""Modules and containers are JAX pytrees (flax.nnx 0.12's tree mode), checked against
plain JAX on the equivalent dicts and against flax.nnx itself."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx as flax_nnx

import nnxlib as nnx


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)
        self.bn = nnx.BatchNorm(2, rngs=rngs)
        self.extras = [jnp.ones(2), "tag", 7]
        self.table = nnx.Dict({"scale": nnx.Param(jnp.full(2, 2.0)), "name": "t"})
        self.width = 3

    def __call__(self, x):
        return self.bn(self.linear(x)) * self.table["scale"] + self.extras[0]


def test_leaves_are_the_arrays_with_readable_paths():
    block = Block(nnx.Rngs(0))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(block)]
    assert paths == [
        ".bn.bias.value", ".bn.mean.value", ".bn.scale.value", ".bn.var.value",
        ".extras[0]", ".linear.bias.value", ".linear.kernel.value",
        ".table['scale'].value",
    ]
    assert len(jax.tree.leaves(block)) == len(jax.tree.leaves(nnx.state(block)))


def test_tree_map_builds_a_new_module_with_the_same_statics():
    block = Block(nnx.Rngs(0))
    zeros = jax.tree.map(jnp.zeros_like, block)
    assert type(zeros) is Block and zeros is not block
    assert zeros.width == 3 and zeros.extras[1:] == ["tag", 7]
    assert zeros.table["name"] == "t" and isinstance(zeros.table, nnx.Dict)
    assert float(jnp.abs(zeros.linear.kernel[...]).sum()) == 0.0
    assert float(jnp.abs(block.linear.kernel[...]).sum()) > 0.0  # original untouched
    assert nnx.graphdef(zeros) == nnx.graphdef(block)


def test_plain_jax_jit_and_grad_match_nnx_transforms():
    block = Block(nnx.Rngs(0))
    block.eval()
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(block, x), block(x), rtol=1e-6)

    raw_grads = jax.grad(lambda m: m(x).sum())(block)
    nnx_grads = nnx.grad(lambda m: m(x).sum())(block)
    np.testing.assert_allclose(raw_grads.linear.kernel[...], nnx_grads["linear"]["kernel"][...],
                               rtol=1e-6)


def test_changes_inside_a_raw_jax_transform_stay_inside():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))

    @jax.jit
    def train_call(bn, x):
        bn(x)              # updates the running mean of the copy JAX rebuilt
        return bn.mean[...]

    inside = train_call(bn, jnp.ones((4, 2)))
    assert float(inside.sum()) > 0.0
    assert float(bn.mean[...].sum()) == 0.0  # use nnx.jit to have it written back


def test_shared_objects_are_not_shared_after_a_pytree_round_trip():
    class Tied(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
            self.b = self.a

    tied = Tied()
    copy = jax.tree.map(lambda x: x, tied)
    assert copy.a is not copy.b  # plain pytree semantics; nnx.clone keeps sharing
    cloned = nnx.clone(tied)
    assert cloned.a is cloned.b


def test_same_leaves_as_flax_nnx():
    ours = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    theirs = flax_nnx.Linear(3, 2, rngs=flax_nnx.Rngs(0))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pytree_base_class_and_opting_out_like_flax():
    class Stats(nnx.Pytree):
        def __init__(self):
            self.mean = nnx.BatchStat(jnp.zeros(2))

    class Opaque(nnx.Pytree, pytree=False):
        def __init__(self):
            self.mean = nnx.BatchStat(jnp.zeros(2))

    assert nnx.Pytree is nnx.Object
    assert [x.shape for x in jax.tree.leaves(Stats())] == [(2,)]
    opaque = Opaque()
    assert jax.tree.leaves(opaque) == [opaque]          # one leaf for JAX ...
    assert list(nnx.state(opaque)) == ["mean"]          # ... still a graph node for nnxlib
