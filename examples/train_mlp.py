"""Train an MLP classifier on the bundled two-spirals data set (the README's main job).

The model is written eagerly, PyTorch style; ``nnx.jit`` compiles the train step, and
``nnx.value_and_grad`` + ``nnx.Optimizer`` update it in place. BatchNorm statistics and
Dropout RNG counts are module state, updated inside the compiled step like any other.

Run:  python examples/train_mlp.py [--steps 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnxlib as nnx

DATA = pathlib.Path(__file__).parent / "data" / "spirals.csv"


def load_spirals(path: pathlib.Path = DATA) -> tuple[np.ndarray, np.ndarray]:
    """Read the bundled CSV: two float features and an integer label per row."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r["x0"]), float(r["x1"])] for r in rows], np.float32)
    y = np.array([int(r["label"]) for r in rows], np.int32)
    return x, y


class MLP(nnx.Module):
    """Linear -> BatchNorm -> relu -> Dropout blocks, then a linear classifier head."""

    def __init__(self, sizes: list[int], num_classes: int, *, dropout: float,
                 rngs: nnx.Rngs):
        self.blocks = [
            nnx.Sequential(nnx.Linear(a, b, rngs=rngs), nnx.BatchNorm(b, rngs=rngs),
                           nnx.relu, nnx.Dropout(dropout, rngs=rngs))
            for a, b in zip(sizes, sizes[1:])
        ]
        self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
               ) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return (model(x).argmax(-1) == y).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x, y = load_spirals()
    order = np.random.default_rng(args.seed).permutation(len(x))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]

    model = MLP([2, 64, 64], 2, dropout=0.05, rngs=nnx.Rngs(args.seed, dropout=args.seed + 1))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    batches = np.random.default_rng(args.seed + 2)

    start = time.perf_counter()
    model.train()  # a structural change: done once, not per step, so plans stay cached
    for step in range(1, args.steps + 1):
        idx = batches.choice(train, args.batch, replace=False)
        loss = train_step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
        if step % 250 == 0 or step == args.steps:
            model.eval()
            acc = accuracy(model, jnp.asarray(x[test]), jnp.asarray(y[test]))
            model.train()
            print(f"step {step:5d}  loss {float(loss):.4f}  test accuracy {float(acc):.3f}")
    elapsed = time.perf_counter() - start
    print(f"trained {args.steps} steps in {elapsed:.1f}s "
          f"({1e3 * elapsed / args.steps:.2f} ms/step, compile included)")
    model.eval()
    final = float(accuracy(model, jnp.asarray(x[test]), jnp.asarray(y[test])))
    print(f"final test accuracy {final:.3f}")


if __name__ == "__main__":
    main()
