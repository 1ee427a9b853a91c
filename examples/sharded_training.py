"""Train a tiny transformer on a 2x4 (data, model) mesh with logical axis rules.

The model names its axes logically ('embed', 'mlp', 'heads', 'vocab'); one rule table
maps them to the mesh. The batch is split over 'data', weights over 'model'. The script
checks what it claims:

1. the losses of the sharded run match a single-device run of the same model (float
   tolerance: the reductions are split differently);
2. a checkpoint saved mid-run and restored onto an abstract, sharded model resumes with
   bit-identical losses.

Multi-host: run one copy per process with ``--distributed HOST:PORT,NPROC,ID`` (each
process brings its local devices; the mesh spans all of them). Only the sharded
training runs then, and every process prints the same losses.

Run:  python examples/sharded_training.py [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

if __name__ == "__main__" and "--distributed" not in sys.argv:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import nnxlib as nnx  # noqa: E402

# Logical axis -> mesh axis. The first rule that fits wins (flax.linen precedence).
RULES = [("batch", "data"), ("vocab", "model"), ("heads", "model"), ("mlp", "model"),
         ("embed", None), ("length", None)]
VOCAB, DIM, HEADS, MLP, LENGTH, BATCH = 32, 32, 4, 64, 8, 16


def dense(din, dout, names, rngs):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), names)
    return nnx.Linear(din, dout, kernel_init=init, rngs=rngs)


class Attention(nnx.Module):
    """Causal multi-head self-attention written out by hand."""

    def __init__(self, rngs):
        self.qkv = dense(DIM, 3 * DIM, ("embed", "heads"), rngs)
        self.out = dense(DIM, DIM, ("heads", "embed"), rngs)

    def __call__(self, x):
        b, t, _ = x.shape
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        q, k, v = (a.reshape(b, t, HEADS, DIM // HEADS) for a in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(DIM // HEADS)
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e9)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return self.out(mixed.reshape(b, t, DIM))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm1 = nnx.LayerNorm(DIM, rngs=rngs)
        self.attn = Attention(rngs)
        self.norm2 = nnx.LayerNorm(DIM, rngs=rngs)
        self.up = dense(DIM, MLP, ("embed", "mlp"), rngs)
        self.down = dense(MLP, DIM, ("mlp", "embed"), rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.down(jax.nn.gelu(self.up(self.norm2(x))))
        return nnx.with_sharding_constraint(x, ("batch", "length", "embed"))


class Transformer(nnx.Module):
    def __init__(self, rngs, layers=2):
        table = nnx.with_partitioning(nnx.initializers.normal(0.1), ("vocab", "embed"))
        self.embed = nnx.Param(table(rngs.params(), (VOCAB, DIM)))
        self.blocks = nnx.List([Block(rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(DIM, rngs=rngs)

    def __call__(self, tokens):
        x = jnp.take(self.embed[...], tokens, axis=0)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed[...].T


def batches(steps, seed=0):
    """Sequences following t -> (3t + 1) mod VOCAB from random starts: learnable."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        start = rng.integers(0, VOCAB, size=(BATCH, 1))
        seq = [start]
        for _ in range(LENGTH):
            seq.append((seq[-1] * 3 + 1) % VOCAB)
        seq = np.concatenate(seq, axis=1).astype(np.int32)
        yield seq[:, :-1], seq[:, 1:]


@nnx.jit
def train_step(model, optimizer, tokens, targets):
    def loss_fn(model):
        logits = model(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


LAYERS = [2]  # set by --layers


def make_model_and_optimizer():
    # Born sharded under a mesh: each variable is placed as it is created, in the trace.
    model = nnx.jit(lambda: Transformer(nnx.Rngs(0), layers=LAYERS[0]))()
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    return model, optimizer


def put_batch(array, mesh):
    """The global batch as one array split over 'data' (works across processes)."""
    if mesh is None:
        return jnp.asarray(array)
    sharding = NamedSharding(mesh, P("data", None))
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def train(mesh, steps, start=0, model=None, optimizer=None, save_at=None, directory=None):
    """Losses of ``steps`` steps on ``mesh`` (None: one device, no sharding)."""
    losses = []
    context = jax.set_mesh(mesh) if mesh is not None else _nothing()
    with context, nnx.logical_axis_rules(RULES):
        if model is None:
            model, optimizer = make_model_and_optimizer()
        for step, (tokens, targets) in enumerate(batches(steps)):
            if step < start:
                continue
            if step == save_at:
                nnx.training.save_checkpoint(os.path.join(directory, "model"), model)
                nnx.training.save_checkpoint(os.path.join(directory, "opt"),
                                             nnx.state(optimizer))
            loss = train_step(model, optimizer, put_batch(tokens, mesh),
                              put_batch(targets, mesh))
            losses.append(float(loss))
    return losses, model


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def resume(mesh, directory, steps, start):
    """Rebuild model and optimizer abstractly on ``mesh``, restore, train on."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
        model, optimizer = nnx.eval_shape(make_model_and_optimizer)
        graphdef, _ = nnx.split(model)
        shardings = nnx.get_named_sharding(nnx.state(model), mesh)
        nnx.training.restore_checkpoint(os.path.join(directory, "model"), model,
                                        shardings=shardings)
        opt_shardings = nnx.get_named_sharding(nnx.state(optimizer), mesh)
        nnx.training.restore_checkpoint(os.path.join(directory, "opt"), optimizer,
                                        shardings=opt_shardings)
    return train(mesh, steps, start=start, model=model, optimizer=optimizer)[0]


def make_mesh(data, model):
    """Auto axes: XLA propagates the weights' and batch's shardings through the ops
    (Explicit axes would ask for an out_sharding on the embedding gather, for example)."""
    return jax.make_mesh((data, model), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--distributed", default=None,
                        help="HOST:PORT,NUM_PROCESSES,PROCESS_ID (one copy per process)")
    args = parser.parse_args(argv)
    LAYERS[0] = args.layers

    if args.distributed:
        address, count, index = args.distributed.split(",")
        jax.distributed.initialize(address, int(count), int(index))
        mesh = make_mesh(2, jax.device_count() // 2)
        losses, _ = train(mesh, args.steps)
        print("losses", " ".join(repr(x) for x in losses), flush=True)
        jax.distributed.shutdown()
        return

    mesh = make_mesh(2, 4)
    losses, model = train(mesh, args.steps)
    kernel = model.blocks[0].up.kernel[...]
    print("mesh", dict(mesh.shape), "| up kernel", kernel.shape, "sharded",
          kernel.sharding.spec, "-> per device", kernel.addressable_shards[0].data.shape)
    print("losses", " ".join(repr(x) for x in losses))

    single, _ = train(None, args.steps)
    np.testing.assert_allclose(losses, single, rtol=2e-5, atol=2e-6)
    print("single-device losses match")

    save_at = args.steps // 2
    with tempfile.TemporaryDirectory() as directory:
        first, _ = train(mesh, args.steps, save_at=save_at, directory=directory)
        resumed = resume(mesh, directory, args.steps, save_at)
    assert resumed == first[save_at:], (resumed, first[save_at:])
    print(f"resumed from step {save_at}: identical losses", resumed)
    assert losses[-1] < losses[0]
    print("loss went down:", losses[0], "->", losses[-1])


if __name__ == "__main__":
    main()
