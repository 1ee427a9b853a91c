"""Train step of the character LM (examples/char_lm.py): nnxlib vs flax.nnx vs raw JAX.

The model is the example's own code (``define_model``): token and position ``Embed``,
``layers`` pre-norm blocks (``RMSNorm``, causal ``MultiHeadAttention``, a ``Linear``
MLP) created with ``vmap`` and run with ``scan`` over layers under ``remat``, then a
``LayerNorm`` + ``Linear`` head. One jitted step: next-character cross-entropy,
``value_and_grad``, ``optax.adamw`` update.

* nnxlib: ``define_model(nnxlib)`` and ``nnxlib.jit`` / ``value_and_grad`` / ``Optimizer``;
* flax.nnx: the same code with ``flax.nnx`` passed instead;
* raw JAX: the same model written as pure functions on a dict of stacked arrays,
  ``jax.lax.scan`` over layers with ``jax.checkpoint``, one ``jax.jit`` step.

All three start from the same weights; the losses of the first steps are checked
against raw JAX before timing. Times are per call, blocking on the result.

    python benchmarks/lm_step.py [--quick] [--layers 4] [--dim 64] [--impl flax]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
    from benchmarks import _timing as t
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t

LR = 1e-3
CHECK_STEPS = 3
NNX_NAMES = ("Embed", "MultiHeadAttention", "RMSNorm", "LayerNorm", "Linear", "vmap", "scan",
             "remat", "jit", "value_and_grad", "Optimizer")


def load_example():
    """examples/char_lm.py as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location("char_lm", t.REPO_ROOT / "examples" /
                                                  "char_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_of_logits(logits, tokens):
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


# -------------------------------------------------------------- nnx (both columns)


class NnxImpl:
    """The example's model and a train step written against the flax.nnx API."""

    def __init__(self, nnx, example, config: dict, weights: dict):
        _, CharLM = example.define_model(nnx)
        model = CharLM(rngs=nnx.Rngs(0), **config)
        # Load the shared weights (pure nested dicts of arrays) into the model.
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, weights))
        nnx.update(model, state)
        self.model = model
        self.optimizer = nnx.Optimizer(model, optax.adamw(LR), wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer, tokens):
            def loss_fn(model):
                return loss_of_logits(model(tokens[:, :-1]), tokens)

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        self._train_step = train_step

    def train(self, tokens):
        return self._train_step(self.model, self.optimizer, tokens)


# ------------------------------------------------------------------------- raw JAX


EPS = 1e-6  # RMSNorm / LayerNorm epsilon (flax default)


def rms_norm(x, scale):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + EPS) * scale


def layer_norm(x, scale, bias):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.maximum(jnp.mean(x * x, -1, keepdims=True) - mean * mean, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + EPS) * scale + bias


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def attention(p, x, mask):
    q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = jnp.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits)
    y = jnp.einsum("bhqs,bshk->bqhk", weights, v)
    return jnp.einsum("bthk,hkd->btd", y, p["out"]["kernel"]) + p["out"]["bias"]


def block(p, x, mask):
    x = x + attention(p["attn"], rms_norm(x, p["attn_norm"]["scale"]), mask)
    h = jax.nn.gelu(dense(p["up"], rms_norm(x, p["mlp_norm"]["scale"])))
    return x + dense(p["down"], h)


def forward(params, tokens):
    length = tokens.shape[-1]
    x = params["tokens"]["embedding"][tokens] + params["positions"]["embedding"][:length]
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]

    def layer(x, p):
        return jax.checkpoint(block)(p, x, mask), None

    x, _ = jax.lax.scan(layer, x, params["blocks"])
    x = layer_norm(x, params["norm"]["scale"], params["norm"]["bias"])
    return dense(params["head"], x)


class RawImpl:
    """Pure pytrees (the weights' nested dict) and one ``jax.jit`` step."""

    def __init__(self, weights: dict):
        self.params = jax.tree.map(jnp.asarray, weights)
        tx = optax.adamw(LR)
        self.opt_state = tx.init(self.params)

        @jax.jit
        def train_step(params, opt_state, tokens):
            def loss_fn(params):
                return loss_of_logits(forward(params, tokens[:, :-1]), tokens)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return loss, optax.apply_updates(params, updates), opt_state

        self._train_step = train_step

    def train(self, tokens):
        loss, self.params, self.opt_state = self._train_step(self.params, self.opt_state,
                                                             tokens)
        return loss


# ---------------------------------------------------------------------------- main


def initial_weights(ours, example, config: dict) -> dict:
    """The nnxlib model's initial parameters as a nested dict of numpy arrays."""
    _, CharLM = example.define_model(ours)
    model = CharLM(rngs=ours.Rngs(0), **config)
    return jax.tree.map(np.asarray, ours.to_pure_dict(ours.state(model, ours.Param)))


def make_tokens(config: dict, batch: int, seed: int = 1) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, config["vocab_size"], (batch, config["context"] + 1)),
                       jnp.int32)


def check_numerics(impls: dict, tokens) -> None:
    losses = {name: np.array([impl.train(tokens) for _ in range(CHECK_STEPS)])
              for name, impl in impls.items()}
    ref = losses["raw JAX"]
    report = []
    for name, got in losses.items():
        if name == "raw JAX":
            continue
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"numerics check: {name} losses {got} differ from raw "
                                 f"JAX's {ref}")
        report.append(f"{name} {np.max(np.abs(got - ref) / np.abs(ref)):.1e}")
    print(f"numerics check passed: {CHECK_STEPS} steps, losses agree with raw JAX "
          f"(max rel. diff: {', '.join(report)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    t.add_common_args(parser)
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--dim", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--context", type=int, default=64,
                        help="characters per sequence (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--vocab", type=int, default=96, help="vocabulary size (default 96)")
    args = parser.parse_args(argv)

    config = t.TimingConfig.for_args(args.quick)
    ours = t.load_nnx(args.impl, NNX_NAMES)
    from flax import nnx as flax_nnx

    example = load_example()
    model_config = dict(vocab_size=args.vocab, dim=args.dim, heads=args.heads,
                        layers=args.layers, context=args.context)
    label = t.impl_label(args.impl)
    t.print_environment(config, args.stat, args.impl)
    print(f"char LM train step: {args.layers} layers x {args.dim} wide, {args.heads} heads, "
          f"batch {args.batch} x {args.context} characters, scan over layers + remat, "
          f"optax.adamw; every call blocks on its result")

    weights = initial_weights(ours, example, model_config)
    tokens = make_tokens(model_config, args.batch)

    impls = {"raw JAX": RawImpl(weights),
             label: NnxImpl(ours, example, model_config, weights),
             "flax.nnx": NnxImpl(flax_nnx, example, model_config, weights)}
    check_numerics(impls, tokens)  # also compiles every step before timing
    timings = t.time_interleaved(
        {name: (lambda impl=impl: jax.block_until_ready(impl.train(tokens)))
         for name, impl in impls.items()},
        config,
    )
    names = list(impls)
    us = [timings[name].get(args.stat) for name in names]
    t.print_table(
        "time per train step (us) and ratio to raw JAX",
        ["step"] + [f"{n} us" for n in names] + [f"{n} / raw" for n in names[1:]],
        [["train"] + [t.fmt_us(v) for v in us] + [t.fmt_ratio(v / us[0]) for v in us[1:]]],
    )
    missed = t.print_targets("targets", [(f"{label} train / raw JAX", us[1] / us[0], 1.05,
                                          True)])
    print(f"\n{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
