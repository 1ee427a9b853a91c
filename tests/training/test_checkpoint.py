"""Checkpoints with orbax: round trips, abstract and sharded restores, mismatches.

Values are compared with the saved ones bit for bit; placement by per-device buffer
shapes. Mismatches must list every bad path and leave the model as it was.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import nnxlib as nnx
from nnxlib.errors import StateMismatchError

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


class Net(nnx.Module):
    def __init__(self, rngs, layers=1):
        w = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        self.layers = nnx.List([nnx.Linear(8, 8, kernel_init=w, rngs=rngs)
                                for _ in range(layers)])
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # holds an Rngs stream (typed keys)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.drop(x)


def arrays(node):
    return jax.tree.map(np.asarray, nnx.training.to_checkpoint_dict(node))


def shard_shapes(x):
    return sorted({tuple(s.data.shape) for s in x.addressable_shards})


def test_model_and_optimizer_round_trip(tmp_path):
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    grads = nnx.grad(lambda m: m(jnp.ones((2, 8))).sum())(model)
    optimizer.update(model, grads)
    nnx.training.save_checkpoint(tmp_path / "model", model)
    nnx.training.save_checkpoint(tmp_path / "opt", nnx.state(optimizer))

    fresh = Net(nnx.Rngs(5))
    fresh_opt = nnx.Optimizer(fresh, optax.adam(1e-2), wrt=nnx.Param)
    nnx.training.restore_checkpoint(tmp_path / "model", fresh)
    restored = nnx.training.restore_checkpoint(tmp_path / "opt", nnx.state(fresh_opt))
    nnx.update(fresh_opt, restored)
    jax.tree.map(np.testing.assert_array_equal, arrays(fresh), arrays(model))
    jax.tree.map(np.testing.assert_array_equal, arrays(fresh_opt), arrays(optimizer))
    assert int(fresh_opt.step[...]) == 1
    # The RNG stream comes back as typed keys (its key data compared above).
    assert jax.dtypes.issubdtype(fresh.drop.rngs.key[...].dtype, jax.dtypes.prng_key)


def test_restore_onto_abstract_model_with_target_shardings(tmp_path):
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    model = Net(nnx.Rngs(0))
    nnx.training.save_checkpoint(tmp_path / "c", model)
    graphdef, abstract = nnx.get_abstract_model(lambda: Net(nnx.Rngs(0)), mesh)
    state = nnx.training.restore_checkpoint(tmp_path / "c", abstract)
    kernel = state["layers"][0]["kernel"].value
    assert kernel.sharding == NamedSharding(mesh, P(None, "model"))
    assert shard_shapes(kernel) == [(8, 2)]
    restored = nnx.merge(graphdef, state)
    jax.tree.map(np.testing.assert_array_equal, arrays(restored), arrays(model))


def test_restore_onto_a_different_mesh(tmp_path):
    mesh_a = jax.make_mesh((2, 4), ("data", "model"))
    mesh_b = jax.make_mesh((8,), ("model",))
    with jax.set_mesh(mesh_a):
        model = Net(nnx.Rngs(0))
    assert shard_shapes(model.layers[0].kernel[...]) == [(8, 2)]
    nnx.training.save_checkpoint(tmp_path / "c", model)
    abstract = nnx.eval_shape(lambda: Net(nnx.Rngs(0)))
    shardings = nnx.get_named_sharding(nnx.state(abstract), mesh_b)
    state = nnx.training.restore_checkpoint(tmp_path / "c", abstract, shardings=shardings)
    kernel = state["layers"][0]["kernel"].value
    assert kernel.sharding.mesh == mesh_b and shard_shapes(kernel) == [(8, 1)]
    np.testing.assert_array_equal(kernel, model.layers[0].kernel[...])


def test_checkpoint_from_before_a_layer_was_added(tmp_path):
    old = Net(nnx.Rngs(0), layers=1)
    nnx.training.save_checkpoint(tmp_path / "c", old)
    new = Net(nnx.Rngs(1), layers=2)
    before = arrays(new)
    with pytest.raises(StateMismatchError) as e:
        nnx.training.restore_checkpoint(tmp_path / "c", new)
    msg = str(e.value)
    assert "layers[1].kernel: missing from the checkpoint" in msg
    assert "layers[1].bias: missing from the checkpoint" in msg
    assert "layers[0]" not in msg and "Nothing was changed" in msg
    jax.tree.map(np.testing.assert_array_equal, arrays(new), before)
    # partial=True takes what the checkpoint has and keeps the new layer as it is.
    nnx.training.restore_checkpoint(tmp_path / "c", new, partial=True)
    np.testing.assert_array_equal(new.layers[0].kernel[...], old.layers[0].kernel[...])
    np.testing.assert_array_equal(new.layers[1].kernel[...], before["layers"][1]["kernel"])


def test_checkpoint_of_another_model_lists_every_mismatch(tmp_path):
    nnx.training.save_checkpoint(tmp_path / "c", nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    model = nnx.Linear(2, 3, use_bias=False, rngs=nnx.Rngs(0))
    model.extra = nnx.Param(jnp.zeros(2, jnp.int32))
    before = arrays(model)
    with pytest.raises(StateMismatchError) as e:
        nnx.training.restore_checkpoint(tmp_path / "c", model)
    lines = str(e.value).splitlines()
    assert "  kernel: shape (2, 3) expected, (4, 3) in the checkpoint" in lines
    assert "  bias: in the checkpoint but not in the model" in lines
    assert "  extra: missing from the checkpoint" in lines
    jax.tree.map(np.testing.assert_array_equal, arrays(model), before)


def test_dtype_mismatch_is_reported():
    problems = nnx.training.compare_structure({"w": jnp.zeros(2)},
                                              {"w": jnp.zeros(2, jnp.bfloat16)})
    assert problems == ["w: dtype float32 expected, bfloat16 in the checkpoint"]


def test_pure_dict_round_trip_with_plain_orbax_and_a_manager(tmp_path):
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    pure = nnx.state(model).to_pure_dict()
    with ocp.CheckpointManager(tmp_path / "runs") as manager:
        manager.save(7, args=ocp.args.StandardSave(pure))
        manager.wait_until_finished()
        assert manager.latest_step() == 7
        target = nnx.training.checkpoint_target(nnx.eval_shape(lambda: model))
        loaded = manager.restore(7, args=ocp.args.StandardRestore(target))
    fresh = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(3)), nnx.Linear(4, 2, rngs=nnx.Rngs(4)))
    state = nnx.state(fresh)
    state.replace_by_pure_dict(loaded)
    nnx.update(fresh, state)
    assert nnx.state(fresh).to_pure_dict().keys() == pure.keys()
    jax.tree.map(np.testing.assert_array_equal, nnx.state(fresh).to_pure_dict(), pure)


def test_orbax_is_imported_only_when_used():
    import subprocess
    import sys

    code = "import sys, nnxlib; print(any(m.startswith('orbax') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
