"""Sharding semantics of variables, checked against flax.nnx 0.12 on 8 simulated devices.

``v.sharding`` is the value's JAX sharding and ``out_sharding`` the one annotation key
(the older ``sharding``/``sharding_names`` keys are read and stored as it); annotations
may be names, ``PartitionSpec`` s, ``NamedSharding`` s or ``Format`` s, with fewer
entries than dimensions; placement happens under ``vmap``/``scan`` too. Where flax.nnx
accepts the same input it is the oracle; where nnxlib differs on purpose (no mesh at
creation, mixed axis types) the difference is asserted.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx as fnnx
from jax.experimental.layout import Format, Layout
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import nnxlib as nnx
from nnxlib.errors import ShardingError

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


def auto_mesh():
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with DeprecationWarnings silenced (flax warns for the old keys too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------ v.sharding is the value's
def test_sharding_is_the_values_sharding_like_flax():
    mesh = auto_mesh()
    with jax.set_mesh(mesh):
        ours = nnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"))
        theirs = fnnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"))
    assert isinstance(ours.sharding, NamedSharding)
    assert ours.sharding == ours[...].sharding == theirs.sharding
    assert ours.sharding.shard_shape((4, 8)) == (4, 2)
    assert ours.out_sharding == theirs.out_sharding == (None, "model")


def test_sharding_without_a_mesh_is_the_one_device_sharding():
    # flax.nnx raises at creation here; nnxlib keeps the annotation as metadata.
    v = nnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"))
    assert v.sharding == v[...].sharding and len(v.sharding.device_set) == 1
    assert nnx.Param(1.0).sharding is None  # a Python number has none
    with pytest.raises(ValueError):
        fnnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"))


@pytest.mark.parametrize("alias", ["sharding", "sharding_names"])
def test_old_keys_are_stored_as_out_sharding_like_flax(alias):
    with pytest.warns(DeprecationWarning, match=alias):
        ours = nnx.Param(jnp.ones((2, 3)), **{alias: ("a", None)})
    theirs = quiet(fnnx.Param, jnp.ones((2, 3)), eager_sharding=False, **{alias: ("a", None)})
    assert ours.get_metadata(exclude_required=True) == {"out_sharding": ("a", None)}
    assert theirs.get_metadata("out_sharding") == ("a", None) and alias not in \
        theirs.get_metadata()
    with pytest.warns(DeprecationWarning):
        ours.set_metadata(**{alias: ("b", None)})
    assert ours.out_sharding == ("b", None) and alias not in ours.get_metadata()
    with pytest.warns(DeprecationWarning):
        copied = ours.replace(**{alias: (None, "c")})
    assert copied.out_sharding == (None, "c") and ours.out_sharding == ("b", None)
    init = nnx.with_metadata(nnx.initializers.ones, **{alias: ("d", None)})
    with pytest.warns(DeprecationWarning):
        made = nnx.Param(init(jax.random.key(0), (2, 3)))
    assert made.get_metadata(exclude_required=True) == {"out_sharding": ("d", None)}


def test_an_old_key_contradicting_out_sharding_is_an_error():
    with pytest.raises(ShardingError, match="out_sharding.*sharding_names.*Hint"):
        quiet(nnx.Param, jnp.ones(2), out_sharding=("a",), sharding_names=("b",))
    v = nnx.Param(jnp.ones(2), out_sharding=("a",))
    with pytest.raises(ShardingError, match="conflicting"):
        quiet(v.set_metadata, out_sharding=("a",), sharding=("b",))
    assert v.out_sharding == ("a",)  # left as it was
    same = quiet(nnx.Param, jnp.ones(2), out_sharding=("a",), sharding=("a",))
    assert same.out_sharding == ("a",)


# ------------------------------------------------------------------ annotation forms
def test_fewer_entries_than_dimensions_replicate_the_rest_like_flax():
    mesh = jax.make_mesh((1, 1), ("din", "dout"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        ours = nnx.LinearGeneral(2, (3, 4), kernel_metadata={"out_sharding": ("din", "dout")},
                                 rngs=nnx.Rngs(0))
        theirs = fnnx.LinearGeneral(2, (3, 4), kernel_metadata={"out_sharding": ("din", "dout")},
                                    rngs=fnnx.Rngs(0))
    assert ours.kernel.shape == (2, 3, 4)
    assert ours.kernel.sharding.spec == theirs.kernel.sharding.spec == P("din", "dout")
    assert nnx.get_partition_spec(nnx.state(ours))["kernel"].value == P("din", "dout")
    mesh = auto_mesh()
    with jax.set_mesh(mesh):
        v = nnx.Param(jnp.ones((4, 8, 2)), out_sharding=("data",))
    assert v.sharding.shard_shape((4, 8, 2)) == (2, 8, 2)
    with jax.set_mesh(mesh), pytest.raises(ShardingError, match="only 2 dimensions"):
        nnx.Param(jnp.ones((4, 8)), out_sharding=("data", None, None))


@pytest.mark.parametrize("kind", ["Auto", "Explicit"])
def test_partition_spec_and_named_sharding_annotations_like_flax(kind):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(getattr(AxisType, kind),) * 2)
    with jax.set_mesh(mesh):
        ours = nnx.Variable(jnp.ones((4, 8)), out_sharding=P("data", "model"))
        theirs = fnnx.Variable(jnp.ones((4, 8)), out_sharding=P("data", "model"))
    assert ours.sharding.spec == theirs.sharding.spec == P("data", "model")
    named = NamedSharding(mesh, P("data", None))  # carries its mesh: no context needed
    v = nnx.Variable(jnp.ones((4, 8)), out_sharding=named)
    assert v.sharding.is_equivalent_to(named, 2)
    assert nnx.spmd.variable_spec(v) == P("data", None)


def test_format_annotation_places_with_its_sharding_like_flax():
    named = NamedSharding(auto_mesh(), P("data", None))
    fmt = Format(Layout(major_to_minor=(1, 0)), named)
    ours = nnx.Variable(jnp.ones((4, 8)), out_sharding=fmt)
    theirs = fnnx.Variable(jnp.ones((4, 8)), out_sharding=fmt)
    assert ours.sharding == theirs.sharding == named
    assert ours[...].format.layout.major_to_minor == (1, 0)
    assert nnx.spmd.variable_spec(ours) == P("data", None)


def test_a_spec_mixing_auto_and_explicit_axes_is_refused():
    mixed = jax.make_mesh((2, 4), ("row", "col"), axis_types=(AxisType.Auto,
                                                               AxisType.Explicit))
    with pytest.raises(ShardingError, match="both Auto and Explicit.*Hint") as e:
        nnx.Variable(jnp.ones((4, 8)), out_sharding=("row", "col"), mesh=mixed)
    assert isinstance(e.value, ValueError)  # what flax.nnx raises (for any mixed mesh)
    with pytest.raises(ValueError):
        fnnx.Variable(jnp.ones((4, 8)), out_sharding=("row", "col"), mesh=mixed)
    # A spec over axes of one type is fine on such a mesh (flax.nnx refuses that too).
    v = nnx.Variable(jnp.ones((4, 8)), out_sharding=("row", None), mesh=mixed)
    assert v.sharding.spec == P("row", None) and v.sharding.shard_shape((4, 8)) == (2, 8)
    with pytest.raises(ValueError):
        fnnx.Variable(jnp.ones((4, 8)), out_sharding=("row", None), mesh=mixed)


# --------------------------------------------------------------- under transforms
def test_placement_inside_vmap_with_only_the_abstract_mesh():
    # A constant initializer's value inside vmap is constrained, not device_put (which
    # cannot take the abstract mesh that is all vmap knows of).
    mesh = jax.make_mesh((1, 2, 4), ("layers", "din", "dout"), axis_types=(AxisType.Auto,) * 3)

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
        return nnx.Linear(4, 8, rngs=rngs,
                          kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                                            ("din", "dout")),
                          bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("dout",)))

    with jax.set_mesh(mesh):
        layers = create(nnx.Rngs(0))
    assert layers.kernel.shape == (3, 4, 8)
    assert layers.kernel.out_sharding == ("layers", "din", "dout")
    assert layers.bias.out_sharding == ("layers", "dout")
    np.testing.assert_array_equal(layers.bias[...], np.zeros((3, 8)))


def test_add_axis_and_remove_axis_are_overridable_methods():
    calls = []

    class Tracked(nnx.Param):
        def add_axis(self, axis_index, axis_name):
            calls.append(("add", axis_index, axis_name))
            super().add_axis(axis_index, axis_name)

        def remove_axis(self, axis_index, axis_name):
            calls.append(("remove", axis_index, axis_name))
            super().remove_axis(axis_index, axis_name)

    hooked = []

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(x):
        return Tracked(x, out_sharding=("a",),
                       on_add_axis=lambda v, i, name: hooked.append((i, name)))

    v = create(jnp.ones((3, 2)))
    assert v.out_sharding == ("layers", "a")
    assert calls == [("add", 0, "layers")] and hooked == [(0, "layers")]

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def inside(v):
        assert v.out_sharding == ("a",)
        return v[...].sum()

    inside(v)
    assert calls[1:] == [("remove", 0, "layers"), ("add", 0, "layers")]
    # A variable without sharding metadata is told about the axis too (as in flax).
    create_plain = nnx.vmap(lambda x: Tracked(x), in_axes=0, out_axes=0,
                            transform_metadata={nnx.PARTITION_NAME: "layers"})
    create_plain(jnp.ones((3, 2)))
    assert calls[-1] == ("add", 0, "layers")


# --------------------------------------------------------- optimizer and EMA state
def test_optimizer_and_ema_state_are_sharded_like_their_params_as_in_flax():
    mesh = jax.make_mesh((2, 4), ("row", "col"), axis_types=(AxisType.Auto,) * 2)
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("row", "col"))
    with jax.set_mesh(mesh):
        model = nnx.Linear(4, 8, kernel_init=init, use_bias=False, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        ema = nnx.EMA(model, decay=0.9)
        other = nnx.Linear(4, 8, rngs=nnx.Rngs(0), use_bias=False,
                           kernel_metadata={"optimizer_sharding": ("row", "col")})
        opt2 = nnx.Optimizer(other, optax.adam(1e-3), wrt=nnx.Param)
    want = NamedSharding(mesh, P("row", "col"))
    assert model.kernel.sharding.is_equivalent_to(want, 2)
    for state in (opt.opt_state[0].mu["kernel"], opt.opt_state[0].nu["kernel"],
                  ema.params.kernel):
        assert state.sharding.is_equivalent_to(want, 2)
    # optimizer_sharding: the parameter replicated, its optimizer state sharded.
    assert other.kernel.sharding.is_equivalent_to(NamedSharding(mesh, P()), 2)
    assert opt2.opt_state[0].mu["kernel"].sharding.is_equivalent_to(want, 2)
