"""Tests for ``nnx.shard_map`` on 8 simulated CPU devices (see ``tests/conftest.py``).

A data-parallel training step with a replicated module equals the single-device step;
tensor-parallel specs given by ``StateSharding`` filters or a ``State`` of specs give the
unsharded result; state changes come back to the caller's modules."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import nnxlib as nnx

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (virtual) devices")


def data_mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))


class MLP(nnx.Module):
    def __init__(self, din, dhidden, dout, *, rngs):
        self.linear1 = nnx.Linear(din, dhidden, use_bias=False, rngs=rngs)
        self.linear2 = nnx.Linear(dhidden, dout, use_bias=False, rngs=rngs)
        self.seen = nnx.Variable(jnp.array(0.0))

    def __call__(self, x):
        return self.linear2(jax.nn.relu(self.linear1(x)))


def mse(model, x, y):
    return ((model(x) - y) ** 2).sum() / 32  # global batch size: the psum gives the mean


def batch():
    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = jax.random.normal(jax.random.key(2), (32, 3))
    return x, y


@pytest.mark.parametrize("check_vma", [False, True])
def test_data_parallel_step_equals_single_device(check_vma):
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    twin = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    x, y = batch()

    @nnx.shard_map(mesh=data_mesh(), in_specs=(P(), P("data"), P("data")), out_specs=P(),
                   check_vma=check_vma)
    def step(model, x, y):
        loss, grads = nnx.value_and_grad(mse)(model, x, y)
        loss = jax.lax.psum(loss, "data")
        if not check_vma:  # with check_vma, grads of replicated params are already summed
            grads = jax.lax.psum(grads, "data")
        for path, g in nnx.to_flat_state(grads):
            param = model.linear1 if path[0] == "linear1" else model.linear2
            param.kernel[...] -= 0.1 * g[...]
        model.seen[...] += jax.lax.psum(x.shape[0], "data")
        return loss, grads

    def reference(model, x, y):
        loss, grads = nnx.value_and_grad(mse)(model, x, y)
        model.linear1.kernel[...] -= 0.1 * grads["linear1"]["kernel"][...]
        model.linear2.kernel[...] -= 0.1 * grads["linear2"]["kernel"][...]
        model.seen[...] += x.shape[0]
        return loss, grads

    for _ in range(2):
        loss, grads = step(model, x, y)
        expected_loss, expected_grads = reference(twin, x, y)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
        for layer in ("linear1", "linear2"):
            np.testing.assert_allclose(grads[layer]["kernel"][...],
                                       expected_grads[layer]["kernel"][...], rtol=1e-4,
                                       atol=1e-6)
            np.testing.assert_allclose(getattr(model, layer).kernel[...],
                                       getattr(twin, layer).kernel[...], rtol=1e-4,
                                       atol=1e-6)
    assert float(model.seen[...]) == 64.0
    assert isinstance(grads["linear1"]["kernel"], nnx.Param)


def test_data_parallel_step_inside_jit_matches_plain_jax():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    params = {"w1": model.linear1.kernel[...], "w2": model.linear2.kernel[...]}
    x, y = batch()
    mesh = data_mesh()

    @nnx.jit
    def step(model, x, y):
        @nnx.shard_map(mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P(),
                       check_vma=False)
        def local(model, x, y):
            return jax.lax.psum(nnx.grad(mse)(model, x, y), "data")

        return local(model, x, y)

    def plain(p, x, y):
        def loss(p, x, y):
            return ((jax.nn.relu(x @ p["w1"]) @ p["w2"] - y) ** 2).sum() / 32

        return jax.shard_map(lambda p, x, y: jax.lax.psum(jax.grad(loss)(p, x, y), "data"),
                             mesh=mesh, in_specs=(P(), P("data"), P("data")),
                             out_specs=P(), check_vma=False)(p, x, y)

    grads = step(model, x, y)
    expected = plain(params, x, y)
    np.testing.assert_allclose(grads["linear1"]["kernel"][...], expected["w1"], rtol=1e-5)
    np.testing.assert_allclose(grads["linear2"]["kernel"][...], expected["w2"], rtol=1e-5)


def ends_with(*suffix):
    return lambda path, value: path[-len(suffix):] == suffix


@pytest.mark.parametrize("kind", ["filters", "state"])
def test_tensor_parallel_specs(kind):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("model",))
    model = MLP(2, 16, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 2))
    expected = model(x)
    if kind == "filters":
        spec = nnx.StateSharding({ends_with("linear1", "kernel"): P(None, "model"),
                                  ends_with("linear2", "kernel"): P("model", None)})
    else:
        spec = nnx.State({"linear1": {"kernel": P(None, "model")},
                          "linear2": {"kernel": P("model", None)}})
    shapes = []

    @nnx.shard_map(mesh=mesh, in_specs=(spec, P()), out_specs=P())
    def f(m, x):
        shapes.append((m.linear1.kernel.shape, m.linear2.kernel.shape))
        m.seen[...] += 1.0
        return jax.lax.psum(m(x), "model")

    np.testing.assert_allclose(f(model, x), expected, rtol=1e-5, atol=1e-6)
    assert shapes == [((2, 4), (4, 3))]  # each device sees its shard
    assert model.linear1.kernel.shape == (2, 16) and float(model.seen[...]) == 1.0
    f(model, x)  # the written-back arrays are now placed on the mesh: may trace again
    f(model, x)  # cached per structure and placement: not traced again
    assert len(shapes) <= 2 and float(model.seen[...]) == 3.0


def test_single_spec_for_all_arguments_and_returning_the_module():
    model = MLP(2, 4, 2, rngs=nnx.Rngs(0))

    @nnx.shard_map(mesh=data_mesh(), in_specs=P(), out_specs=P())
    def f(m, x):
        m.seen[...] += x
        return m, x * 2

    out, doubled = f(model, jnp.array(3.0))
    assert out is model and float(model.seen[...]) == 3.0 and float(doubled) == 6.0


def test_variable_argument_sharded_and_updated():
    counts = nnx.Variable(jnp.zeros(8))

    @nnx.shard_map(mesh=data_mesh(), in_specs=(P("data"),), out_specs=P("data"))
    def bump(v):
        v[...] += jax.lax.axis_index("data").astype(jnp.float32)
        return v[...] * 2

    out = bump(counts)
    np.testing.assert_array_equal(counts[...], jnp.arange(8.0))
    np.testing.assert_array_equal(out, 2 * jnp.arange(8.0))


def test_check_rep_and_auto_aliases():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((8, 2))
    f = nnx.shard_map(lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("data")),
                      out_specs=P("data"), check_rep=False)
    np.testing.assert_allclose(f(model, x), model(x), rtol=1e-6)
    g = nnx.jit(nnx.shard_map(lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("data")),
                              out_specs=P("data"), auto=frozenset({"model"})))
    np.testing.assert_allclose(g(model, x), model(x), rtol=1e-6)


def test_errors_and_model_left_unchanged():
    model = MLP(2, 4, 2, rngs=nnx.Rngs(0))
    mesh = data_mesh()
    with pytest.raises(TypeError, match="keyword arguments"):
        nnx.shard_map(lambda m: m, mesh=mesh, in_specs=(P(),), out_specs=P())(m=model)
    with pytest.raises(ValueError, match="in_specs has 1 entries"):
        nnx.shard_map(lambda m, x: x, mesh=mesh, in_specs=(P(),), out_specs=P())(
            model, jnp.ones(8))

    def grows(m):
        m.seen[...] += 1.0
        m.extra = nnx.Variable(jnp.ones(()))

    with pytest.raises(ValueError, match="changed the structure"):
        nnx.shard_map(grows, mesh=mesh, in_specs=(P(),), out_specs=P())(model)
    assert not hasattr(model, "extra") and float(model.seen[...]) == 0.0

    def new_module(m):
        return nnx.Linear(1, 1, rngs=nnx.Rngs(0))

    with pytest.raises(TypeError, match="returned a new Linear"):
        nnx.shard_map(new_module, mesh=mesh, in_specs=(P(),), out_specs=P())(model)
    with pytest.raises(TypeError, match="StateSharding and State specs apply to module"):
        nnx.shard_map(lambda x: x, mesh=mesh, in_specs=(nnx.StateSharding({...: P()}),),
                      out_specs=P())(jnp.ones(8))

    def boom(m):
        m.seen[...] += 1.0
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nnx.shard_map(boom, mesh=mesh, in_specs=(P(),), out_specs=P())(model)
    assert float(model.seen[...]) == 0.0
