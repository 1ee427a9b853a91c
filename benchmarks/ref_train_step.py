"""Ref-mode train step: nnxlib modules with ``ref=True`` variables in a plain ``jax.jit``.

The model, weights, batch and loss of ``train_step_overhead.py`` (an MLP of ``depth``
Linear -> BatchNorm -> relu blocks, optax.sgd). Columns, per call, blocking on the result:

* ``raw JAX``: pure pytrees of arrays, ``jax.jit`` returns the new params/stats/opt state;
* ``raw refs``: the same pytrees with every array in a ``jax.Ref``, closed over by a
  hand-written ``jax.jit`` step that writes the new values into the refs;
* ``nnxlib ref``: the nnxlib model and optimizer built under ``nnx.var_defaults(ref=True)``,
  closed over by a plain ``jax.jit`` step (``jax.value_and_grad`` of
  ``nnx.with_vars(params, mutable=False)``, ``optimizer.update``);
* ``nnxlib ref args``: the same step with the model and optimizer passed as arguments;
* ``nnx.jit``: the default-mode nnxlib step of ``train_step_overhead.py``.

Then the eager forward pass, default mode vs ref mode. All columns start from the same
weights and compute the same numbers (checked at depth 4 before timing).

    python benchmarks/ref_train_step.py [--quick] [--depths 4,16,64]
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import optax

try:
    from benchmarks import _timing as t
    from benchmarks import train_step_overhead as base
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t
    import train_step_overhead as base

CHECK_STEPS = 3


class RawRefImpl:
    """The raw JAX step on pytrees of ``jax.Ref`` s, closed over; nothing returned but
    the loss."""

    def __init__(self, depth: int, weights):
        raw = base.RawImpl(depth, weights)
        tx = raw.tx
        self.params = jax.tree.map(jax.new_ref, raw.params)
        self.stats = jax.tree.map(jax.new_ref, raw.stats)
        self.opt_state = jax.tree.map(jax.new_ref, raw.opt_state)
        params_r, stats_r, opt_r = self.params, self.stats, self.opt_state
        read = lambda tree: jax.tree.map(lambda r: r[...], tree)  # noqa: E731

        def write(refs, values):
            jax.tree.map(lambda r, v: r.__setitem__(..., v), refs, values)

        def loss_fn(params, stats, x, y):
            new_stats = []
            for p, s in zip(params, stats, strict=True):
                h = x @ p["kernel"] + p["bias"]
                h, mean, var = base.batch_norm_train(h, p["scale"], p["bn_bias"],
                                                     s["mean"], s["var"])
                x = jax.nn.relu(h)
                new_stats.append({"mean": mean, "var": var})
            return base.mse(x, y), new_stats

        @jax.jit
        def train_step(x, y):
            params, stats = read(params_r), read(stats_r)
            (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, stats, x, y)
            updates, opt_state = tx.update(grads, read(opt_r), params)
            write(params_r, optax.apply_updates(params, updates))
            write(stats_r, new_stats)
            write(opt_r, opt_state)
            return loss

        self._train_step = train_step

    def train(self, x, y):
        return self._train_step(x, y)

    def snapshot(self) -> dict[str, np.ndarray]:
        params = jax.tree.map(lambda r: r[...], self.params)
        stats = jax.tree.map(lambda r: r[...], self.stats)
        return {**{k: np.stack([p[k] for p in params]) for k in params[0]},
                **{k: np.stack([s[k] for s in stats]) for k in stats[0]}}


class NnxRefImpl(base.NnxImpl):
    """nnxlib with ref variables; plain ``jax.jit`` (closure or arguments)."""

    def __init__(self, nnx, depth: int, weights, *, as_args: bool):
        with nnx.var_defaults(ref=True):
            super().__init__(nnx, depth, weights)
        model, optimizer = self.model, self.optimizer

        def step(model, optimizer, x, y):
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)

            def loss_fn(params):
                return base.mse(nnx.merge(graphdef, params, rest)(x), y)

            loss, grads = jax.value_and_grad(loss_fn)(nnx.with_vars(params, mutable=False))
            optimizer.update(model, grads)
            return loss

        if as_args:
            jitted = jax.jit(step)
            self._train_step = lambda m, o, x, y: jitted(m, o, x, y)
        else:
            closed = jax.jit(lambda x, y: step(model, optimizer, x, y))
            self._train_step = lambda m, o, x, y: closed(x, y)


def _impls(nnx, depth: int, weights) -> dict:
    return {
        "raw JAX": base.RawImpl(depth, weights),
        "raw refs": RawRefImpl(depth, weights),
        "nnxlib ref": NnxRefImpl(nnx, depth, weights, as_args=False),
        "nnxlib ref args": NnxRefImpl(nnx, depth, weights, as_args=True),
        "nnx.jit": base.NnxImpl(nnx, depth, weights),
    }


def check_numerics(nnx, depth: int = 4) -> None:
    impls = _impls(nnx, depth, base.init_weights(depth, seed=2))
    x, y = base.make_batch()
    losses = {n: np.array([impl.train(x, y) for _ in range(CHECK_STEPS)])
              for n, impl in impls.items()}
    ref = impls["raw JAX"].snapshot()
    for name, impl in impls.items():
        values = impl.snapshot()
        for key in ref:
            if not np.allclose(values[key], ref[key], rtol=1e-4, atol=1e-5):
                raise AssertionError(f"numerics check: {name} {key} differs from raw JAX")
        if not np.allclose(losses[name], losses["raw JAX"], rtol=1e-4):
            raise AssertionError(f"numerics check: {name} loss differs from raw JAX")
    print(f"numerics check passed: depth {depth}, {CHECK_STEPS} steps, every column "
          "agrees with raw JAX (losses, weights, running stats)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    args = parser.parse_args(argv)
    config = t.TimingConfig.for_args(args.quick)
    nnx = t.load_nnx("nnxlib", base.NNX_NAMES)
    t.print_environment(config, args.stat, "nnxlib")
    check_numerics(nnx)
    names = list(_impls(nnx, 1, base.init_weights(1)))
    results: dict[tuple[int, str], float] = {}
    forward: dict[tuple[int, str], float] = {}
    x, y = base.make_batch()
    for depth in args.depths:
        impls = _impls(nnx, depth, base.init_weights(depth))
        for impl in impls.values():
            jax.block_until_ready(impl.train(x, y))  # compile
        timings = t.time_interleaved(
            {n: (lambda impl=impl: jax.block_until_ready(impl.train(x, y)))
             for n, impl in impls.items()}, config)
        for name, timing in timings.items():
            results[(depth, name)] = timing.get(args.stat)
        models = {"default": impls["nnx.jit"].model, "ref": impls["nnxlib ref"].model}
        timings = t.time_interleaved(
            {n: (lambda m=m: jax.block_until_ready(m(x))) for n, m in models.items()},
            config)
        for name, timing in timings.items():
            forward[(depth, name)] = timing.get(args.stat)

    header = ["depth"] + [f"{n} us" for n in names] + ["ref / raw", "ref / raw refs",
                                                       "ref / nnx.jit", "ref args / raw"]
    rows = []
    for depth in args.depths:
        us = [results[(depth, n)] for n in names]
        r = dict(zip(names, us))
        rows.append([str(depth)] + [t.fmt_us(v) for v in us] + [
            t.fmt_ratio(r["nnxlib ref"] / r["raw JAX"]),
            t.fmt_ratio(r["nnxlib ref"] / r["raw refs"]),
            t.fmt_ratio(r["nnxlib ref"] / r["nnx.jit"]),
            t.fmt_ratio(r["nnxlib ref args"] / r["raw JAX"])])
    t.print_table("train step, time per call (us)", header, rows)
    t.print_table("eager forward, time per call (us)",
                  ["depth", "default us", "ref us", "ref / default"],
                  [[str(d), t.fmt_us(forward[(d, "default")]), t.fmt_us(forward[(d, "ref")]),
                    t.fmt_ratio(forward[(d, "ref")] / forward[(d, "default")])]
                   for d in args.depths])
    checks = []
    for depth in args.depths:
        ref = results[(depth, "nnxlib ref")]
        checks.append((f"depth {depth} ref / raw refs", ref / results[(depth, "raw refs")],
                       1.10, True))
        checks.append((f"depth {depth} ref / raw JAX", ref / results[(depth, "raw JAX")],
                       1.10, True))
        checks.append((f"depth {depth} ref / nnx.jit", ref / results[(depth, "nnx.jit")],
                       1.0, True))
        checks.append((f"depth {depth} eager forward ref / default",
                       forward[(depth, "ref")] / forward[(depth, "default")], 1.05, True))
    missed = t.print_targets("targets", checks)
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
