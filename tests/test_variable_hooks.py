"""Variable value hooks (``on_create_value``, ``on_get_value``, ``on_set_value``) and
``with_metadata``/``VariableMetadata`` carrying them, against flax.nnx 0.12's behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


def make_hooks(log):
    def on_create(v, x):
        log.append("create")
        return x * 10

    def on_get(v, x):
        log.append("get")
        return x * 2

    def on_set(v, x):
        log.append("set")
        return x + 1

    return dict(on_create_value=on_create, on_get_value=on_get, on_set_value=on_set)


def run_sequence(lib):
    log = []
    p = lib.Param(jnp.ones(2), **make_hooks(log))
    reads = [np.asarray(p[...]), np.asarray(p.value)]
    p.value = jnp.zeros(2)
    reads.append(np.asarray(p.get_value()))
    return log, reads


def test_hooks_run_like_flax():
    ours, theirs = run_sequence(nnx), run_sequence(flax_nnx)
    assert ours[0] == theirs[0] == ["create", "get", "get", "set", "get"]
    for a, b in zip(ours[1], theirs[1]):
        np.testing.assert_array_equal(a, b)


def test_set_hook_runs_for_item_writes_and_sees_the_variable():
    seen = []

    def on_set(v, x):
        seen.append(type(v).__name__)
        return jnp.clip(x, 0.0, 1.0)

    p = nnx.Param(jnp.zeros(3), on_set_value=on_set)
    p[...] = jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(p.get_value(), [0.0, 0.5, 1.0])
    p[1] = 5.0
    np.testing.assert_array_equal(p.get_value(), [0.0, 1.0, 1.0])
    assert seen == ["Param", "Param"]


def test_create_hook_sees_metadata():
    p = nnx.Param(jnp.ones(2), scale=3.0,
                  on_create_value=lambda v, x: x * v.get_metadata("scale"))
    np.testing.assert_array_equal(p[...], [3.0, 3.0])


def test_with_metadata_hooks_reach_the_layer_like_flax():
    def on_get(v, x):
        return x * 0.5

    ours = nnx.Linear(2, 2, kernel_init=nnx.with_metadata(nnx.initializers.ones,
                                                         on_get_value=on_get),
                      rngs=nnx.Rngs(0))
    theirs = flax_nnx.Linear(2, 2, kernel_init=flax_nnx.with_metadata(
        flax_nnx.initializers.ones, on_get_value=on_get), rngs=flax_nnx.Rngs(0))
    np.testing.assert_array_equal(ours.kernel[...], theirs.kernel[...])
    x = jnp.ones((1, 2))
    np.testing.assert_array_equal(ours(x), theirs(x))
    assert ours.kernel.get_metadata("on_get_value") == (on_get,)
    # Inside a transform the rebuilt variables carry the hook too.
    np.testing.assert_array_equal(nnx.jit(lambda m, x: m(x))(ours, x), theirs(x))


def test_variable_metadata_takes_flax_arguments():
    meta = nnx.VariableMetadata(jnp.ones(2), on_get_value=lambda v, x: -x,
                                metadata={"note": "n"})
    p = nnx.Param(meta)
    np.testing.assert_array_equal(p[...], [-1.0, -1.0])
    assert p.note == "n" and meta.value is meta.raw_value


def test_hooks_leave_split_and_raw_values_alone():
    p = nnx.Param(jnp.ones(2), on_get_value=lambda v, x: x * 100)
    holder = nnx.Dict(p=p)
    raw = jax.tree.leaves(holder)[0]  # the pytree leaf is the stored array
    np.testing.assert_array_equal(raw, [1.0, 1.0])
    graphdef, state = nnx.split(holder)
    again = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(again["p"][...], [100.0, 100.0])


def test_a_hook_added_later_by_set_metadata_runs():
    p = nnx.Param(jnp.ones(2))
    p.set_metadata(on_get_value=lambda v, x: x + 1)
    np.testing.assert_array_equal(p[...], [2.0, 2.0])


def test_a_dict_in_a_hook_position_is_refused():
    with pytest.raises(TypeError, match="metadata="):
        nnx.VariableMetadata(1.0, {"out_sharding": ("x",)})
