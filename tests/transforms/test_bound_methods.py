"""Every transform refuses a bound method of a module (it would capture the module as a
constant), names the method, and accepts the unbound method with the module passed in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Counter(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones((2,)))
        self.count = nnx.BatchStat(jnp.array(0))

    def __call__(self, x):
        self.count[...] += 1
        return x * self.w


MESH = jax.sharding.Mesh(jax.devices()[:1], ("d",))
TRANSFORMS = {
    "nnx.jit": lambda f: nnx.jit(f),
    "nnx.grad": lambda f: nnx.grad(f),
    "nnx.value_and_grad": lambda f: nnx.value_and_grad(f),
    "nnx.vmap": lambda f: nnx.vmap(f, in_axes=(None, 0)),
    "nnx.scan": lambda f: nnx.scan(f, in_axes=(nnx.Carry, 0)),
    "nnx.remat": lambda f: nnx.remat(f),
    "nnx.pmap": lambda f: nnx.pmap(f, in_axes=(None, 0), axis_size=1),
    "nnx.checkify": lambda f: nnx.checkify(f),
    "nnx.custom_vjp": lambda f: nnx.custom_vjp(f),
    "nnx.shard_map": lambda f: nnx.shard_map(f, mesh=MESH, in_specs=None, out_specs=None),
    "nnx.eval_shape": lambda f: nnx.eval_shape(f, jnp.ones((2,))),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bound_method_is_refused_with_the_fix_named(name):
    model = Counter()
    with pytest.raises(ValueError, match="does not support bound methods") as info:
        TRANSFORMS[name](model.__call__)
    message = str(info.value)
    assert message.startswith(name) and "Counter.__call__" in message
    assert f"{name}(Counter.__call__)(module, ...)" in message  # the hint
    assert int(model.count[...]) == 0  # nothing ran


def test_decorator_form_is_refused_too():
    model = Counter()
    with pytest.raises(ValueError, match="bound methods"):
        nnx.jit(static_argnums=())(model.__call__)
    with pytest.raises(ValueError, match="bound methods"):
        nnx.vmap(in_axes=0)(model.__call__)


def test_unbound_method_and_methods_decorated_in_the_class_still_work():
    model = Counter()
    y = nnx.jit(Counter.__call__)(model, jnp.full((2,), 3.0))
    np.testing.assert_allclose(y, [3.0, 3.0])
    assert int(model.count[...]) == 1

    class Stepper(nnx.Module):
        def __init__(self):
            self.n = nnx.Variable(jnp.array(0))

        @nnx.jit
        def step(self):
            self.n[...] += 1

    s = Stepper()
    s.step()
    s.step()
    assert int(s.n[...]) == 2


def test_bound_methods_of_other_objects_are_fine():
    class Scale:  # not a graph node: nothing to capture
        def apply(self, x):
            return 2 * x

    assert float(nnx.jit(Scale().apply)(jnp.array(1.0))) == 2.0
