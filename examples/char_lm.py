"""Train a small decoder-only transformer on characters of the Python standard library.

The text is the source of the standard library's top-level modules (the ``*.py`` files
next to ``os.py``, in sorted order), so it is on every machine and nothing is
downloaded. The model is token and position embeddings (``nnx.Embed``), a stack of
pre-norm blocks (``nnx.RMSNorm``, causal ``nnx.MultiHeadAttention``, an MLP of two
``nnx.Linear``) and a ``nnx.LayerNorm`` + ``nnx.Linear`` head. The blocks are created
once for all layers with ``nnx.vmap`` (every array gets a leading layer axis) and run
with ``nnx.scan`` over that axis, each step under ``nnx.remat`` so the backward pass
recomputes activations instead of storing them per layer. After training it samples
text one character at a time with the attention layers' key/value decode cache.

Run:  python examples/char_lm.py [--steps 600] [--layers 4] [--dim 64] ...
      (defaults sized for a small CPU: about 70 s of CPU time, 1-2 min on 2 cores)
      python examples/char_lm.py --help     (every flag)
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnxlib

# Characters outside printable ASCII (rare in the standard library) all become this.
UNKNOWN = "?"


def load_stdlib_text(max_chars: int) -> str:
    """The first ``max_chars`` characters of the standard library's top-level modules,
    read in sorted file-name order (deterministic for a given Python installation)."""
    pieces, total = [], 0
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        pieces.append(text)
        total += len(text)
        if total >= max_chars:
            break
    text = "".join(pieces)[:max_chars]
    return "".join(c if c == "\n" or 32 <= ord(c) < 127 else UNKNOWN for c in text)


class Vocabulary:
    """Character <-> id maps over the characters that occur in the training text."""

    def __init__(self, text: str):
        self.chars = sorted(set(text) | {UNKNOWN})
        self.ids = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = self.ids[UNKNOWN]
        return np.array([self.ids.get(c, unknown) for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def define_model(nnx: ModuleType) -> tuple[type, type]:
    """The model classes, written once against the flax.nnx API.

    ``nnx`` is ``nnxlib`` here; ``benchmarks/lm_step.py`` passes ``flax.nnx`` to time
    the very same code on flax.
    """

    class Block(nnx.Module):
        """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

        def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
            self.attn_norm = nnx.RMSNorm(dim, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
            self.mlp_norm = nnx.RMSNorm(dim, rngs=rngs)
            self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
            self.down = nnx.Linear(4 * dim, dim, rngs=rngs)

        def __call__(self, x, mask, decode: bool):
            x = x + self.attn(self.attn_norm(x), mask=mask, decode=decode)
            return x + self.down(nnx.gelu(self.up(self.mlp_norm(x))))

    class CharLM(nnx.Module):
        """Embeddings, ``layers`` stacked blocks scanned over, and a vocabulary head."""

        def __init__(self, vocab_size: int, *, dim: int, heads: int, layers: int,
                     context: int, rngs: nnx.Rngs):
            self.context = context
            self.tokens = nnx.Embed(vocab_size, dim, rngs=rngs)
            self.positions = nnx.Embed(context, dim, rngs=rngs)

            # One Block per layer, built in one call: each gets its own keys, and
            # every array of the result has a leading axis of size `layers`.
            @nnx.split_rngs(splits=layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make_blocks(rngs):
                return Block(dim, heads, rngs)

            self.blocks = make_blocks(rngs)
            self.norm = nnx.LayerNorm(dim, rngs=rngs)
            self.head = nnx.Linear(dim, vocab_size, rngs=rngs)

        def __call__(self, tokens, positions=None, *, decode: bool = False):
            """Next-character logits for ``tokens`` [batch, length]. With ``decode``,
            length is 1 and ``positions`` [batch, 1] says where each token is."""
            if positions is None:
                positions = jnp.arange(tokens.shape[-1])
            x = self.tokens(tokens) + self.positions(positions)
            mask = None if decode else nnx.make_causal_mask(tokens)

            # Recompute each block's activations on the backward pass (memory stays
            # one layer deep), and loop over the layer axis (one block in the program).
            @nnx.remat
            def run_block(block, x):
                return block(x, mask, decode)

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def run_stack(x, block):
                return run_block(block, x)

            x = run_stack(x, self.blocks)
            return self.head(self.norm(x))

        def init_cache(self, batch_size: int) -> None:
            """Create every layer's decode cache for ``batch_size`` sequences of up to
            ``context`` characters."""
            features = self.tokens.features

            @nnx.vmap(in_axes=0, out_axes=0)
            def init(block):
                block.attn.init_cache((batch_size, self.context, features))

            init(self.blocks)

    return Block, CharLM


Block, CharLM = define_model(nnxlib)


def next_token_loss(model, tokens: jax.Array) -> jax.Array:
    """Mean cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1]."""
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@nnxlib.jit
def train_step(model, optimizer, tokens: jax.Array) -> jax.Array:
    loss, grads = nnxlib.value_and_grad(next_token_loss)(model, tokens)
    optimizer.update(model, grads)
    return loss


@nnxlib.jit
def eval_loss(model, tokens: jax.Array) -> jax.Array:
    return next_token_loss(model, tokens)


@nnxlib.jit
def decode_step(model, token: jax.Array, position: jax.Array, key: jax.Array,
                temperature: float) -> tuple[jax.Array, jax.Array]:
    """Feed one character per sequence; returns (sampled next character, logits)."""
    logits = model(token[:, None], position[:, None], decode=True)[:, 0]
    sampled = jax.random.categorical(key, logits / temperature)
    return sampled, logits


def sample(model, vocab: Vocabulary, prompt: str, length: int, *, temperature: float,
           seed: int) -> str:
    """Continue ``prompt`` by ``length`` characters (prompt + length <= context).

    The prompt is fed one character at a time through the cache like generated ones
    (its sampled continuations are ignored), so the loop is one compiled step.
    """
    ids = list(vocab.encode(prompt))
    length = min(length, model.context - len(ids))
    model.init_cache(batch_size=1)
    key = jax.random.key(seed)
    out: list[int] = []
    token = ids[0]
    for position in range(len(ids) + length - 1):
        key, step_key = jax.random.split(key)
        nxt, _ = decode_step(model, jnp.array([token]), jnp.array([position]), step_key,
                             temperature)
        if position + 1 < len(ids):
            token = ids[position + 1]
        else:
            token = int(nxt[0])
            out.append(token)
    return prompt + vocab.decode(out)


def batches(data: np.ndarray, batch: int, length: int, rng: np.random.Generator):
    """Endless random windows of ``length`` characters."""
    while True:
        starts = rng.integers(0, len(data) - length, size=batch)
        yield np.stack([data[s:s + length] for s in starts])


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags, each with its help text and default."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--context", type=int, default=64,
                        help="characters per training sequence (and longest sample)")
    parser.add_argument("--dim", type=int, default=64, help="model width")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    parser.add_argument("--max-chars", type=int, default=2_000_000,
                        help="characters of standard-library source to read")
    parser.add_argument("--log-every", type=int, default=100,
                        help="print the training loss every this many steps")
    parser.add_argument("--prompt", default="def ", help="text the sample starts with")
    parser.add_argument("--sample-chars", type=int, default=60,
                        help="characters to generate (capped by --context)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="sampling temperature (lower: more predictable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of init, data and sampling")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Train, report the losses, sample; returns them for tests."""
    args = build_parser().parse_args(argv)

    start = time.perf_counter()
    text = load_stdlib_text(args.max_chars)
    vocab = Vocabulary(text)
    data = vocab.encode(text)
    split = int(0.95 * len(data))
    train_data, held_out = data[:split], data[split:]
    print(f"{len(text):,} characters of standard-library source, {len(vocab)} symbols")

    model = CharLM(len(vocab), dim=args.dim, heads=args.heads, layers=args.layers,
                   context=args.context, rngs=nnxlib.Rngs(args.seed))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, min(100, max(1, args.steps // 10)), max(args.steps, 1))
    optimizer = nnxlib.Optimizer(model, optax.adamw(schedule, weight_decay=0.01),
                                 wrt=nnxlib.Param)
    params = sum(x.size for x in jax.tree.leaves(nnxlib.state(model, nnxlib.Param)))
    print(f"model: {args.layers} layers x {args.dim} wide, {params:,} parameters")

    rng = np.random.default_rng(args.seed)
    train_batches = batches(train_data, args.batch, args.context + 1, rng)
    loss = float("nan")
    for step in range(1, args.steps + 1):
        loss = float(train_step(model, optimizer, jnp.asarray(next(train_batches))))
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step:5d}  train loss {loss:.3f}")
    eval_batches = batches(held_out, args.batch, args.context + 1, np.random.default_rng(1))
    held_out_loss = float(np.mean([eval_loss(model, jnp.asarray(next(eval_batches)))
                                   for _ in range(4)]))
    print(f"final train loss {loss:.3f}, held-out loss {held_out_loss:.3f} "
          f"({held_out_loss / np.log(2):.2f} bits per character)")

    text_out = sample(model, vocab, args.prompt, args.sample_chars,
                      temperature=args.temperature, seed=args.seed)
    print("sample:\n" + text_out)
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return {"loss": loss, "held_out_loss": held_out_loss, "sample": text_out}


if __name__ == "__main__":
    main()
