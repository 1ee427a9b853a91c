"""Eager graph-operation overhead: nnxlib vs flax.nnx vs raw pytree flattening.

For models of N blocks (each block holds two ``Param``s, w (32, 32) and b (32,),
and two ``BatchStat``s, mean and var (32,), the model holds the blocks in a
``List``), times one call of

    split(model), merge(graphdef, state), merge(*split(model)),
    update(model, state), state(model)

(and, for information, ``tree_flatten(split(model)[1])``: a state whose
leaves are Variables is only reduced to arrays when JAX flattens it)

for nnxlib and flax.nnx, and ``jax.tree_util.tree_flatten`` and flatten +
unflatten of the equivalent nested dict of arrays ("raw"), then prints the
target ratios with PASS/MISS.

    python benchmarks/graph_overhead.py [--quick] [--impl flax] [--plain-list]
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

try:
    from benchmarks import _timing as t
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t

WIDTH = 32
OPS = ("split", "merge", "split+merge", "update", "state", "split+tree_flatten")
NNX_NAMES = ("Module", "Param", "BatchStat", "List", "split", "merge", "update", "state")


def build_model(nnx, depth: int, *, plain_list: bool):
    """A model of ``depth`` blocks written against the flax.nnx API ``nnx``."""

    class Block(nnx.Module):
        def __init__(self, rng: np.random.Generator):
            self.w = nnx.Param(jax.numpy.asarray(rng.normal(size=(WIDTH, WIDTH)), np.float32))
            self.b = nnx.Param(jax.numpy.zeros((WIDTH,), np.float32))
            self.mean = nnx.BatchStat(jax.numpy.zeros((WIDTH,), np.float32))
            self.var = nnx.BatchStat(jax.numpy.ones((WIDTH,), np.float32))

    class Model(nnx.Module):
        def __init__(self, depth: int):
            rng = np.random.default_rng(0)
            blocks = [Block(rng) for _ in range(depth)]
            self.blocks = blocks if plain_list else nnx.List(blocks)

    return Model(depth)


def build_raw(depth: int) -> dict:
    """The nested dict of arrays with the same leaves as the model's state."""
    rng = np.random.default_rng(0)
    blocks = {}
    for i in range(depth):
        blocks[i] = {
            "b": jax.numpy.zeros((WIDTH,), np.float32),
            "mean": jax.numpy.zeros((WIDTH,), np.float32),
            "var": jax.numpy.ones((WIDTH,), np.float32),
            "w": jax.numpy.asarray(rng.normal(size=(WIDTH, WIDTH)), np.float32),
        }
    return {"blocks": blocks}


def graph_ops(nnx, model) -> dict:
    """Zero-argument callables, one per graph operation, on ``model``."""
    graphdef, state = nnx.split(model)
    n_leaves = len(jax.tree_util.tree_leaves(state))
    expected = 4 * len(model.blocks)
    if n_leaves != expected:
        raise AssertionError(f"split(model) gave {n_leaves} leaves, expected {expected}")
    merged = nnx.merge(graphdef, state)
    if len(jax.tree_util.tree_leaves(nnx.state(merged))) != expected:
        raise AssertionError("merge(*split(model)) lost variables")
    return {
        "split": lambda: nnx.split(model),
        "merge": lambda: nnx.merge(graphdef, state),
        "split+merge": lambda: nnx.merge(*nnx.split(model)),
        "update": lambda: nnx.update(model, state),
        "state": lambda: nnx.state(model),
        # Informational: split, then flatten the state to arrays as jax would.
        "split+tree_flatten": lambda: jax.tree_util.tree_flatten(nnx.split(model)[1]),
    }


def raw_ops(tree: dict) -> dict:
    flatten = jax.tree_util.tree_flatten
    unflatten = jax.tree_util.tree_unflatten

    def flatten_unflatten():
        leaves, treedef = flatten(tree)
        return unflatten(treedef, leaves)

    return {"tree_flatten": lambda: flatten(tree), "flatten+unflatten": flatten_unflatten}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    parser.add_argument(
        "--plain-list",
        action="store_true",
        help="hold the blocks in a plain Python list in the nnxlib model (nnxlib only)",
    )
    args = parser.parse_args(argv)
    if args.plain_list and args.impl != "nnxlib":
        parser.error("--plain-list needs --impl nnxlib (flax.nnx rejects plain lists of modules)")

    config = t.TimingConfig.for_args(args.quick)
    ours = t.load_nnx(args.impl, NNX_NAMES)
    from flax import nnx as flax_nnx

    label = t.impl_label(args.impl)
    t.print_environment(config, args.stat, args.impl)
    print(
        f"blocks: Param w ({WIDTH},{WIDTH}), Param b, BatchStat mean, var ({WIDTH},) each; "
        f"container: {'plain list' if args.plain_list else 'List'}"
    )

    missed = 0
    for depth in args.depths:
        fns: dict = {}
        for name, nnx in ((label, ours), ("flax.nnx", flax_nnx)):
            plain = args.plain_list and nnx is ours
            ops = graph_ops(nnx, build_model(nnx, depth, plain_list=plain))
            fns.update({(name, op): fn for op, fn in ops.items()})
        fns.update({("raw", op): fn for op, fn in raw_ops(build_raw(depth)).items()})
        # One interleaved group per operation, so that machine drift hits all columns.
        times: dict[tuple[str, str], float] = {}
        for op in {op for _, op in fns}:
            group = {key: fn for key, fn in fns.items() if key[1] == op}
            for key, timing in t.time_interleaved(group, config).items():
                times[key] = timing.get(args.stat)

        rows = []
        for op in OPS:
            ours_us, flax_us = times[(label, op)], times[("flax.nnx", op)]
            ratio = t.fmt_ratio(flax_us / ours_us)
            rows.append([op, t.fmt_us(ours_us), t.fmt_us(flax_us), ratio, ""])
        for op in ("tree_flatten", "flatten+unflatten"):
            rows.append([f"raw {op}", "-", "-", "-", t.fmt_us(times[("raw", op)])])
        t.print_table(
            f"depth {depth} ({4 * depth} variables), us per call",
            ["operation", label, "flax.nnx", "flax/" + label, "raw"],
            rows,
        )
        missed += t.print_targets(
            f"depth {depth} targets",
            [
                (
                    f"{label} split / raw tree_flatten",
                    times[(label, "split")] / times[("raw", "tree_flatten")],
                    2.0,
                    True,
                ),
                (
                    f"{label} split+merge / raw flatten+unflatten",
                    times[(label, "split+merge")] / times[("raw", "flatten+unflatten")],
                    5.0,
                    True,
                ),
                (
                    f"flax.nnx split+merge / {label} split+merge",
                    times[("flax.nnx", "split+merge")] / times[(label, "split+merge")],
                    20.0,
                    False,
                ),
            ],
        )
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
