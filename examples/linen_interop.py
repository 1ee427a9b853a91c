"""Linen interop: fine-tune a legacy Linen CNN with nnxlib, and use an nnxlib layer in Linen.

Part 1: a Linen CNN (Conv -> BatchNorm -> relu -> Dropout -> Dense), with variables as a
Linen training job would have saved them, is wrapped with ``bridge.ToNNX``, given those
variables with ``bridge.load_linen_variables`` and fine-tuned with ``nnx.Optimizer``
inside ``nnx.jit``: batch statistics and dropout keys are updated in place.

Part 2: an nnxlib ``Linear`` (through ``bridge.to_linen_class``) is the head of a Linen
model trained the Linen way (``init``/``apply`` + optax).

Data: 8x8 images of a horizontal or a vertical bar, with noise (class = orientation).

Run:  python examples/linen_interop.py [--steps 150] [--seed 0]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np
import optax

import bridge
import nnxlib as nnx


def bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8x8 images of one bar; label 0 = horizontal, 1 = vertical."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(0.0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    where = rng.integers(1, 7, n)
    for i, (label, k) in enumerate(zip(labels, where)):
        if label == 0:
            images[i, k, :, 0] += 1.0
        else:
            images[i, :, k, 0] += 1.0
    return images, labels.astype(np.int32)


class LegacyCNN(nn.Module):
    """The kind of model a Linen codebase already has."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
        return nn.Dense(2)(x.mean(axis=(1, 2)))


def accuracy(logits: jax.Array, labels: np.ndarray) -> float:
    return float((logits.argmax(-1) == labels).mean())


def finetune_linen_model_with_nnxlib(steps: int, seed: int) -> float:
    x_train, y_train = bars(256, seed)
    x_test, y_test = bars(256, seed + 1)
    # Variables as the legacy Linen code saved them (here: freshly initialised).
    saved = LegacyCNN().init(jax.random.key(seed), x_train[:1], train=False)

    model = bridge.ToNNX(LegacyCNN(), rngs=nnx.Rngs(seed, dropout=seed + 1))
    model.lazy_init(x_train[:1], train=False)
    bridge.load_linen_variables(model, saved)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    evaluate = nnx.jit(lambda model, x: model(x, train=False))
    for step in range(steps):
        batch = np.random.default_rng(step).choice(len(x_train), 32, replace=False)
        loss = train_step(model, optimizer, x_train[batch], y_train[batch])
        if step % 50 == 0:
            print(f"[ToNNX] step {step:4d}  loss {float(loss):.3f}")
    test_accuracy = accuracy(evaluate(model, x_test), y_test)
    print(f"[ToNNX] fine-tuned Linen CNN: test accuracy {test_accuracy:.3f}")
    return test_accuracy


LinenLinear = bridge.to_linen_class(nnx.Linear)


class LinenWithNnxHead(nn.Module):
    """A Linen model whose classifier head is nnxlib's Linear."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x)).mean(axis=(1, 2))
        return LinenLinear(in_features=8, out_features=2)(x)


def train_linen_model_with_nnx_layer(steps: int, seed: int) -> float:
    x_train, y_train = bars(256, seed)
    x_test, y_test = bars(256, seed + 1)
    model = LinenWithNnxHead()
    params = model.init(jax.random.key(seed), x_train[:1])["params"]
    print(f"[ToLinen] parameters: {sorted(params)}")
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(params):
            logits = model.apply({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for step in range(steps):
        batch = np.random.default_rng(step).choice(len(x_train), 32, replace=False)
        params, opt_state, loss = train_step(params, opt_state, x_train[batch], y_train[batch])
    test_accuracy = accuracy(model.apply({"params": params}, x_test), y_test)
    print(f"[ToLinen] Linen model with an nnxlib head: test accuracy {test_accuracy:.3f}")
    return test_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first = finetune_linen_model_with_nnxlib(args.steps, args.seed)
    second = train_linen_model_with_nnx_layer(args.steps, args.seed)
    print(f"final test accuracy {min(first, second):.3f}")


if __name__ == "__main__":
    main()
