"""nnxlib.spmd on 8 simulated CPU devices: rules, eager sharded creation, specs, errors.

Oracles: ``flax.linen.logical_to_mesh_axes`` for rule resolution (same rules, same names),
``flax.nnx`` for the placement of the same layer built under the same mesh, and plain
``jax.device_put`` for values. Sharded creation is verified by the per-device buffer
shapes (``addressable_shards``) and by the compiled program's output shardings.
"""

import flax.linen as nn_linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import nnxlib as nnx
from nnxlib.errors import ShardingError

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")

RULES = [("batch", "data"), ("embed", None), ("mlp", "model"), ("heads", "model"),
         ("vocab", ("data", "model"))]


@pytest.fixture
def mesh():
    return jax.make_mesh((2, 4), ("data", "model"))


def shard_shapes(x):
    return sorted({tuple(s.data.shape) for s in x.addressable_shards})


# ------------------------------------------------------------------- Linen precedence
LOGICAL = ["batch", "embed", "mlp", "heads", "vocab", "length", None]
MESH_AXES = st.sampled_from(["X", "Y", "Z", None, ("X", "Y"), ("Y", "Z")])


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.sampled_from(LOGICAL), min_size=0, max_size=4).filter(
        lambda ns: len([n for n in ns if n]) == len({n for n in ns if n})),
    rules=st.lists(st.tuples(st.sampled_from(LOGICAL[:-1]), MESH_AXES), max_size=6),
)
def test_rules_resolve_exactly_like_linen(names, rules):
    expected = nn_linen.logical_to_mesh_axes(tuple(names), rules)
    assert nnx.logical_to_mesh_axes(tuple(names), rules) == expected
    with nnx.logical_axis_rules(rules), nn_linen.logical_axis_rules(rules):
        assert nnx.logical_to_mesh_axes(tuple(names)) == nn_linen.logical_to_mesh_axes(
            tuple(names))


def test_first_rule_wins_and_mesh_axis_used_once():
    rules = [("batch", "data"), ("embed", "data"), ("embed", "model"), ("mlp", "model")]
    # embed cannot take 'data' (batch has it), falls to 'model'; mlp then gets nothing.
    names = ("batch", "embed", "mlp")
    assert nnx.logical_to_mesh_axes(names, rules) == P("data", "model", None)
    assert nnx.logical_to_mesh_axes(names, rules) == nn_linen.logical_to_mesh_axes(names, rules)


def test_variable_spec_uses_context_rules_like_linen(mesh):
    init = nnx.with_partitioning(nnx.initializers.ones, ("embed", "mlp"))
    layer = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
    with nnx.logical_axis_rules(RULES):
        spec = nnx.get_partition_spec(nnx.state(layer))["kernel"].value
        assert spec == nn_linen.logical_to_mesh_axes(("embed", "mlp"), RULES)
    assert spec == P(None, "model")
    # Without rules the names are taken as mesh axes (flax.nnx's behaviour).
    assert nnx.get_partition_spec(nnx.state(layer))["kernel"].value == P("embed", "mlp")


def test_variable_rules_take_precedence_over_context():
    v = nnx.Param(jnp.ones((2, 4)), out_sharding=("embed", "mlp"),
                  sharding_rules=[("embed", "data")])
    with nnx.logical_axis_rules([("embed", "model"), ("mlp", "model")]):
        # embed -> data (own rule first), mlp -> model (context rule).
        assert nnx.spmd.variable_spec(v) == P("data", "model")


def test_unmatched_logical_name_is_replicated_under_rules(mesh):
    init = nnx.with_partitioning(nnx.initializers.ones, ("length", "mlp"))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
        layer = nnx.Linear(8, 8, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel[...].sharding.spec == P(None, "model")


# ------------------------------------------------------------------ sharded creation
def test_eager_creation_under_set_mesh_matches_flax_nnx(mesh):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with jax.set_mesh(mesh):
        ours = nnx.Linear(16, 64, kernel_init=init, rngs=nnx.Rngs(0))
        theirs = fnnx.Linear(16, 64, rngs=fnnx.Rngs(0), kernel_init=fnnx.with_partitioning(
            fnnx.initializers.lecun_normal(), (None, "model")))
    kernel = ours.kernel[...]
    assert kernel.sharding.spec == theirs.kernel[...].sharding.spec == P(None, "model")
    assert len(kernel.addressable_shards) == 8
    assert shard_shapes(kernel) == [(16, 16)]  # no device holds the whole (16, 64)
    np.testing.assert_array_equal(kernel, theirs.kernel[...])
    assert shard_shapes(ours.bias[...]) == [(64,)]  # no metadata: left as created


def test_mesh_metadata_places_without_a_context():
    mesh = jax.make_mesh((8,), ("model",))
    init = nnx.with_partitioning(nnx.initializers.ones, ("model", None), mesh=mesh)
    layer = nnx.Linear(16, 4, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel[...].sharding == NamedSharding(mesh, P("model", None))
    assert shard_shapes(layer.kernel[...]) == [(2, 4)]


def test_without_a_mesh_sharding_stays_metadata():
    init = nnx.with_partitioning(nnx.initializers.ones, (None, "model"))
    layer = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
    assert len(layer.kernel[...].sharding.device_set) == 1
    assert layer.kernel.out_sharding == (None, "model")
    with pytest.warns(DeprecationWarning, match="sharding_names"):
        assert layer.kernel.sharding_names == (None, "model")  # flax's deprecated reader


def test_eager_sharding_can_be_turned_off(mesh):
    init = nnx.with_partitioning(nnx.initializers.ones, (None, "model"))
    with jax.set_mesh(mesh):
        with nnx.use_eager_sharding(False):
            off = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
        with nnx.var_defaults(eager_sharding=False):
            off_too = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
        per_variable = nnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model"),
                                 eager_sharding=False)
        on = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
    for x in (off.kernel, off_too.kernel, per_variable):
        assert shard_shapes(x[...]) == [(4, 8)]
    assert shard_shapes(on.kernel[...]) == [(4, 2)]


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_creation_under_jit_is_born_sharded(axis_type):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
    create = nnx.jit(lambda: nnx.Linear(32, 64, kernel_init=init, rngs=nnx.Rngs(0)))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
        layer = create()
        compiled = create.lower().compile()
    expected = NamedSharding(mesh, P(None, "model"))
    assert layer.kernel[...].sharding.is_equivalent_to(expected, 2)
    assert shard_shapes(layer.kernel[...]) == [(32, 16)]
    # The compiled program itself outputs the kernel in shards: no device ever holds it.
    kernel_shardings = [s for s in jax.tree_util.tree_leaves(compiled.output_shardings)
                        if s.shard_shape((32, 64)) == (32, 16)]
    assert kernel_shardings, compiled.output_shardings
    plain = nnx.Linear(32, 64, kernel_init=nnx.initializers.lecun_normal(), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(layer.kernel[...], plain.kernel[...], rtol=1e-6)


def test_sharded_state_via_get_abstract_model_and_out_shardings(mesh):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))

    def make():
        return nnx.Linear(16, 32, kernel_init=init, rngs=nnx.Rngs(0))

    with nnx.logical_axis_rules(RULES), nnx.use_eager_sharding(False):
        graphdef, abstract = nnx.get_abstract_model(make, mesh)
        shardings = jax.tree.map(lambda a: a.sharding, abstract)
        # nnx.jit's out_shardings apply to non-graph outputs; a State is one of its
        # graph outputs, so the pure function goes through jax.jit here.
        create = jax.jit(lambda: nnx.state(make()), out_shardings=shardings)
        with jax.set_mesh(mesh):
            state = create()
            out = create.lower().compile().output_shardings
    assert abstract["kernel"].value.sharding.spec == P(None, "model")
    assert shard_shapes(state["kernel"].value) == [(16, 8)]
    assert any(s.spec == P(None, "model") for s in jax.tree_util.tree_leaves(out))
    model = nnx.merge(graphdef, state)
    np.testing.assert_allclose(model.kernel[...], make().kernel[...], rtol=1e-6)


def test_as_abstract_attaches_shardings_on_auto_meshes():
    mesh = jax.make_mesh((2, 4), ("a", "b"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        abstract = nnx.eval_shape(lambda: nnx.Linear(
            4, 8, kernel_metadata={"out_sharding": ("a", "b")}, rngs=nnx.Rngs(0)))
        assert abstract.kernel.value.sharding is None
        with_sharding = nnx.as_abstract(abstract)
        state = nnx.abstract_with_sharding(nnx.state(abstract))
    assert with_sharding.kernel.value.sharding == NamedSharding(mesh, P("a", "b"))
    assert state["kernel"].value.sharding.spec == P("a", "b")
    assert abstract.kernel.value.sharding is None  # the input is not changed


# -------------------------------------------------------- jit, constraints, BatchNorm
class Block(nnx.Module):
    def __init__(self, rngs):
        w = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
        self.up = nnx.Linear(8, 16, kernel_init=w, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)

    def __call__(self, x):
        h = nnx.with_sharding_constraint(self.up(x), ("batch", "mlp"))
        return self.norm(h)


def test_jit_with_metadata_shardings_constraint_and_batchnorm(mesh):
    x = jax.random.normal(jax.random.key(1), (16, 8))
    reference = Block(nnx.Rngs(0))
    y_ref = nnx.jit(lambda m, x: m(x))(reference, x)
    with nnx.logical_axis_rules(RULES):
        model = Block(nnx.Rngs(0))  # no mesh: metadata only
        shardings = nnx.get_named_sharding(nnx.state(model), mesh)
        data = NamedSharding(mesh, P("data", None))
        step = nnx.jit(lambda m, x: m(x), in_shardings=(nnx.StateSharding(shardings), data))
        with jax.set_mesh(mesh):
            y = step(model, jax.device_put(x, data))
            compiled = step.lower(model, jax.device_put(x, data)).compile()
    # jit takes the kernel in the shards its metadata asks for.
    assert shardings["up"]["kernel"].value.spec == P(None, "model")
    assert any(s.shard_shape((8, 16)) == (8, 4)
               for s in jax.tree_util.tree_leaves(compiled.input_shardings))
    assert y.sharding.spec == P("data", "model")  # the activation constraint
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    # BatchNorm statistics over a batch split across 'data' are the global ones.
    np.testing.assert_allclose(model.norm.mean[...], reference.norm.mean[...], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(model.norm.var[...], reference.norm.var[...], rtol=1e-5)


def test_batchnorm_axis_name_under_shard_map(mesh):
    x = jax.random.normal(jax.random.key(2), (16, 4))
    reference = nnx.BatchNorm(4, rngs=nnx.Rngs(0))
    reference(x)
    bn = nnx.BatchNorm(4, axis_name="data", rngs=nnx.Rngs(0))
    one_axis = jax.make_mesh((8,), ("data",))
    x = jax.device_put(x, NamedSharding(one_axis, P("data")))
    nnx.shard_map(lambda m, x: m(x), mesh=one_axis, in_specs=(P(), P("data")),
                  out_specs=P("data"))(bn, x)
    np.testing.assert_allclose(bn.mean[...], reference.mean[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.var[...], reference.var[...], rtol=1e-5)


def test_scan_over_layers_keeps_layer_axis_in_specs_and_optimizer(mesh):
    import optax

    rules = RULES + [("layers", None)]
    w = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_stack(key):
        return nnx.Linear(8, 8, kernel_init=w, rngs=nnx.Rngs(key))

    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        stack = make_stack(jax.random.split(jax.random.key(0), 3))
        optimizer = nnx.Optimizer(stack, optax.adam(1e-3), wrt=nnx.Param)
        specs = nnx.get_partition_spec(nnx.state(stack))
        opt_specs = nnx.get_partition_spec(nnx.state(optimizer))
    assert stack.kernel.out_sharding == ("layers", "embed", "mlp")
    assert specs["kernel"].value == P(None, None, "model")
    assert stack.kernel[...].sharding.spec == P(None, None, "model")
    mu = opt_specs["opt_state"][0]["mu"]["kernel"].value
    assert mu == P(None, None, "model")
    mu_array = nnx.state(optimizer)["opt_state"][0]["mu"]["kernel"].value
    assert shard_shapes(mu_array) == [(3, 8, 2)]

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def forward(x, layer):
        assert layer.kernel.out_sharding == ("embed", "mlp")
        return jnp.tanh(layer(x))

    x = jnp.ones((2, 8))
    with jax.set_mesh(mesh):
        y = nnx.jit(lambda s, x: forward(x, s))(stack, x)
    expected = x
    for i in range(3):
        expected = jnp.tanh(expected @ stack.kernel[i] + stack.bias[i])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- bad input
def test_logical_name_without_a_rule_and_not_a_mesh_axis(mesh):
    init = nnx.with_partitioning(nnx.initializers.ones, ("embed", "mlp"))
    with jax.set_mesh(mesh), pytest.raises(ShardingError) as e:
        nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
    msg = str(e.value)
    assert "'embed'" in msg and "('data', 'model')" in msg and "logical_axis_rules" in msg
    layer = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))  # no mesh: fine
    with pytest.raises(ShardingError, match=r"Param at kernel .*'embed'"):
        nnx.get_named_sharding(nnx.state(layer), mesh)


def test_rank_mismatch_names_the_path_and_changes_nothing(mesh):
    model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)))
    model.layers[0].kernel.set_metadata(out_sharding=(None, "model", None))
    before = np.asarray(model.layers[0].kernel[...])
    with pytest.raises(ShardingError) as e:
        state = nnx.state(model)
        nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    msg = str(e.value)
    assert "layers[0].kernel" in msg and "3 entries" in msg and "2 dimensions" in msg
    assert len(model.layers[0].kernel[...].sharding.device_set) == 1
    np.testing.assert_array_equal(model.layers[0].kernel[...], before)
    with jax.set_mesh(mesh), pytest.raises(ShardingError, match="3 entries"):
        nnx.Param(jnp.ones((4, 8)), out_sharding=(None, "model", None))


def test_rule_to_a_missing_mesh_axis(mesh):
    init = nnx.with_partitioning(nnx.initializers.ones, ("embed", "mlp"))
    with jax.set_mesh(mesh), nnx.logical_axis_rules([("mlp", "tensor")]):
        with pytest.raises(ShardingError, match=r"'mlp' is mapped to mesh axis 'tensor'"):
            nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))


def test_mesh_axis_used_twice(mesh):
    with jax.set_mesh(mesh), pytest.raises(ShardingError, match="'model' is used twice"):
        nnx.Param(jnp.ones((4, 8)), out_sharding=("model", "model"))
    v = nnx.Param(jnp.ones((4, 8)), out_sharding=("embed", "embed"))
    with nnx.logical_axis_rules(RULES), pytest.raises(ShardingError, match="repeat"):
        nnx.get_partition_spec({"w": v})


def test_bad_rules_are_rejected():
    with pytest.raises(ShardingError, match="malformed"):
        nnx.logical_axis_rules([("embed", 3)])
    with pytest.raises(ShardingError, match="pairs"):
        nnx.logical_axis_rules(["embed"])


def test_constraint_without_a_mesh_is_a_no_op_and_checks_rank_with_one(mesh):
    x = jnp.ones(2)
    assert nnx.with_sharding_constraint(x, ("data",)) is x
    with jax.set_mesh(mesh), pytest.raises(ShardingError, match="2 entries"):
        nnx.with_sharding_constraint(x, ("data", None))
