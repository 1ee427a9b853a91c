"""Train a small CNN on the bundled 8x8 handwritten digits (the README's main job).

The model is written eagerly, PyTorch style (Conv -> BatchNorm -> relu -> max_pool twice,
then Linear -> Dropout -> Linear). ``nnx.jit`` compiles the train and eval steps,
``nnx.Optimizer`` applies adam, and ``nnx.metrics`` accumulates loss and accuracy inside
the compiled steps. A rich progress bar shows live loss and accuracy; at the end the
script prints the test accuracy and the wall time, writes a PNG of the loss and accuracy
curves, and saves the trained model (``nnx.to_pure_dict`` + ``numpy.savez``), which
``--eval`` loads back to report the same test accuracy.

Data: ``examples/data/digits.npz`` (1,797 images, UCI "Optical Recognition of
Handwritten Digits", CC BY 4.0; see ``examples/data/DIGITS_LICENSE.md``). Nothing is
downloaded.

Run:  python examples/train_digits.py            (train, plot, save)
      python examples/train_digits.py --eval     (reload the saved model, evaluate)
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

import nnxlib as nnx

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data" / "digits.npz"
NUM_CLASSES = 10


# ---------------------------------------------------------------------------- data
def load_digits(path: pathlib.Path = DATA) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 ``(N, 8, 8, 1)`` scaled to [0, 1], labels as int32 ``(N,)``."""
    with np.load(path) as data:
        images = data["images"].astype(np.float32) / 16.0
        labels = data["labels"].astype(np.int32)
    return images[..., None], labels


def split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/test split of ``range(n)``."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return order[n_test:], order[:n_test]


# --------------------------------------------------------------------------- model
class CNN(nnx.Module):
    """Two conv blocks (8x8 -> 4x4 -> 2x2) and a two-layer classifier head."""

    def __init__(self, *, channels: int = 32, hidden: int = 128, dropout: float = 0.3,
                 rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, channels, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(channels, rngs=rngs)
        self.conv2 = nnx.Conv(channels, 2 * channels, kernel_size=(3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(2 * channels, rngs=rngs)
        self.fc1 = nnx.Linear(2 * channels * 2 * 2, hidden, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.fc1(x)))
        return self.fc2(x)


def make_metrics() -> nnx.MultiMetric:
    return nnx.MultiMetric(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, logits


@nnx.jit
def train_step(model: CNN, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric,
               x: jax.Array, y: jax.Array) -> None:
    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y)
    optimizer.update(model, grads)
    metrics.update(loss=loss, logits=logits, labels=y)


@nnx.jit
def eval_step(model: CNN, metrics: nnx.MultiMetric, x: jax.Array, y: jax.Array) -> None:
    loss, logits = loss_fn(model, x, y)
    metrics.update(loss=loss, logits=logits, labels=y)


def evaluate(model: CNN, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test loss and accuracy of ``model`` (in evaluation mode) on all of ``x``."""
    metrics = make_metrics()
    model.eval()
    eval_step(model, metrics, jnp.asarray(x), jnp.asarray(y))
    return {name: float(value) for name, value in metrics.compute().items()}


# -------------------------------------------------------------------- save and load
SAVED = nnx.Any(nnx.Param, nnx.BatchStat)   # what a trained model needs (no RNG state)


def save_model(model: CNN, path: pathlib.Path, **meta: int | float) -> None:
    """``nnx.to_pure_dict`` of the parameters and batch statistics, flattened to
    ``'conv1/kernel'``-style keys for ``numpy.savez``, plus ``meta/...`` entries."""
    pure = nnx.to_pure_dict(nnx.state(model, SAVED))
    arrays = {"/".join(map(str, path)): np.asarray(value) for path, value in _flat(pure)}
    arrays.update({f"meta/{k}": np.asarray(v) for k, v in meta.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_model(model: CNN, path: pathlib.Path) -> dict[str, float]:
    """Load what :func:`save_model` wrote into ``model``; returns the ``meta`` entries."""
    with np.load(path) as saved:
        arrays = dict(saved)
    state = nnx.state(model, SAVED)
    pure = nnx.to_pure_dict(state)
    missing = []
    for key_path, _ in _flat(pure):
        key = "/".join(map(str, key_path))
        if key not in arrays:
            missing.append(key)
            continue
        _set(pure, key_path, jnp.asarray(arrays[key]))
    if missing:
        raise SystemExit(f"{path} does not fit this model: missing {missing[:5]}. Was it "
                         "saved with other --channels/--hidden? Train again to overwrite it.")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return {k[len("meta/"):]: v.item() for k, v in arrays.items() if k.startswith("meta/")}


def _flat(tree: dict, prefix: tuple = ()) -> list[tuple[tuple, object]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flat(value, prefix + (key,))
        else:
            out.append((prefix + (key,), value))
    return out


def _set(tree: dict, path: tuple, value: object) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


# ------------------------------------------------------------------------- plotting
def plot_curves(history: dict[str, list[float]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["test_loss"], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss", yscale="log")
    ax_acc.plot(epochs, history["train_accuracy"], label="train")
    ax_acc.plot(epochs, history["test_accuracy"], label="test")
    lowest = min(history["train_accuracy"] + history["test_accuracy"])
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy",
               ylim=(max(0.0, lowest - 0.02), 1.0))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("CNN on 8x8 digits (nnxlib)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many train steps (for quick smoke runs)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per train step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak adam learning rate "
                        "(cosine decay to zero over the run)")
    parser.add_argument("--channels", type=int, default=32,
                        help="channels of the first conv layer (the second has twice as many)")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden Linear")
    parser.add_argument("--dropout", type=float, default=0.3, help="dropout rate before the "
                        "output layer")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of the 1,797 images held out for testing")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, the initialisation, dropout and shuffling")
    parser.add_argument("--out-dir", type=pathlib.Path, default=HERE / "output",
                        help="where the plot and the model are written")
    parser.add_argument("--model", type=pathlib.Path, default=None,
                        help="model file (default: OUT_DIR/digits_cnn.npz)")
    parser.add_argument("--eval", action="store_true",
                        help="do not train: load --model and report its test accuracy")
    parser.add_argument("--no-progress", action="store_true",
                        help="print one line per epoch instead of a live progress bar")
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    images, labels = load_digits()
    train_idx, test_idx = split(len(images), args.seed, args.test_fraction)
    x_train, y_train = images[train_idx], labels[train_idx]
    x_test, y_test = images[test_idx], labels[test_idx]
    steps_per_epoch = len(x_train) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    model = CNN(channels=args.channels, hidden=args.hidden, dropout=args.dropout,
                rngs=nnx.Rngs(args.seed))
    schedule = optax.cosine_decay_schedule(args.lr, max(total_steps, 1))
    optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)
    metrics = make_metrics()
    shuffle = np.random.default_rng(args.seed + 1)
    history: dict[str, list[float]] = {k: [] for k in
                                       ("train_loss", "train_accuracy", "test_loss",
                                        "test_accuracy")}

    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), disable=args.no_progress)
    step = 0
    with progress:
        task = progress.add_task("train", total=total_steps, epoch=1, stats="")
        for epoch in range(1, args.epochs + 1):
            if step >= total_steps:
                break
            model.train()
            metrics.reset()
            order = shuffle.permutation(len(x_train))
            for i in range(steps_per_epoch):
                if step >= total_steps:
                    break
                batch = order[i * args.batch_size:(i + 1) * args.batch_size]
                train_step(model, optimizer, metrics, jnp.asarray(x_train[batch]),
                           jnp.asarray(y_train[batch]))
                step += 1
                if step % 10 == 0 or i == steps_per_epoch - 1 or step == total_steps:
                    live = metrics.compute()
                    progress.update(task, completed=step, epoch=epoch, stats=(
                        f"loss {float(live['loss']):.4f}  acc {float(live['accuracy']):.3f}"))
            train_stats = {k: float(v) for k, v in metrics.compute().items()}
            test_stats = evaluate(model, x_test, y_test)
            for name in ("loss", "accuracy"):
                history[f"train_{name}"].append(train_stats[name])
                history[f"test_{name}"].append(test_stats[name])
            line = (f"epoch {epoch:2d}  train loss {train_stats['loss']:.4f}  "
                    f"acc {train_stats['accuracy']:.3f}  |  test loss "
                    f"{test_stats['loss']:.4f}  acc {test_stats['accuracy']:.3f}")
            if args.no_progress:
                print(line)
            else:
                progress.console.print(line)
    elapsed = time.perf_counter() - start

    final = evaluate(model, x_test, y_test)
    out_dir = args.out_dir
    plot_path = out_dir / "digits_curves.png"
    model_path = args.model or out_dir / "digits_cnn.npz"
    plot_curves(history, plot_path)
    save_model(model, model_path, seed=args.seed, test_fraction=args.test_fraction,
               channels=args.channels, hidden=args.hidden)
    print(f"test accuracy {final['accuracy']:.4f} ({len(x_test)} images), "
          f"test loss {final['loss']:.4f}")
    print(f"wall time {elapsed:.1f}s for {step} steps, compile included "
          f"({jax.device_count()} {jax.default_backend()} device(s))")
    print(f"curves: {plot_path.resolve()}")
    print(f"model:  {model_path.resolve()}")


def evaluate_saved(args: argparse.Namespace) -> None:
    model_path = args.model or args.out_dir / "digits_cnn.npz"
    if not model_path.exists():
        raise SystemExit(f"no saved model at {model_path}; train first (run without --eval).")
    with np.load(model_path) as saved:
        meta = {k[len("meta/"):]: saved[k].item() for k in saved.files if k.startswith("meta/")}
    model = CNN(channels=int(meta["channels"]), hidden=int(meta["hidden"]),
                rngs=nnx.Rngs(0))
    load_model(model, model_path)
    images, labels = load_digits()
    _, test_idx = split(len(images), int(meta["seed"]), float(meta["test_fraction"]))
    result = evaluate(model, images[test_idx], labels[test_idx])
    print(f"loaded {model_path.resolve()}")
    print(f"test accuracy {result['accuracy']:.4f} ({len(test_idx)} images), "
          f"test loss {result['loss']:.4f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.eval:
        evaluate_saved(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
