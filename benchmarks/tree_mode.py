"""Tree mode (``graph=False``) against graph mode: nnxlib and flax.nnx side by side.

The train step of ``train_step_overhead.py`` (an MLP of Linear -> BatchNorm -> relu
blocks, sgd, BatchNorm statistics updated in place) written once against the flax.nnx
API and run with ``nnx.jit(graph=...)`` / ``nnx.value_and_grad(graph=...)`` in both
modes, next to the same step in raw JAX. Before timing, every column is checked to
compute the same losses and weights.

flax.nnx added tree mode because its graph mode re-walks the module graph on every
call; nnxlib runs both modes on one cached path, so its tree mode should cost what its
graph mode costs (target: within 10%), and be at least as fast as flax.nnx's tree mode.

    python benchmarks/tree_mode.py [--quick] [--depths 4,16]
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

try:
    from benchmarks import _timing as t
    from benchmarks.train_step_overhead import (
        NNX_NAMES,
        NnxImpl,
        RawImpl,
        init_weights,
        make_batch,
    )
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t
    from train_step_overhead import NNX_NAMES, NnxImpl, RawImpl, init_weights, make_batch

CHECK_STEPS = 3


def build(ours, flax_nnx, depth: int) -> dict:
    weights = init_weights(depth)
    return {
        "raw JAX": RawImpl(depth, weights),
        "nnxlib graph": NnxImpl(ours, depth, weights, graph=True),
        "nnxlib tree": NnxImpl(ours, depth, weights, graph=False),
        "flax.nnx graph": NnxImpl(flax_nnx, depth, weights, graph=True),
        "flax.nnx tree": NnxImpl(flax_nnx, depth, weights, graph=False),
    }


def check_numerics(impls: dict) -> None:
    """All columns give the same losses and weights for a few steps."""
    x, y = make_batch()
    losses = {name: [float(impl.train(x, y)) for _ in range(CHECK_STEPS)]
              for name, impl in impls.items()}
    reference = losses["raw JAX"]
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=1e-5, err_msg=name)
        for key, array in impl_snapshot(impls[name]).items():
            np.testing.assert_allclose(array, impl_snapshot(impls["raw JAX"])[key],
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")


def impl_snapshot(impl) -> dict:
    return impl.snapshot()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    args = parser.parse_args(argv)
    config = t.TimingConfig.for_args(args.quick)
    ours = t.load_nnx(args.impl, NNX_NAMES + ("set_graph_mode",))
    from flax import nnx as flax_nnx

    t.print_environment(config, args.stat, args.impl)
    check_numerics(build(ours, flax_nnx, 4))
    print("numerics check passed: every column gives raw JAX's losses and weights")
    names = list(build(ours, flax_nnx, 1))
    results: dict[tuple[int, str, str], float] = {}
    for depth in args.depths:
        impls = build(ours, flax_nnx, depth)
        x, y = make_batch()
        for impl in impls.values():
            impl.train(x, y)  # compile
        steps = {
            "train": lambda impl: jax.block_until_ready(impl.train(x, y)),
            "empty": lambda impl: jax.block_until_ready(impl.empty()),
        }
        for kind, step in steps.items():
            timings = t.time_interleaved(
                {n: (lambda impl=impl, step=step: step(impl)) for n, impl in impls.items()},
                config)
            for name, timing in timings.items():
                results[(depth, kind, name)] = timing.get(args.stat)

    header = (["depth / step"] + [f"{n} us" for n in names]
              + ["nnxlib tree / graph", "nnxlib tree / raw", "flax tree / nnxlib tree"])
    rows, checks = [], []
    for depth in args.depths:
        for kind in ("train", "empty"):
            us = {n: results[(depth, kind, n)] for n in names}
            tree_vs_graph = us["nnxlib tree"] / us["nnxlib graph"]
            flax_vs_ours = us["flax.nnx tree"] / us["nnxlib tree"]
            rows.append([f"{depth} {kind}"] + [t.fmt_us(us[n]) for n in names]
                        + [t.fmt_ratio(tree_vs_graph),
                           t.fmt_ratio(us["nnxlib tree"] / us["raw JAX"]),
                           t.fmt_ratio(flax_vs_ours)])
            checks.append((f"depth {depth} {kind}: nnxlib tree / nnxlib graph",
                           tree_vs_graph, 1.10, True))
            checks.append((f"depth {depth} {kind}: flax.nnx tree / nnxlib tree",
                           flax_vs_ours, 1.0, False))
    t.print_table("time per call (us) and ratios", header, rows)
    missed = t.print_targets("targets", checks)
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
