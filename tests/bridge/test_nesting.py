"""Nesting both ways: Linen in nnxlib in Linen, and nnxlib in Linen in nnxlib."""

import flax.linen as nn
import jax
import numpy as np

import nnxlib as nnx
from bridge import ToLinen, ToNNX

X = jax.random.normal(jax.random.key(0), (8, 4))


class LinenInner(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(6, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "mlp")))(x)
        return nn.Dropout(0.5, deterministic=False)(x)


class NnxMiddle(nnx.Module):
    def __init__(self, rngs):
        self.inner = ToNNX(LinenInner(), rngs=rngs)
        self.out = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(self.inner(x))


class LinenOuter(nn.Module):
    @nn.compact
    def __call__(self, x):
        return ToLinen(NnxMiddle, name="middle")(x)


def test_linen_in_nnx_in_linen():
    variables = LinenOuter().init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    middle = variables["params"]["middle"]
    kernel = middle["inner"]["Dense_0"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned)  # out_sharding kept, as Linen's box
    assert kernel.names == ("embed", "mlp")
    assert sorted(middle) == ["inner", "out"]

    def run(seed):
        return LinenOuter().apply(variables, X, rngs={"dropout": jax.random.key(seed)})

    a, b = run(1), run(2)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(run(1), a)
    # One init and one apply under jit too.
    jitted = jax.jit(lambda v, k: LinenOuter().apply(v, X, rngs={"dropout": k}))
    np.testing.assert_allclose(jitted(variables, jax.random.key(1)), a, rtol=1e-6)


class LinenMiddle(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ToLinen(nnx.Linear, args=(4, 6), kwargs={"kernel_metadata": {
            "out_sharding": ("embed", "mlp")}}, name="linear")(x)
        return nn.Dropout(0.5, deterministic=False)(x)


class NnxOuter(nnx.Module):
    def __init__(self, rngs):
        self.middle = ToNNX(LinenMiddle(), rngs=rngs)

    def __call__(self, x):
        return self.middle(x)


def test_nnx_in_linen_in_nnx():
    model = NnxOuter(nnx.Rngs(0, dropout=1))
    nnx.bridge.lazy_init(model, X)
    kernel = model.middle.linear.kernel
    assert isinstance(kernel, nnx.Param)
    assert kernel.out_sharding == ("embed", "mlp")  # through NNXMeta and back
    a, b = model(X), model(X)
    assert not np.array_equal(a, b)  # dropout keys advance per call
    kept = a != 0
    expected = X @ kernel[...] + model.middle.linear.bias[...]
    np.testing.assert_allclose(a[kept], (expected / 0.5)[kept], rtol=1e-5)
    graphdef = nnx.graphdef(model)
    nnx.jit(lambda m: m(X))(model)
    assert nnx.graphdef(model) == graphdef
