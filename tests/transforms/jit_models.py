"""Small modules shared by the ``nnx.jit`` test files (not a test module itself)."""

import jax
import jax.numpy as jnp

import nnxlib as nnx


class Linear(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)))
        self.bias = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x):
        return x @ self.kernel + self.bias


class Stats(nnx.Module):
    """Updates a BatchStat and a counter on every call."""

    def __init__(self, n):
        self.mean = nnx.BatchStat(jnp.zeros((n,)))
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.mean[...] = 0.5 * self.mean + 0.5 * x.mean(0)
        self.count[...] += 1
        return x - self.mean


class Net(nnx.Module):
    def __init__(self, seed=0):
        rngs = nnx.Rngs(seed)
        self.linear = Linear(2, 3, rngs=rngs)
        self.stats = Stats(3)
        self.raw = jnp.arange(3.0)  # an array attribute: state without a Variable box
        self.layers = [Linear(3, 3, rngs=rngs)]  # a plain list (tracked as nnx.List)
        self.rngs = nnx.Rngs(params=seed + 1, dropout=seed + 2)
        self.flag = False

    def __call__(self, x):
        h = self.stats(self.linear(x))
        for layer in self.layers:
            h = layer(h)
        return h + self.raw


X = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]])
