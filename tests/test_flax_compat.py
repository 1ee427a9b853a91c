"""The same program, written once against the flax.nnx API, run with nnxlib and with
flax.nnx: ``import nnxlib as nnx`` must give the same numbers (same seeds, same keys).

The program exercises the pieces together: vmap-created stacked layers with split
RNG streams, scan over layers with a carry, Dropout drawing from per-layer streams,
BatchNorm statistics updated inside scan and jit, value_and_grad, and an optax
Optimizer, then eval mode and a filtered split.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx as flax_nnx

import nnxlib


def run_program(nnx):
    class Block(nnx.Module):
        def __init__(self, dim, *, rngs):
            self.linear = nnx.Linear(dim, dim, rngs=rngs)
            self.bn = nnx.BatchNorm(dim, rngs=rngs)
            self.dropout = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return nnx.gelu(self.dropout(self.bn(self.linear(x))))

    class ScanMLP(nnx.Module):
        def __init__(self, dim, *, n_layers, rngs):
            @nnx.split_rngs(splits=n_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=n_layers)
            def create_block(rngs):
                return Block(dim, rngs=rngs)

            self.layers = create_block(rngs)
            self.head = nnx.Linear(dim, 1, rngs=rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(x, layer):
                return layer(x)

            return self.head(forward(x, self.layers))

    model = ScanMLP(6, n_layers=3, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    x = jax.random.normal(jax.random.key(1), (8, 6))
    y = jnp.sin(x.sum(-1, keepdims=True))
    losses = [float(train_step(model, optimizer, x, y)) for _ in range(4)]
    model.eval()
    prediction = model(x)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return {
        "losses": np.array(losses),
        "prediction": np.asarray(prediction),
        "kernels": np.asarray(params["layers"]["linear"]["kernel"][...]),
        "means": np.asarray(rest["layers"]["bn"]["mean"][...]),
        "step": int(optimizer.step[...]),
    }


@pytest.fixture(scope="module")
def both():
    return run_program(nnxlib), run_program(flax_nnx)


@pytest.mark.parametrize("key", ["losses", "prediction", "kernels", "means"])
def test_same_numbers_as_flax_nnx(both, key):
    ours, theirs = both
    assert ours[key].shape == theirs[key].shape
    np.testing.assert_allclose(ours[key], theirs[key], rtol=2e-5, atol=1e-6)


def test_training_happened(both):
    ours, _ = both
    assert ours["step"] == 4
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["kernels"].shape == (3, 6, 6) and ours["means"].shape == (3, 6)
