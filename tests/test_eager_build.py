"""Eager model building (PyTorch-style use) stays exact while its fast paths run.

The eager fast paths (one compiled call per RNG draw, plain static attributes set
without conversion, arrays already of the right dtype not cast again, cheaper pytree
flattening) must not change a single parameter bit, a key, a structure stamp or a
traced program.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib.graph import _graphdef
from nnxlib.nn import dtypes

ROOT = Path(__file__).resolve().parents[1]


def define_lm(lib):
    class Block(lib.Module):
        def __init__(self, dim, heads, *, rngs):
            self.attn_norm = lib.LayerNorm(dim, rngs=rngs)
            self.attn = lib.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
            self.mlp_norm = lib.LayerNorm(dim, rngs=rngs)
            self.up = lib.Linear(dim, 4 * dim, rngs=rngs)
            self.down = lib.Linear(4 * dim, dim, rngs=rngs)

    class LM(lib.Module):
        def __init__(self, vocab, dim, heads, layers, *, rngs):
            self.embed = lib.Embed(vocab, dim, rngs=rngs)
            self.blocks = lib.List([Block(dim, heads, rngs=rngs) for _ in range(layers)])
            self.norm = lib.LayerNorm(dim, rngs=rngs)
            self.head = lib.Linear(dim, vocab, rngs=rngs)

    return LM


def flat_params(lib, model):
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(
                lib.to_pure_dict(lib.state(model, lib.Param)))}


def test_transformer_lm_from_rngs0_is_bit_identical_to_flax_nnx():
    config = dict(vocab=50, dim=16, heads=4, layers=3)
    ours = flat_params(nnx, define_lm(nnx)(**config, rngs=nnx.Rngs(0)))
    theirs = flat_params(flax_nnx, define_lm(flax_nnx)(**config, rngs=flax_nnx.Rngs(0)))
    assert ours.keys() == theirs.keys() and len(ours) == 1 + 16 * 3 + 4
    for path, value in ours.items():
        ref = theirs[path]
        assert value.dtype == ref.dtype and value.shape == ref.shape, path
        assert value.tobytes() == ref.tobytes(), path
    # and not trivially: the kernels differ from each other
    assert (ours["['blocks'][0]['up']['kernel']"].tobytes()
            != ours["['blocks'][1]['up']['kernel']"].tobytes())


def test_eager_keys_equal_keys_drawn_under_jit_and_count_advances():
    eager = nnx.Rngs(0)
    eager_keys = [jax.random.key_data(eager.params()) for _ in range(3)]
    assert int(eager.default.count[...]) == 3
    assert eager.default.count[...].dtype == jnp.uint32

    traced = nnx.Rngs(0)

    @nnx.jit
    def draw(rngs):
        return jax.random.key_data(rngs.params())

    traced_keys = [draw(traced) for _ in range(3)]
    assert int(traced.default.count[...]) == 3
    for a, b in zip(eager_keys, traced_keys, strict=True):
        np.testing.assert_array_equal(a, b)
    # the same keys as fold_in(key(0), i), the documented rule
    for i, a in enumerate(eager_keys):
        np.testing.assert_array_equal(
            a, jax.random.key_data(jax.random.fold_in(jax.random.key(0), i)))


def test_a_traced_stream_adds_fold_in_and_add_only():
    graphdef, state = nnx.split(nnx.Rngs(0))

    def draw(state):
        rngs = nnx.merge(graphdef, state)
        key = rngs()
        return jax.random.key_data(key), nnx.state(rngs)

    eqns = jax.make_jaxpr(draw)(state).jaxpr.eqns
    names = [e.primitive.name for e in eqns]
    assert "random_fold_in" in names and "add" in names
    assert not any(name in ("jit", "pjit") for name in names), names


def test_a_stacked_stream_takes_the_plain_path_and_still_refuses_eager_draws():
    stream = nnx.RngStream(0, tag="a").split(3)
    with pytest.raises(ValueError, match="single key"):
        stream()
    np.testing.assert_array_equal(stream.count[...], np.zeros(3, np.uint32))


def test_plain_static_attributes_still_change_the_structure():
    model = nnx.Module()
    model.size = 1
    model.name = "a"
    model.act = jax.nn.relu
    model.dtype = jnp.float32
    model.none = None
    first = nnx.graphdef(model)
    assert first == _graphdef.flatten(model)[0]
    for name, value in [("size", 2), ("name", "b"), ("act", jax.nn.gelu),
                        ("dtype", jnp.bfloat16), ("none", 0.5), ("new", True)]:
        before = nnx.graphdef(model)
        setattr(model, name, value)
        after = nnx.graphdef(model)
        assert after != before and after == _graphdef.flatten(model)[0], name
    # a list is still converted and tracked, a value hiding state still rejected
    model.items = [nnx.Param(jnp.ones(2))]
    assert isinstance(model.items, nnx.List)

    class Holder:
        pass

    holder = Holder()
    holder.p = nnx.Param(jnp.ones(1))
    with pytest.raises(ValueError, match="Holder"):
        model.hidden = holder


def test_promote_dtype_returns_arrays_already_right_and_casts_weak_ones():
    x = jnp.ones(3)
    weak = jnp.asarray(2.0)
    assert weak.weak_type
    a, b, c = dtypes.promote_dtype((x, weak, None), dtype=None)
    assert a is x and c is None
    assert b.dtype == jnp.float32 and not b.weak_type
    (h,) = dtypes.promote_dtype((x,), dtype=jnp.bfloat16)
    assert h.dtype == jnp.bfloat16
    i, f = dtypes.promote_dtype((np.arange(2), jnp.ones(2, jnp.float16)), dtype=None)
    assert i.dtype == f.dtype == jnp.float16 and isinstance(i, jax.Array)
    assert dtypes.canonicalize_dtype(jnp.ones(2, jnp.int32), None) == jnp.float32


def test_module_pytree_keeps_static_values_in_the_treedef():
    def make(size):
        layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        layer.extra = size
        return layer

    leaves, treedef = jax.tree_util.tree_flatten(make(1))
    assert [x.shape for x in leaves] == [(3,), (2, 3)]
    assert treedef == jax.tree_util.tree_structure(make(1))
    assert treedef != jax.tree_util.tree_structure(make(2))
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.extra == 1 and rebuilt.in_features == 2
    assert rebuilt.dot_general is jax.lax.dot_general


def test_eager_benchmark_runs_and_its_numerics_check_passes():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(
        [sys.executable, "benchmarks/eager.py", "--quick", "--layers", "2", "--dim", "16",
         "--vocab", "32"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "numerics check passed" in result.stdout
    assert "target(s) missed" in result.stdout
    assert "build" in result.stdout and "optimizer" in result.stdout
