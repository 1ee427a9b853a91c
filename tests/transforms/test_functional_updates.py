"""Without graph updates (``graph_updates=False`` or ``graph=False``) only Variable
values flow back to the caller's objects, as flax.nnx documents for that mode: an array
attribute of an input object is pytree data, and a change the function makes to it is
lost, as it would be for any pytree under ``jax.jit``. A scan's carried objects come out
as new objects holding the same Variables and the carry's final arrays."""

import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Box(nnx.Pytree):
    def __init__(self, x):
        self.var = nnx.Variable(x)
        self.arr = x


def bump(box):
    box.var[...] = box.var[...] + 1
    box.arr = box.arr + 1
    return box.var[...] + box.arr


MODES = [(True, False), (False, False)]


@pytest.mark.parametrize("graph, updates", MODES)
@pytest.mark.parametrize("transform", [
    lambda f, **m: nnx.jit(f, **m),
    lambda f, **m: nnx.remat(f, **m),
    lambda f, **m: nnx.vmap(f, in_axes=None, out_axes=None, axis_size=2, **m),
])
def test_only_variables_flow_back(transform, graph, updates):
    box = Box(jnp.array(0.0))
    out = transform(bump, graph=graph, graph_updates=updates)(box)
    np.testing.assert_array_equal(out, 2.0)  # inside, both changes were seen
    np.testing.assert_array_equal(box.var[...], 1.0)
    np.testing.assert_array_equal(box.arr, 0.0)


def test_with_graph_updates_array_attributes_flow_back_too():
    box = Box(jnp.array(0.0))
    nnx.jit(bump, graph=True, graph_updates=True)(box)
    np.testing.assert_array_equal(box.arr, 1.0)


def step(box):
    bump(box)
    return box


@pytest.mark.parametrize("graph, updates", MODES)
def test_scan_carry_comes_out_as_a_new_object_sharing_variables(graph, updates):
    box = Box(jnp.array(0.0))
    out = nnx.scan(step, in_axes=nnx.Carry, out_axes=nnx.Carry, length=3, graph=graph,
                   graph_updates=updates)(box)
    assert out is not box and out.var is box.var
    np.testing.assert_array_equal(out.var[...], 3.0)
    np.testing.assert_array_equal(out.arr, 3.0)  # carried from step to step
    np.testing.assert_array_equal(box.arr, 0.0)


def test_scan_carry_with_graph_updates_is_the_input_object():
    box = Box(jnp.array(0.0))
    out = nnx.scan(step, in_axes=nnx.Carry, out_axes=nnx.Carry, length=3)(box)
    assert out is box
    np.testing.assert_array_equal(box.arr, 3.0)


class Counter(nnx.Pytree):
    def __init__(self, x):
        self.arr = x


def test_scan_carry_can_be_returned_from_an_outer_functional_jit():
    def count(c):
        c.arr = c.arr + 1
        return c

    @nnx.jit(graph=True, graph_updates=False)
    def run(c):
        return nnx.scan(count, in_axes=nnx.Carry, out_axes=nnx.Carry, length=4,
                        graph=True, graph_updates=False)(c)

    c = Counter(jnp.array(1.0))
    out = run(c)
    assert out is not c
    np.testing.assert_array_equal(out.arr, 5.0)
    np.testing.assert_array_equal(c.arr, 1.0)


def test_returning_a_carry_that_shares_input_variables_is_refused_as_in_flax():
    @nnx.jit(graph=True, graph_updates=False)
    def run(box):
        return nnx.scan(step, in_axes=nnx.Carry, out_axes=nnx.Carry, length=2,
                        graph=True, graph_updates=False)(box)

    with pytest.raises(ValueError, match="Duplicate Variable found at paths"):
        run(Box(jnp.array(1.0)))
