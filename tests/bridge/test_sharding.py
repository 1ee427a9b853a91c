"""Sharding across the bridge: nnxlib.get_partition_spec agrees with Linen's, and arrays
are placed on the active mesh."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, PartitionSpec

import nnxlib as nnx
from bridge import ToNNX, nnx_attrs_to_linen_vars

RULES = [("embed", "data"), ("mlp", "model")]


class Annotated(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "mlp")))(x)
        return nn.Dense(4, kernel_init=nn.with_partitioning(
            nn.initializers.lecun_normal(), (None, "model")))(x)


def _specs(state):
    """nnxlib.get_partition_spec as a plain nested dict of PartitionSpecs."""
    return nnx.to_pure_dict(nnx.get_partition_spec(state))


def test_partition_specs_match_linen():
    x = jnp.ones((2, 4))
    state = nnx.state(ToNNX(Annotated(), rngs=nnx.Rngs(0)).lazy_init(x), nnx.Not(nnx.RngState))
    linen_specs = nn.get_partition_spec(nnx_attrs_to_linen_vars(state))["params"]
    reference = nn.get_partition_spec(jax.eval_shape(Annotated().init, jax.random.key(0),
                                                     x))["params"]
    assert linen_specs == reference
    assert _specs(state) == reference
    with nnx.logical_axis_rules(RULES), nn.logical_axis_rules(RULES):
        resolved = _specs(state)
        linen_resolved = nn.logical_to_mesh(reference)
    # Logical names resolve as Linen resolves them; nn.Partitioned names are mesh axes,
    # which Linen's Partitioned.unbox uses as they are (no rules), and so does nnxlib.
    assert resolved["Dense_0"] == linen_resolved["Dense_0"]
    assert resolved["Dense_0"]["kernel"] == PartitionSpec("data", "model")
    assert resolved["Dense_1"]["kernel"] == PartitionSpec(None, "model")


def test_arrays_are_placed_on_the_active_mesh():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    x = jnp.ones((2, 4))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
        model = ToNNX(Annotated(), rngs=nnx.Rngs(0)).lazy_init(x)
        y = model(x)
    assert model.Dense_0.kernel[...].sharding.spec == PartitionSpec("data", "model")
    assert model.Dense_1.kernel[...].sharding.spec == PartitionSpec(None, "model")
    assert model.Dense_0.kernel[...].addressable_shards[0].data.shape == (2, 2)
    assert y.shape == (2, 4)
