"""Shared state given two different prefix entries is an error in every transform.

One Variable reached from two arguments (or from an argument and an output) must get
the same axis, sharding, spec or differentiation role on both paths: any other choice
would silently pick one of them. Each error names both paths and both entries, says
flax's phrase ("Inconsistent aliasing detected", or "Duplicate" for custom_vjp), and
leaves the model unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import nnxlib as nnx


class Holder(nnx.Module):
    def __init__(self, shared):
        self.w = shared


def test_jit_in_shardings_two_shardings_for_one_variable():
    v = nnx.Param(jnp.arange(8.0))
    mesh = jax.make_mesh((8,), ("x",))
    f = nnx.jit(lambda a, b: a[...] + b[...], in_shardings=(P(), P("x")))
    with jax.set_mesh(mesh):
        with pytest.raises(ValueError, match=r"jit in_shardings: the Param at args\[0\] is "
                           r"shared with args\[1\][\s\S]*Inconsistent aliasing detected"):
            f(v, v)
        # the same sharding on both paths is fine
        np.testing.assert_array_equal(
            nnx.jit(lambda a, b: a[...] + b[...], in_shardings=(P("x"), P("x")))(v, v),
            2 * jnp.arange(8.0))


def test_shard_map_in_specs_two_specs_for_one_variable():
    v = nnx.Param(jnp.arange(8.0))
    mesh = jax.make_mesh((8,), ("x",))
    f = nnx.shard_map(lambda a, b: a[...] + b[...], mesh=mesh, in_specs=(P(), P("x")),
                      out_specs=P())
    with pytest.raises(ValueError, match=r"shard_map in_specs: the Param at args\[0\] is "
                       r"shared with args\[1\][\s\S]*Inconsistent aliasing detected"):
        f(v, v)


@pytest.mark.parametrize("graph_updates", [True, False])
def test_grad_variable_both_differentiated_and_not(graph_updates):
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    before = nnx.state(layer)

    def loss(a, b):
        return (a(jnp.ones(2)) + b(jnp.ones(2))).sum()

    with pytest.raises(ValueError, match=r"grad argnums: the Param at args\[0\]\.\w+ is shared "
                       r"with args\[1\]\.\w+, but gets role differentiated there and not "
                       r"differentiated here \(Inconsistent aliasing detected"):
        nnx.grad(loss, argnums=0, graph=True, graph_updates=graph_updates)(layer, layer)
    assert jax.tree.all(jax.tree.map(lambda x, y: (x == y).all(), before, nnx.state(layer)))


def test_grad_shared_variable_differentiated_on_both_paths_is_fine():
    shared = nnx.Param(jnp.array(3.0))
    grads = nnx.grad(lambda a, b: a.w[...] * b.w[...], argnums=(0, 1))(
        Holder(shared), Holder(shared))
    # d(w*w)/dw = 2w, reported once, at the first path that reaches it (as flax.nnx)
    assert float(grads[0]["w"][...]) == 6.0
    assert dict(grads[1]) == {}


def test_custom_vjp_variable_on_both_sides_of_nondiff_argnums():
    v = nnx.Param(jnp.array(1.0))

    @nnx.custom_vjp(nondiff_argnums=(1,), graph=True, graph_updates=False)
    def f(a, b):
        return a[...] + b[...]

    f.defvjp(lambda a, b: (f(a, b), ()), lambda b, res, g: (nnx.clone(b),))
    with pytest.raises(ValueError, match=r"custom_vjp: the Param at args\[0\] is also "
                       r"reached from args\[1\][\s\S]*Duplicate Param found at paths"):
        f(v, v)


def test_vmap_returned_input_on_another_axis():
    model = Holder(nnx.Param(jnp.zeros((2, 3))))
    f = nnx.vmap(lambda m: m, in_axes=0, out_axes=1, graph=True, graph_updates=True)
    with pytest.raises(ValueError, match=r"vmap out_axes: the Param at args\[0\]\.w is shared "
                       r"with out0\.w, but gets axis 0 there and 1 here \(Inconsistent "
                       r"aliasing detected"):
        f(model)
    assert model.w.shape == (2, 3)
    # returned on the axis it came in on: the object itself comes back
    same = nnx.vmap(lambda m: m, in_axes=0, out_axes=0, graph=True, graph_updates=True)
    assert same(model) is model
