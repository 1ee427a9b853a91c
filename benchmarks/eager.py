"""Eager (PyTorch-style) use of a transformer LM: nnxlib vs flax.nnx vs raw JAX.

Model: a pre-norm transformer language model of ``--layers`` (12) blocks,
``Embed(vocab, dim)``, then per block ``LayerNorm``, ``MultiHeadAttention(heads, dim)``,
``LayerNorm``, ``Linear(dim, 4 dim)``, ``Linear(4 dim, dim)``, then a final
``LayerNorm`` and ``Linear(dim, vocab)`` head. Rows, each timed per call and blocking
on every array it makes:

* build: ``LM(..., rngs=nnx.Rngs(0))``, i.e. drawing every parameter;
* eager forward: ``model(tokens)`` without ``jit`` (causal mask, GELU MLP);
* split+merge: ``nnx.merge(*nnx.split(model))``;
* optimizer: ``nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)``.

The nnxlib and flax.nnx columns run the same code (``define_model(nnx)``). The raw JAX
column is what a user writing plain JAX would do to get the *same* numbers:

* build: ``root = jax.random.key(0)`` and, for the ``i``-th parameter in the order the
  modules draw them (embedding; per block: norm scale, norm bias, query kernel, query
  bias, key kernel, key bias, value kernel, value bias, out kernel, out bias, norm
  scale, norm bias, up kernel, up bias, down kernel, down bias; final norm scale and
  bias; head kernel and bias), ``init(jax.random.fold_in(root, i), shape, float32)``,
  which is the key ``Rngs(0).params()`` returns on its ``i``-th call. ``init`` is the
  layers' default initializer from ``jax.nn.initializers``: ``variance_scaling(1.0,
  "fan_in", "normal", out_axis=0)`` for the embedding, ``lecun_normal()`` for kernels,
  ``zeros`` for biases and ``ones`` for norm scales (each still given its own key, as
  the layers do). Attention kernels are drawn at their 2D ``(fan_in, fan_out)`` shape and
  reshaped to ``(dim, heads, head_dim)`` / ``(heads, head_dim, dim)``, as flax does;
  the parameters are a nested dict of arrays;
* eager forward: the same math as pure functions on that dict, op by op, no ``jit``;
* split+merge: ``jax.tree_util.tree_unflatten(*reversed(tree_flatten(params)))``;
* optimizer: ``optax.adamw(1e-3).init(params)``.

Before timing, the script checks that nnxlib's ``Rngs(0)`` parameters are bit-identical
to flax.nnx's and to raw JAX's, and that the eager forward passes agree to float
tolerance (it raises otherwise). Target: nnxlib build / raw JAX build <= 1.5x; the other
rows are reported for information.

    python benchmarks/eager.py [--quick] [--layers 12] [--dim 64] [--impl flax]
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
    from benchmarks import _timing as t
    from benchmarks.lm_step import attention, dense
    from benchmarks.lm_step import layer_norm as raw_layer_norm
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t
    from lm_step import attention, dense
    from lm_step import layer_norm as raw_layer_norm

LR = 1e-3
BUILD_TARGET = 1.5
NNX_NAMES = ("Module", "Embed", "LayerNorm", "MultiHeadAttention", "Linear", "List", "Rngs",
             "Optimizer", "Param", "split", "merge", "state", "to_pure_dict")


# -------------------------------------------------------------- nnx (both columns)


def define_model(nnx):
    """The LM's classes written against the flax.nnx API, for the module ``nnx``."""

    class Block(nnx.Module):
        def __init__(self, dim: int, heads: int, *, rngs):
            self.attn_norm = nnx.LayerNorm(dim, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
            self.mlp_norm = nnx.LayerNorm(dim, rngs=rngs)
            self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
            self.down = nnx.Linear(4 * dim, dim, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.attn_norm(x), mask=mask)
            return x + self.down(jax.nn.gelu(self.up(self.mlp_norm(x))))

    class LM(nnx.Module):
        def __init__(self, vocab: int, dim: int, heads: int, layers: int, *, rngs):
            self.embed = nnx.Embed(vocab, dim, rngs=rngs)
            self.blocks = nnx.List([Block(dim, heads, rngs=rngs) for _ in range(layers)])
            self.norm = nnx.LayerNorm(dim, rngs=rngs)
            self.head = nnx.Linear(dim, vocab, rngs=rngs)

        def __call__(self, tokens):
            x = self.embed(tokens)
            length = tokens.shape[-1]
            mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
            for block in self.blocks:
                x = block(x, mask)
            return self.head(self.norm(x))

    return LM


class NnxImpl:
    """One nnx-API package (nnxlib or flax.nnx): the operations the table times."""

    def __init__(self, nnx, config: dict):
        self.nnx = nnx
        self.config = config
        self.LM = define_model(nnx)
        self.model = self.build()

    def build(self):
        return self.LM(**self.config, rngs=self.nnx.Rngs(0))

    def params(self) -> dict:
        """The model's parameters as a nested dict of arrays (raw JAX's layout)."""
        pure = self.nnx.to_pure_dict(self.nnx.state(self.model, self.nnx.Param))
        pure["blocks"] = [pure["blocks"][i] for i in range(len(pure["blocks"]))]
        return pure

    def ops(self, tokens) -> dict:
        nnx, model = self.nnx, self.model
        return {
            "build": lambda: jax.block_until_ready(self.build()),
            "eager forward": lambda: jax.block_until_ready(model(tokens)),
            "split+merge": lambda: nnx.merge(*nnx.split(model)),
            "optimizer": lambda: jax.block_until_ready(
                nnx.Optimizer(model, optax.adamw(LR), wrt=nnx.Param)),
        }


# ------------------------------------------------------------------------- raw JAX


embed_init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
kernel_init = jax.nn.initializers.lecun_normal()
zeros, ones = jax.nn.initializers.zeros, jax.nn.initializers.ones


def raw_init(vocab: int, dim: int, heads: int, layers: int) -> dict:
    """Every parameter drawn with the key ``Rngs(0).params()`` gives it (see top)."""
    root = jax.random.key(0)
    count = iter(range(10**9))

    def key():
        return jax.random.fold_in(root, next(count))

    def norm():
        return {"scale": ones(key(), (dim,), jnp.float32),
                "bias": zeros(key(), (dim,), jnp.float32)}

    def dense(n_in, n_out, kernel_shape=None, bias_shape=None):
        kernel = kernel_init(key(), (n_in, n_out), jnp.float32)
        if kernel_shape is not None:
            kernel = kernel.reshape(kernel_shape)
        return {"kernel": kernel, "bias": zeros(key(), bias_shape or (n_out,), jnp.float32)}

    head_dim = dim // heads
    params = {"embed": {"embedding": embed_init(key(), (vocab, dim), jnp.float32)}}
    blocks = []
    for _ in range(layers):
        block = {"attn_norm": norm()}
        block["attn"] = {name: dense(dim, dim, (dim, heads, head_dim), (heads, head_dim))
                         for name in ("query", "key", "value")}
        block["attn"]["out"] = dense(dim, dim, (heads, head_dim, dim))
        block["mlp_norm"] = norm()
        block["up"] = dense(dim, 4 * dim)
        block["down"] = dense(4 * dim, dim)
        blocks.append(block)
    params["blocks"] = blocks
    params["norm"] = norm()
    params["head"] = dense(dim, vocab)
    return params


def layer_norm(p, x):
    return raw_layer_norm(x, p["scale"], p["bias"])


def raw_forward(params, tokens):
    x = params["embed"]["embedding"][tokens]
    length = tokens.shape[-1]
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
    for p in params["blocks"]:
        x = x + attention(p["attn"], layer_norm(p["attn_norm"], x), mask)
        x = x + dense(p["down"], jax.nn.gelu(dense(p["up"], layer_norm(p["mlp_norm"], x))))
    return dense(params["head"], layer_norm(params["norm"], x))


class RawImpl:
    def __init__(self, config: dict):
        self.config = config
        self.params = raw_init(**config)

    def ops(self, tokens) -> dict:
        params, tx = self.params, optax.adamw(LR)
        flatten, unflatten = jax.tree_util.tree_flatten, jax.tree_util.tree_unflatten
        return {
            "build": lambda: jax.block_until_ready(raw_init(**self.config)),
            "eager forward": lambda: jax.block_until_ready(raw_forward(params, tokens)),
            "split+merge": lambda: unflatten(*reversed(flatten(params))),
            "optimizer": lambda: jax.block_until_ready(tx.init(params)),
        }


# ---------------------------------------------------------------------------- main


def check_numerics(impls: dict, tokens) -> None:
    """Parameters bit for bit (nnxlib vs flax.nnx vs raw JAX), forward to tolerance."""
    raw = impls["raw JAX"]
    ref = jax.tree_util.tree_leaves_with_path(raw.params)
    ref_out = np.asarray(raw_forward(raw.params, tokens))
    for name, impl in impls.items():
        if impl is raw:
            continue
        got = jax.tree_util.tree_leaves_with_path(impl.params())
        if [p for p, _ in got] != [p for p, _ in ref]:
            raise AssertionError(f"numerics check: {name}'s parameter paths differ from "
                                 "raw JAX's")
        for (path, a), (_, b) in zip(got, ref, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                raise AssertionError(
                    f"numerics check: {name} parameter {jax.tree_util.keystr(path)} is not "
                    f"bit-identical to raw JAX's ({a.dtype}{a.shape} vs {b.dtype}{b.shape})")
        out = np.asarray(impl.model(tokens))
        if not np.allclose(out, ref_out, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"numerics check: {name}'s eager forward differs from raw "
                                 f"JAX's by {np.max(np.abs(out - ref_out)):.2e}")
    n = len(ref)
    print(f"numerics check passed: all {n} parameters of Rngs(0) bit-identical across "
          f"{', '.join(impls)}; eager forward agrees with raw JAX")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks (default 12)")
    parser.add_argument("--dim", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--vocab", type=int, default=256, help="vocabulary size (default 256)")
    parser.add_argument("--batch", type=int, default=2, help="forward batch (default 2)")
    parser.add_argument("--length", type=int, default=32, help="forward length (default 32)")
    parser.add_argument("--rows", default="build,eager forward,split+merge,optimizer",
                        help="comma-separated rows to time (default: all)")
    args = parser.parse_args(argv)

    config = t.TimingConfig.for_args(args.quick)
    ours = t.load_nnx(args.impl, NNX_NAMES)
    from flax import nnx as flax_nnx

    model_config = dict(vocab=args.vocab, dim=args.dim, heads=args.heads, layers=args.layers)
    label = t.impl_label(args.impl)
    t.print_environment(config, args.stat, args.impl)
    print(f"{label}: {ours.__name__} from {ours.__file__}")
    print(f"transformer LM: {args.layers} blocks x {args.dim} wide, {args.heads} heads, "
          f"vocab {args.vocab}; forward on {args.batch} x {args.length} tokens, no jit")

    tokens = jnp.asarray(np.random.default_rng(1).integers(
        0, args.vocab, (args.batch, args.length)), jnp.int32)
    impls = {"raw JAX": RawImpl(model_config), label: NnxImpl(ours, model_config),
             "flax.nnx": NnxImpl(flax_nnx, model_config)}
    check_numerics(impls, tokens)

    names = list(impls)
    rows, build = [], None
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        timings = t.time_interleaved({name: impl.ops(tokens)[row]
                                      for name, impl in impls.items()}, config)
        us = [timings[name].get(args.stat) for name in names]
        rows.append([row] + [t.fmt_us(v) for v in us]
                    + [t.fmt_ratio(v / us[0]) for v in us[1:]])
        if row == "build":
            build = us
    t.print_table(
        "time per call (us) and ratio to raw JAX",
        ["row"] + [f"{n} us" for n in names] + [f"{n} / raw" for n in names[1:]], rows)
    missed = 0
    if build is not None:
        missed = t.print_targets("targets", [(f"{label} build / raw JAX", build[1] / build[0],
                                              BUILD_TARGET, True)])
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
