"""Per-call overhead of a jitted train step: nnxlib vs raw JAX vs flax.nnx vs Equinox.

Model: an MLP of ``depth`` blocks (Linear(32, 32) -> BatchNorm(32) -> relu),
batch 8, MSE loss, optax.sgd(1e-3). Times per call, blocking on the result:

* train: value_and_grad of the loss w.r.t. the parameters, BatchNorm in train
  mode updating its running statistics, optimizer update;
* empty: a jitted function that takes the model and optimizer (raw JAX: the
  params, batch stats and optimizer state) and returns nothing.

All four implementations start from the same weights and compute the same
numbers (checked at depth 4 before timing), so the differences are framework
overhead.

    python benchmarks/train_step_overhead.py [--quick] [--impl flax]
"""

from __future__ import annotations

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
    from benchmarks import _timing as t
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t

WIDTH = 32
BATCH = 8
LR = 1e-3
MOMENTUM = 0.99  # flax.nnx.BatchNorm defaults
EPSILON = 1e-5
CHECK_STEPS = 3
NNX_NAMES = (
    "Module", "Linear", "BatchNorm", "List", "Rngs", "relu", "jit", "value_and_grad",
    "Optimizer", "Param",
)  # fmt: skip


# ----------------------------------------------------------------- shared numerics


def init_weights(depth: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Framework-neutral initial values; every implementation loads these."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(depth):
        blocks.append(
            {
                "kernel": (rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32),
                "bias": (0.1 * rng.normal(size=(WIDTH,))).astype(np.float32),
                "scale": (1.0 + 0.1 * rng.normal(size=(WIDTH,))).astype(np.float32),
                "bn_bias": (0.1 * rng.normal(size=(WIDTH,))).astype(np.float32),
                "mean": np.zeros((WIDTH,), np.float32),
                "var": np.ones((WIDTH,), np.float32),
            }
        )
    return blocks


def make_batch(seed: int = 1) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(BATCH, WIDTH)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(BATCH, WIDTH)), jnp.float32)
    return x, y


def batch_norm_train(h, scale, bias, ra_mean, ra_var):
    """Train-mode batch norm as flax computes it (fast variance, biased)."""
    mean = jnp.mean(h, axis=0)
    var = jnp.maximum(0.0, jnp.mean(h * h, axis=0) - mean * mean)
    y = (h - mean) * (jax.lax.rsqrt(var + EPSILON) * scale) + bias
    new_mean = MOMENTUM * ra_mean + (1.0 - MOMENTUM) * mean
    new_var = MOMENTUM * ra_var + (1.0 - MOMENTUM) * var
    return y, new_mean, new_var


def mse(pred, target):
    return jnp.mean((pred - target) ** 2)


# -------------------------------------------------------------- nnx (both columns)


class NnxImpl:
    """The benchmark written once against the flax.nnx API; ``nnx`` is nnxlib or flax.nnx."""

    def __init__(self, nnx, depth: int, weights, graph: bool | None = None):
        modes = {} if graph is None else {"graph": graph}  # tree mode: graph=False

        class Block(nnx.Module):
            def __init__(self, rngs):
                self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
                self.bn = nnx.BatchNorm(WIDTH, rngs=rngs)

            def __call__(self, x):
                return nnx.relu(self.bn(self.linear(x)))

        class MLP(nnx.Module):
            def __init__(self, depth, rngs):
                self.blocks = nnx.List([Block(rngs) for _ in range(depth)])

            def __call__(self, x):
                for block in self.blocks:
                    x = block(x)
                return x

        model = MLP(depth, nnx.Rngs(0))
        for block, w in zip(model.blocks, weights, strict=True):
            block.linear.kernel[...] = jnp.asarray(w["kernel"])
            block.linear.bias[...] = jnp.asarray(w["bias"])
            block.bn.scale[...] = jnp.asarray(w["scale"])
            block.bn.bias[...] = jnp.asarray(w["bn_bias"])
            block.bn.mean[...] = jnp.asarray(w["mean"])
            block.bn.var[...] = jnp.asarray(w["var"])
        model.train()
        self.model = model
        self.optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

        @nnx.jit(**modes)
        def train_step(model, optimizer, x, y):
            def loss_fn(model):
                return mse(model(x), y)

            loss, grads = nnx.value_and_grad(loss_fn, **modes)(model)
            optimizer.update(model, grads)
            return loss

        @nnx.jit(**modes)
        def empty(model, optimizer):
            pass

        self._train_step = train_step
        self._empty = empty

    def train(self, x, y):
        return self._train_step(self.model, self.optimizer, x, y)

    def empty(self):
        return self._empty(self.model, self.optimizer)

    def snapshot(self) -> dict[str, np.ndarray]:
        blocks = self.model.blocks
        return {
            "kernel": np.stack([b.linear.kernel[...] for b in blocks]),
            "bias": np.stack([b.linear.bias[...] for b in blocks]),
            "scale": np.stack([b.bn.scale[...] for b in blocks]),
            "bn_bias": np.stack([b.bn.bias[...] for b in blocks]),
            "mean": np.stack([b.bn.mean[...] for b in blocks]),
            "var": np.stack([b.bn.var[...] for b in blocks]),
        }


# ------------------------------------------------------------------------- raw JAX


class RawImpl:
    """Pure pytrees of dicts and one ``jax.jit`` step; nothing donated."""

    def __init__(self, depth: int, weights):
        self.params = [
            {k: jnp.asarray(w[k]) for k in ("kernel", "bias", "scale", "bn_bias")} for w in weights
        ]
        self.stats = [{k: jnp.asarray(w[k]) for k in ("mean", "var")} for w in weights]
        self.tx = optax.sgd(LR)
        self.opt_state = self.tx.init(self.params)
        tx = self.tx

        def forward(params, stats, x):
            new_stats = []
            for p, s in zip(params, stats, strict=True):
                h = x @ p["kernel"] + p["bias"]
                h, mean, var = batch_norm_train(h, p["scale"], p["bn_bias"], s["mean"], s["var"])
                x = jax.nn.relu(h)
                new_stats.append({"mean": mean, "var": var})
            return x, new_stats

        def loss_fn(params, stats, x, y):
            pred, new_stats = forward(params, stats, x)
            return mse(pred, y), new_stats

        @jax.jit
        def train_step(params, stats, opt_state, x, y):
            (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, stats, x, y
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return loss, params, new_stats, opt_state

        @jax.jit
        def empty(params, stats, opt_state):
            pass

        self._train_step = train_step
        self._empty = empty

    def train(self, x, y):
        loss, self.params, self.stats, self.opt_state = self._train_step(
            self.params, self.stats, self.opt_state, x, y
        )
        return loss

    def empty(self):
        return self._empty(self.params, self.stats, self.opt_state)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {
            **{k: np.stack([p[k] for p in self.params]) for k in self.params[0]},
            **{k: np.stack([s[k] for s in self.stats]) for k in self.stats[0]},
        }


# ------------------------------------------------------------------------- Equinox


class EqxBatchNorm(eqx.Module):
    """Hand-written batch norm; running statistics live in the module."""

    scale: jax.Array
    bias: jax.Array
    mean: jax.Array
    var: jax.Array

    def __call__(self, h):
        y, mean, var = batch_norm_train(h, self.scale, self.bias, self.mean, self.var)
        new = eqx.tree_at(lambda m: (m.mean, m.var), self, (mean, var))
        return y, new


class EqxBlock(eqx.Module):
    linear: eqx.nn.Linear
    bn: EqxBatchNorm

    def __call__(self, x):
        h = jax.vmap(self.linear)(x)
        h, bn = self.bn(h)
        return jax.nn.relu(h), eqx.tree_at(lambda b: b.bn, self, bn)


class EqxMLP(eqx.Module):
    blocks: list

    def __call__(self, x):
        blocks = []
        for block in self.blocks:
            x, block = block(x)
            blocks.append(block)
        return x, EqxMLP(blocks)


def _eqx_stats(model: EqxMLP):
    return [leaf for b in model.blocks for leaf in (b.bn.mean, b.bn.var)]


def eqx_param_mask(model: EqxMLP):
    """True for trainable arrays, False for the BatchNorm running statistics."""
    mask = jax.tree_util.tree_map(eqx.is_inexact_array, model)
    return eqx.tree_at(_eqx_stats, mask, [False] * (2 * len(model.blocks)))


class EqxImpl:
    """``eqx.filter_jit`` + ``eqx.filter_value_and_grad``; the step returns the new model."""

    def __init__(self, depth: int, weights):
        keys = jax.random.split(jax.random.key(0), depth)
        blocks = []
        for key, w in zip(keys, weights, strict=True):
            linear = eqx.nn.Linear(WIDTH, WIDTH, key=key)
            # eqx.nn.Linear stores the weight as (out, in).
            linear = eqx.tree_at(
                lambda m: (m.weight, m.bias),
                linear,
                (jnp.asarray(w["kernel"].T), jnp.asarray(w["bias"])),
            )
            bn = EqxBatchNorm(*(jnp.asarray(w[k]) for k in ("scale", "bn_bias", "mean", "var")))
            blocks.append(EqxBlock(linear, bn))
        self.model = EqxMLP(blocks)
        self.tx = optax.sgd(LR)
        params, _ = eqx.partition(self.model, eqx_param_mask(self.model))
        self.opt_state = self.tx.init(params)
        tx = self.tx

        def loss_fn(params, rest, x, y):
            pred, new_model = eqx.combine(params, rest)(x)
            return mse(pred, y), new_model

        @eqx.filter_jit
        def train_step(model, opt_state, x, y):
            params, rest = eqx.partition(model, eqx_param_mask(model))
            (loss, new_model), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
                params, rest, x, y
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            return loss, eqx.apply_updates(new_model, updates), opt_state

        @eqx.filter_jit
        def empty(model, opt_state):
            pass

        self._train_step = train_step
        self._empty = empty

    def train(self, x, y):
        loss, self.model, self.opt_state = self._train_step(self.model, self.opt_state, x, y)
        return loss

    def empty(self):
        return self._empty(self.model, self.opt_state)

    def snapshot(self) -> dict[str, np.ndarray]:
        blocks = self.model.blocks
        return {
            "kernel": np.stack([np.asarray(b.linear.weight).T for b in blocks]),
            "bias": np.stack([b.linear.bias for b in blocks]),
            "scale": np.stack([b.bn.scale for b in blocks]),
            "bn_bias": np.stack([b.bn.bias for b in blocks]),
            "mean": np.stack([b.bn.mean for b in blocks]),
            "var": np.stack([b.bn.var for b in blocks]),
        }


# ---------------------------------------------------------------------------- main


def check_numerics(ours, label: str, depth: int = 4) -> None:
    """Runs CHECK_STEPS steps of every implementation from the same weights and
    compares losses and all weights and running statistics to raw JAX.

    Done at a small depth: a deep plain Linear-BatchNorm-relu stack is chaotic
    (gradients explode with depth), so at depth 64 float rounding differences
    between equivalent programs grow to O(1) within a step or two.
    """
    from flax import nnx as flax_nnx

    weights = init_weights(depth, seed=2)
    impls = {
        "raw JAX": RawImpl(depth, weights),
        label: NnxImpl(ours, depth, weights),
        "flax.nnx": NnxImpl(flax_nnx, depth, weights),
        "equinox": EqxImpl(depth, weights),
    }
    x, y = make_batch()
    losses = {
        name: np.array([impl.train(x, y) for _ in range(CHECK_STEPS)])
        for name, impl in impls.items()
    }
    ref_losses, ref_values = losses["raw JAX"], impls["raw JAX"].snapshot()
    report = []
    for name, impl in list(impls.items())[1:]:
        values = impl.snapshot()
        for key, ref in [("loss", ref_losses)] + list(ref_values.items()):
            got = losses[name] if key == "loss" else values[key]
            if not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
                raise AssertionError(
                    f"numerics check (depth {depth}, {CHECK_STEPS} steps): {name} {key} "
                    f"differs from raw JAX by up to {np.max(np.abs(got - ref)):.3e}"
                )
        diff = np.max(np.abs(losses[name] - ref_losses) / np.abs(ref_losses))
        report.append(f"{name} {diff:.1e}")
    print(
        f"numerics check passed: depth {depth}, {CHECK_STEPS} steps, losses, weights and "
        f"running stats agree with raw JAX (max rel. loss diff: {', '.join(report)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    args = parser.parse_args(argv)

    config = t.TimingConfig.for_args(args.quick)
    ours = t.load_nnx(args.impl, NNX_NAMES)
    from flax import nnx as flax_nnx

    label = t.impl_label(args.impl)
    names = ["raw JAX", label, "flax.nnx", "equinox"]
    t.print_environment(config, args.stat, args.impl)
    print(
        f"MLP of depth x (Linear({WIDTH},{WIDTH}) -> BatchNorm({WIDTH}) -> relu), "
        f"batch {BATCH}, optax.sgd({LR}); every call blocks on its result"
    )

    check_numerics(ours, label)
    results: dict[tuple[int, str, str], float] = {}
    for depth in args.depths:
        weights = init_weights(depth)
        impls = {
            "raw JAX": RawImpl(depth, weights),
            label: NnxImpl(ours, depth, weights),
            "flax.nnx": NnxImpl(flax_nnx, depth, weights),
            "equinox": EqxImpl(depth, weights),
        }
        x, y = make_batch()
        for name, impl in impls.items():
            loss = float(impl.train(x, y))  # compile
            if not np.isfinite(loss):
                raise AssertionError(f"depth {depth}: {name} loss is {loss}")
        # Each kind of step is timed for all implementations with interleaved repeats.
        steps = {
            "train": lambda impl: jax.block_until_ready(impl.train(x, y)),
            "empty": lambda impl: jax.block_until_ready(impl.empty()),
        }
        for kind, step in steps.items():
            timings = t.time_interleaved(
                {name: (lambda impl=impl, step=step: step(impl)) for name, impl in impls.items()},
                config,
            )
            for name, timing in timings.items():
                results[(depth, kind, name)] = timing.get(args.stat)

    header = ["depth / step"] + [f"{n} us" for n in names] + [f"{n} / raw" for n in names[1:]]
    rows = []
    for depth in args.depths:
        for kind in ("train", "empty"):
            us = [results[(depth, kind, n)] for n in names]
            rows.append(
                [f"{depth} {kind}"]
                + [t.fmt_us(v) for v in us]
                + [t.fmt_ratio(v / us[0]) for v in us[1:]]
            )
    t.print_table("time per call (us) and ratio to raw JAX", header, rows)

    checks = []
    for depth in args.depths:
        for kind, target in (("train", 1.25), ("empty", 2.0)):
            ratio = results[(depth, kind, label)] / results[(depth, kind, "raw JAX")]
            checks.append((f"depth {depth} {label} {kind} / raw JAX", ratio, target, True))
    missed = t.print_targets("targets", checks)
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
