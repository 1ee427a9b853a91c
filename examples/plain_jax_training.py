"""Train the digits CNN of ``train_digits.py`` with plain ``jax.jit`` and ``jax.grad``.

No ``nnx.jit``, no ``nnx.grad``, no split/merge of the whole model in the training loop:
the model and the optimizer are built with ref-backed variables
(``nnx.var_defaults(ref=True)``), whose values live in ``jax.Ref`` s, so a plain
``jax.jit`` step that closes over them updates them in place, PyTorch style. The
gradient is taken with ``jax.value_and_grad`` of the parameters' immutable view
(``nnx.with_vars(params, mutable=False)``); BatchNorm statistics and dropout's random
stream are written into their refs during the forward pass. Same model, data split,
seed and optimizer as ``train_digits.py``, so the accuracy is the same.

Run:  python examples/plain_jax_training.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnxlib as nnx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_digits import CNN, load_digits, split  # noqa: E402  (the same model and data)


def build(args: argparse.Namespace, total_steps: int) -> tuple[CNN, nnx.Optimizer]:
    with nnx.var_defaults(ref=True):  # every variable made here is ref-backed
        model = CNN(channels=args.channels, hidden=args.hidden, dropout=args.dropout,
                    rngs=nnx.Rngs(args.seed))
        schedule = optax.cosine_decay_schedule(args.lr, max(total_steps, 1))
        optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)
    return model, optimizer


def make_steps(model: CNN, optimizer: nnx.Optimizer) -> tuple:
    """The jitted train and eval steps; both close over ``model`` and ``optimizer``."""
    model.train()
    evaluation = nnx.view(model, deterministic=True, use_running_average=True)

    def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train_step(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # at trace time only

        def loss_fn(params: nnx.State) -> tuple[jax.Array, jax.Array]:
            logits = nnx.merge(graphdef, params, rest)(x)  # BatchNorm writes its refs
            return cross_entropy(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            nnx.with_vars(params, mutable=False))
        optimizer.update(model, grads)  # writes into the model's refs
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    @jax.jit
    def eval_step(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = evaluation(x)
        return cross_entropy(logits, y), jnp.mean(jnp.argmax(logits, -1) == y)

    return train_step, eval_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per train step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak adam learning rate")
    parser.add_argument("--channels", type=int, default=32, help="first conv's channels")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden Linear")
    parser.add_argument("--dropout", type=float, default=0.3, help="dropout rate")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out share")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init, shuffling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    start = time.perf_counter()
    images, labels = load_digits()
    train_idx, test_idx = split(len(images), args.seed, args.test_fraction)
    x_train, y_train = images[train_idx], labels[train_idx]
    x_test, y_test = jnp.asarray(images[test_idx]), jnp.asarray(labels[test_idx])
    steps_per_epoch = len(x_train) // args.batch_size
    model, optimizer = build(args, args.epochs * steps_per_epoch)
    train_step, eval_step = make_steps(model, optimizer)
    shuffle = np.random.default_rng(args.seed + 1)
    for epoch in range(1, args.epochs + 1):
        order = shuffle.permutation(len(x_train))
        losses, accuracies = [], []
        for i in range(steps_per_epoch):
            batch = order[i * args.batch_size:(i + 1) * args.batch_size]
            loss, accuracy = train_step(jnp.asarray(x_train[batch]), jnp.asarray(y_train[batch]))
            losses.append(loss)
            accuracies.append(accuracy)
        test_loss, test_accuracy = eval_step(x_test, y_test)
        print(f"epoch {epoch:2d}  train loss {float(jnp.mean(jnp.stack(losses))):.4f}  "
              f"acc {float(jnp.mean(jnp.stack(accuracies))):.3f}  |  test loss "
              f"{float(test_loss):.4f}  acc {float(test_accuracy):.3f}")
    _, final = eval_step(x_test, y_test)
    print(f"test accuracy {float(final):.4f} ({len(x_test)} images)")
    print(f"wall time {time.perf_counter() - start:.1f}s for "
          f"{int(optimizer.step[...])} steps, compile included")
    return float(final)


if __name__ == "__main__":
    main()
