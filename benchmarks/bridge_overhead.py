"""Cost of the Linen bridge: nnxlib's ``bridge`` vs ``flax.nnx.bridge``, against plain Linen.

Model: an MLP of 16 dense layers of width 32, batch 8 (the issue's setting). Three
ratios, each against the same work written in plain ``flax.linen``:

* train step: a jitted train step (adam, MSE) of the Linen MLP wrapped with ``ToNNX``
  and trained with ``Optimizer`` / the Linen ``apply`` train step under ``jax.jit``
  with optax (per call);
* trace+compile: ``jax.jit(model.apply).lower(...).compile()`` of a Linen model built
  from 16 ``ToLinen``-wrapped ``Linear`` layers / the same model from ``nn.Dense``;
* eager apply: un-jitted ``model.apply`` of those two models (per call).

A last table measures ``abstract_init`` (peak memory of a first ``apply`` in a fresh
process, a 4096x4096 layer, restored variables): with it the structure is traced,
without it the constructor runs for real and allocates the layer once more.

    python benchmarks/bridge_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx as flax_nnx
from flax.nnx import bridge as flax_bridge

try:
    from benchmarks import _timing as t
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _timing as t

sys.path.insert(0, str(t.REPO_ROOT))
import bridge  # noqa: E402
import nnxlib  # noqa: E402

DEPTH, WIDTH, BATCH = 16, 32, 8
TARGETS = {"train step": 1.1, "trace+compile": 1.1, "eager apply": 1.3}


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(DEPTH - 1):
            x = nn.relu(nn.Dense(WIDTH)(x))
        return nn.Dense(WIDTH)(x)


def _mlp_of(make_layer):
    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(DEPTH):
                x = make_layer(i)(x)
                x = nn.relu(x) if i < DEPTH - 1 else x
            return x

    return Stack()


def _data():
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    return x, jnp.sin(x)


# ------------------------------------------------------------------ train step
def train_steps() -> dict[str, callable]:
    x, y = _data()
    tx = optax.adam(1e-3)
    model = LinenMLP()
    params = model.init(jax.random.key(0), x)["params"]
    state = {"params": params, "opt": tx.init(params)}

    @jax.jit
    def linen_step(params, opt_state, x, y):
        def loss_fn(p):
            return ((model.apply({"params": p}, x) - y) ** 2).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run_linen():
        state["params"], state["opt"], loss = linen_step(state["params"], state["opt"], x, y)
        return loss.block_until_ready()

    def nnx_runner(nnx, wrapper):
        wrapped = wrapper.lazy_init(x)
        optimizer = nnx.Optimizer(wrapped, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer, x, y):
            def loss_fn(m):
                return ((m(x) - y) ** 2).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        return lambda: step(wrapped, optimizer, x, y).block_until_ready()

    return {
        "linen": run_linen,
        "nnxlib": nnx_runner(nnxlib, bridge.ToNNX(LinenMLP(), rngs=nnxlib.Rngs(0))),
        "flax": nnx_runner(flax_nnx, flax_bridge.ToNNX(LinenMLP(), rngs=flax_nnx.Rngs(0))),
    }


# ------------------------------------------------------------ wrapped Linears
def linear_models() -> dict[str, tuple[nn.Module, dict]]:
    x, _ = _data()
    models = {
        "linen": _mlp_of(lambda i: nn.Dense(WIDTH)),
        "nnxlib": _mlp_of(lambda i: bridge.ToLinen(nnxlib.Linear, args=(WIDTH, WIDTH))),
        "flax": _mlp_of(lambda i: flax_bridge.ToLinen(flax_nnx.Linear, args=(WIDTH, WIDTH))),
    }
    return {name: (m, m.init(jax.random.key(0), x)) for name, m in models.items()}


def compile_times(models, repeat: int) -> dict[str, float]:
    x, _ = _data()
    best = {name: float("inf") for name in models}
    for _ in range(repeat):  # interleaved, like the other benchmarks
        for name, (model, variables) in models.items():
            start = time.perf_counter()
            # A new function object each time: nothing is reused from a cache.
            jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e6)
    return best


def eager_applies(models) -> dict[str, callable]:
    x, _ = _data()
    return {name: (lambda m=m, v=v: m.apply(v, x).block_until_ready())
            for name, (m, v) in models.items()}


# -------------------------------------------------------------- abstract_init
_PEAK_SCRIPT = """
import resource, sys, json
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp
import nnxlib, bridge
layer = bridge.to_linen(nnxlib.Linear, 4096, 4096, abstract_init={abstract})
x = jnp.ones((1, 4096))
# "Restored from a checkpoint": no init ran in this process.
variables = {{"params": {{"kernel": jnp.zeros((4096, 4096)), "bias": jnp.zeros(4096)}}}}
jax.block_until_ready(variables)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
layer.apply(variables, x).block_until_ready()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"before": before, "after": after}}))
"""


def peak_memory(abstract: bool) -> float:
    """Growth of the peak resident memory (MB) during a first apply in a new process."""
    code = _PEAK_SCRIPT.format(root=str(t.REPO_ROOT), abstract=abstract)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return (result["after"] - result["before"]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args()
    config = t.TimingConfig.for_args(args.quick)
    t.print_environment(config, "min", "nnxlib")

    rows, ratios = [], {}

    def record(name, times):
        base = times["linen"]
        ratios[name] = {k: times[k] / base for k in ("nnxlib", "flax")}
        rows.append([name, t.fmt_us(base), t.fmt_us(times["nnxlib"]), t.fmt_us(times["flax"]),
                     t.fmt_ratio(ratios[name]["nnxlib"]), t.fmt_ratio(ratios[name]["flax"])])

    timings = t.time_interleaved(train_steps(), config)
    record("train step", {k: v.min_us for k, v in timings.items()})
    models = linear_models()
    record("trace+compile", compile_times(models, 3 if args.quick else 7))
    timings = t.time_interleaved(eager_applies(models), config)
    record("eager apply", {k: v.min_us for k, v in timings.items()})

    t.print_table(
        f"Bridge overhead, MLP of {DEPTH} layers x {WIDTH}, batch {BATCH} (us; ratio to Linen)",
        ["", "linen", "nnxlib.bridge", "flax.nnx.bridge", "nnxlib/linen", "flax/linen"], rows)
    t.print_targets("Targets (nnxlib.bridge / plain Linen)",
                    [(name, ratios[name]["nnxlib"], target, True)
                     for name, target in TARGETS.items()])
    with_abstract, without = peak_memory(True), peak_memory(False)
    t.print_table(
        "abstract_init: peak memory growth of a first apply in a fresh process (MB; "
        "the layer is 64 MB)",
        ["abstract_init", "peak growth"],
        [["True", f"{with_abstract:.0f}"], ["False", f"{without:.0f}"]])


if __name__ == "__main__":
    main()
