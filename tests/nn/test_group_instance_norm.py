"""GroupNorm and InstanceNorm against flax.linen (same parameters) and flax.nnx (same
seed); cross-device statistics of every normalization layer under nnxlib.vmap and
nnxlib.shard_map; jaxpr sizes against linen; bad-input errors."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx
from jax.sharding import PartitionSpec as P

import nnxlib as nnx
from tests.nn.layer_oracles import norm_params as _params
from tests.nn.layer_oracles import randomize_norm as _randomize


def _data(shape, seed=0, dtype=jnp.float32):
    return (3.0 + 2.0 * jax.random.normal(jax.random.key(seed), shape)).astype(dtype)


# ------------------------------------------------------------------------ GroupNorm
@pytest.mark.parametrize("kwargs,shape", [
    ({"num_groups": 2}, (2, 5, 6)),
    ({"num_groups": 3, "epsilon": 1e-2}, (3, 4, 4, 6)),
    ({"num_groups": None, "group_size": 3}, (2, 4, 6)),
    ({"num_groups": 6}, (2, 3, 6)),                        # one channel per group
    ({"num_groups": 1, "use_fast_variance": False}, (2, 3, 6)),
    ({"num_groups": 2, "use_bias": False}, (2, 3, 6)),
    ({"num_groups": 2, "use_scale": False}, (2, 3, 6)),
    ({"num_groups": 2, "reduction_axes": (1, -1)}, (2, 3, 4, 6)),
])
def test_groupnorm_matches_linen(kwargs, shape):
    gn = nnx.GroupNorm(shape[-1], rngs=nnx.Rngs(0), **kwargs)
    _randomize(gn)
    x = _data(shape)
    ref = linen.GroupNorm(**kwargs).apply({"params": _params(gn)}, x)
    np.testing.assert_allclose(gn(x), ref, rtol=1e-5, atol=1e-5)


def test_groupnorm_mask_and_dtype_match_linen():
    gn = nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0))
    _randomize(gn)
    x = _data((2, 5, 4))
    mask = jax.random.bernoulli(jax.random.key(3), 0.7, x.shape)
    ref = linen.GroupNorm(num_groups=2).apply({"params": _params(gn)}, x, mask=mask)
    np.testing.assert_allclose(gn(x, mask=mask), ref, rtol=1e-5, atol=1e-5)
    half = nnx.GroupNorm(4, num_groups=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = half(x)
    ref = linen.GroupNorm(num_groups=2, dtype=jnp.bfloat16).apply({"params": _params(half)}, x)
    assert out.dtype == ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(out), np.float32(ref), rtol=2e-2, atol=2e-2)


def test_groupnorm_special_cases_are_layernorm_and_instancenorm():
    x = _data((2, 3, 4, 6))
    one_group = nnx.GroupNorm(6, num_groups=1, rngs=nnx.Rngs(0))(x)
    layer = nnx.LayerNorm(6, reduction_axes=(1, 2, 3), rngs=nnx.Rngs(0))(x)
    np.testing.assert_allclose(one_group, layer, rtol=1e-5, atol=1e-5)
    per_channel = nnx.GroupNorm(6, num_groups=6, rngs=nnx.Rngs(0))(x)
    instance = nnx.InstanceNorm(6, rngs=nnx.Rngs(0))(x)
    np.testing.assert_allclose(per_channel, instance, rtol=1e-5, atol=1e-5)


def test_groupnorm_gradients_match_linen():
    gn = nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0))
    _randomize(gn)
    x = _data((2, 3, 4))

    def ours(model, x):
        return jnp.sum(jnp.sin(model(x)))

    def ref(params, x):
        return jnp.sum(jnp.sin(linen.GroupNorm(num_groups=2).apply({"params": params}, x)))

    g, gx = nnx.grad(ours, argnums=(0, 1))(gn, x)
    g_ref, gx_ref = jax.grad(ref, argnums=(0, 1))(_params(gn), x)
    np.testing.assert_allclose(g["scale"][...], g_ref["scale"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g["bias"][...], g_ref["bias"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_groups": 4}, r"num_groups must be a positive divisor.*got num_groups=4.*Hint"),
    ({"num_groups": 0}, r"num_groups must be a positive divisor.*Hint"),
    ({"num_groups": None}, r"exactly one of num_groups and group_size.*Hint"),
    ({"num_groups": 2, "group_size": 3}, r"exactly one of.*Hint"),
    ({"num_groups": None, "group_size": 4}, r"group_size must be a positive divisor.*Hint"),
])
def test_groupnorm_bad_groups(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nnx.GroupNorm(6, rngs=nnx.Rngs(0), **kwargs)


# --------------------------------------------------------------------- InstanceNorm
@pytest.mark.parametrize("kwargs,shape,features", [
    ({}, (2, 5, 3), 3),
    ({"epsilon": 1e-2, "use_fast_variance": False}, (2, 4, 4, 3), 3),
    ({"use_bias": False}, (2, 5, 3), 3),
    ({"use_scale": False}, (2, 5, 3), 3),
    ({"feature_axes": 1}, (2, 3, 5), 3),                   # channels first
])
def test_instancenorm_matches_linen(kwargs, shape, features):
    norm = nnx.InstanceNorm(features, rngs=nnx.Rngs(0), **kwargs)
    _randomize(norm)
    x = _data(shape)
    ref = linen.InstanceNorm(**kwargs).apply({"params": _params(norm)}, x)
    np.testing.assert_allclose(norm(x), ref, rtol=1e-5, atol=1e-5)
    mask = jax.random.bernoulli(jax.random.key(5), 0.8, x.shape)
    ref = linen.InstanceNorm(**kwargs).apply({"params": _params(norm)}, x, mask=mask)
    np.testing.assert_allclose(norm(x, mask=mask), ref, rtol=1e-5, atol=1e-5)


def test_instancenorm_rejects_the_batch_axis_as_feature_axis():
    norm = nnx.InstanceNorm(2, feature_axes=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"include axis 0, the batch axis.*Hint"):
        norm(jnp.ones((2, 3)))


# ------------------------------------------------------------ same seed as flax.nnx
_SAME_SEED = {
    "BatchNorm": lambda m, r: m.BatchNorm(5, rngs=r),
    "BatchNorm-no-bias": lambda m, r: m.BatchNorm(5, use_bias=False, rngs=r),
    "LayerNorm": lambda m, r: m.LayerNorm(5, rngs=r),
    "RMSNorm": lambda m, r: m.RMSNorm(5, rngs=r),
    "GroupNorm": lambda m, r: m.GroupNorm(6, num_groups=3, rngs=r),
    "GroupNorm-random": lambda m, r: m.GroupNorm(
        6, num_groups=None, group_size=2, scale_init=m.initializers.normal(1.0),
        bias_init=m.initializers.uniform(), rngs=r),
    "InstanceNorm": lambda m, r: m.InstanceNorm(4, rngs=r),
    "InstanceNorm-random": lambda m, r: m.InstanceNorm(
        4, scale_init=m.initializers.normal(1.0), use_bias=False, rngs=r),
    "SpectralNorm": lambda m, r: m.SpectralNorm(m.Linear(3, 4, rngs=r), rngs=r),
    "SpectralNorm-3d": lambda m, r: m.SpectralNorm(_kernel_3d(m, r), n_steps=2, rngs=r),
    "WeightNorm": lambda m, r: m.WeightNorm(m.Linear(3, 4, rngs=r), rngs=r),
}


def _kernel_3d(mod, rngs):
    """A module (of library ``mod``) holding one 3-D kernel."""
    holder = mod.Dict()
    holder["kernel"] = mod.Param(mod.initializers.lecun_normal()(rngs.params(), (2, 3, 4)))
    return holder


def _flat(module, mod):
    return {path: (type(v).__name__, np.asarray(v[...] if isinstance(v, mod.Variable) else v))
            for path, v in mod.to_flat_state(mod.state(module))}


@pytest.mark.parametrize("name", sorted(_SAME_SEED))
def test_same_seed_same_state_as_flax_nnx(name):
    make = _SAME_SEED[name]
    ours_rngs, theirs_rngs = nnx.Rngs(0), fnnx.Rngs(0)
    # A second layer built from the same Rngs shows that the stream advanced equally.
    ours = [make(nnx, ours_rngs), nnx.Linear(2, 2, rngs=ours_rngs)]
    theirs = [make(fnnx, theirs_rngs), fnnx.Linear(2, 2, rngs=theirs_rngs)]
    for a, b in zip(ours, theirs):
        flat_a, flat_b = _flat(a, nnx), _flat(b, fnnx)
        assert sorted(flat_a, key=str) == sorted(flat_b, key=str)
        for path, (kind, value) in flat_a.items():
            theirs_kind, theirs_value = flat_b[path]
            if path[0] != "scales":   # WeightNorm scales: Param here, raw array in flax
                assert kind == theirs_kind, path
            assert value.dtype == theirs_value.dtype, path
            np.testing.assert_array_equal(value, theirs_value, err_msg=str(path))


@pytest.mark.parametrize("name", ["GroupNorm", "InstanceNorm", "SpectralNorm", "WeightNorm"])
def test_first_call_output_equals_flax_nnx(name):
    make = _SAME_SEED[name]
    ours, theirs = make(nnx, nnx.Rngs(0)), make(fnnx, fnnx.Rngs(0))
    shape = {"GroupNorm": (2, 3, 6), "InstanceNorm": (2, 3, 4)}.get(name, (2, 3))
    x = _data(shape)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


# -------------------------------------------------- statistics across devices (axis_name)
def test_batchnorm_axis_name_under_nnx_vmap_equals_full_batch():
    x = _data((4, 5, 3))                     # 4 members of 5 examples each
    synced = nnx.BatchNorm(3, axis_name="batch", momentum=0.5, rngs=nnx.Rngs(0))
    full = nnx.BatchNorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    for bn in (synced, full):
        _randomize(bn)

    @nnx.vmap(in_axes=(None, 0), axis_name="batch")
    def forward(bn, x):
        return bn(x)

    ys = forward(synced, x)
    np.testing.assert_allclose(ys.reshape(20, 3), full(x.reshape(20, 3)), rtol=1e-5,
                               atol=1e-5)
    # The broadcast running statistics are written back: every member agrees on them.
    np.testing.assert_allclose(synced.mean[...], full.mean[...], rtol=1e-5)
    np.testing.assert_allclose(synced.var[...], full.var[...], rtol=1e-5)


def test_batchnorm_axis_index_groups_under_nnx_vmap():
    x = _data((4, 5, 2))
    groups = [[0, 3], [1, 2]]

    @nnx.vmap(in_axes=(0, 0), axis_name="d")
    def forward(bn, x):
        return bn(x)

    @nnx.vmap
    def make(_):
        return nnx.BatchNorm(2, axis_name="d", axis_index_groups=groups, rngs=nnx.Rngs(0))

    stacked = make(jnp.arange(4))
    forward(stacked, x)
    for group in groups:
        expected = 0.01 * x[np.array(group)].reshape(-1, 2).mean(0)
        for member in group:
            np.testing.assert_allclose(stacked.mean[...][member], expected, rtol=1e-5)
    bad = nnx.BatchNorm(2, axis_name="d", axis_index_groups=[[0, 1], [1, 2]], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"must list every index.*exactly once.*Hint"):
        nnx.vmap(lambda m, x: m(x), in_axes=(None, 0), axis_name="d")(bad, x)


def test_batchnorm_axis_name_under_nnx_shard_map_equals_full_batch():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("data",))
    x = _data((16, 3))
    synced = nnx.BatchNorm(3, axis_name="data", momentum=0.5, rngs=nnx.Rngs(0))
    full = nnx.BatchNorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    for bn in (synced, full):
        _randomize(bn)

    @nnx.shard_map(mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"))
    def forward(bn, x):
        return bn(x)

    np.testing.assert_allclose(forward(synced, x), full(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(synced.mean[...], full.mean[...], rtol=1e-5)
    np.testing.assert_allclose(synced.var[...], full.var[...], rtol=1e-5)


@pytest.mark.parametrize("make, reference", [
    (lambda: nnx.GroupNorm(4, num_groups=2, axis_name="s", rngs=nnx.Rngs(0)),
     lambda: nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0))),
    (lambda: nnx.InstanceNorm(4, axis_name="s", rngs=nnx.Rngs(0)),
     lambda: nnx.InstanceNorm(4, rngs=nnx.Rngs(0))),
], ids=["groupnorm", "instancenorm"])
def test_axis_name_pools_statistics_over_spatial_shards(make, reference):
    # An image split along its length over 2 members: pooled statistics equal those of
    # the whole image.
    x = _data((2, 6, 4))
    shards = x.reshape(2, 2, 3, 4).transpose(1, 0, 2, 3)        # (member, batch, 3, 4)
    ys = nnx.vmap(lambda m, s: m(s), in_axes=(None, 0), axis_name="s")(make(), shards)
    whole = reference()(x)
    np.testing.assert_allclose(ys.transpose(1, 0, 2, 3).reshape(2, 6, 4), whole,
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------- jaxpr sizes
def _equations(fn, *args) -> int:
    return len(jax.make_jaxpr(fn)(*args).jaxpr.eqns)


@pytest.mark.parametrize("ours, theirs, shape", [
    (lambda: nnx.GroupNorm(6, num_groups=3, rngs=nnx.Rngs(0)),
     lambda: linen.GroupNorm(num_groups=3), (2, 4, 4, 6)),
    (lambda: nnx.InstanceNorm(6, rngs=nnx.Rngs(0)), lambda: linen.InstanceNorm(), (2, 4, 6)),
    (lambda: nnx.LayerNorm(6, rngs=nnx.Rngs(0)), lambda: linen.LayerNorm(), (2, 6)),
    (lambda: nnx.RMSNorm(6, rngs=nnx.Rngs(0)), lambda: linen.RMSNorm(), (2, 6)),
], ids=["group", "instance", "layer", "rms"])
def test_jaxpr_is_no_larger_than_linen(ours, theirs, shape):
    module, ref = ours(), theirs()
    x = _data(shape)
    graphdef, state = nnx.split(module)
    ours_count = _equations(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    variables = ref.init(jax.random.key(0), x)
    theirs_count = _equations(lambda v, x: ref.apply(v, x), variables, x)
    assert ours_count <= theirs_count, (ours_count, theirs_count)


def test_batchnorm_train_jaxpr_is_no_larger_than_linen():
    bn, ref = nnx.BatchNorm(6, rngs=nnx.Rngs(0)), linen.BatchNorm(use_running_average=False)
    x = _data((8, 6))
    graphdef, state = nnx.split(bn)

    def ours(state, x):
        module = nnx.merge(graphdef, state)
        return module(x), nnx.state(module)

    variables = ref.init(jax.random.key(0), x)
    theirs = lambda v, x: ref.apply(v, x, mutable=["batch_stats"])  # noqa: E731
    assert _equations(ours, state, x) <= _equations(theirs, variables, x)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make, x", [
    (lambda: nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0)), jnp.ones((2, 3, 6))),
    (lambda: nnx.GroupNorm(4, num_groups=2, use_scale=False, use_bias=False,
                           rngs=nnx.Rngs(0)), jnp.ones((2, 3, 6))),
    (lambda: nnx.InstanceNorm(4, rngs=nnx.Rngs(0)), jnp.ones((2, 3, 6))),
], ids=["groupnorm", "groupnorm-no-params", "instancenorm"])
def test_wrong_feature_size_is_a_clear_error_and_changes_nothing(make, x):
    layer = make()
    before = jax.tree.map(np.asarray, nnx.state(layer))
    with pytest.raises(nnx.errors.ShapeMismatchError,
                       match=r"num_features=4.*must hold 4 entries.*got 6.*Hint"):
        layer(x)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(layer))):
        np.testing.assert_array_equal(a, b)


def test_groupnorm_reduction_axes_without_channel_axis():
    gn = nnx.GroupNorm(4, num_groups=2, reduction_axes=(1,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"must include the channel axis.*Hint"):
        gn(jnp.ones((2, 3, 4)))
