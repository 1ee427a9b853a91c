"""nnx.spmd.add_axis / remove_axis / get_var_pspec, against flax.nnx.spmd."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx

PN = nnx.PARTITION_NAME


def pair(**metadata):
    with flax_nnx.use_eager_sharding(False):
        theirs = flax_nnx.Param(jnp.ones((2, 3)), **metadata)
    return nnx.Param(jnp.ones((2, 3)), **metadata), theirs


def sharding(var):
    return var.get_metadata().get("out_sharding")


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("name", ["layers", None])
def test_add_axis_inserts_the_name_in_place_like_flax(index, name):
    ours, theirs = pair(out_sharding=("a", "b"))
    tree_ours, tree_theirs = {"w": ours, "x": jnp.ones(2)}, {"w": theirs, "x": jnp.ones(2)}
    assert nnx.spmd.add_axis(tree_ours, index, {PN: name}) is tree_ours
    flax_nnx.spmd.add_axis(tree_theirs, index, {PN: name})
    assert sharding(ours) == sharding(theirs)
    assert tree_ours["w"] is ours


def test_negative_index_counts_from_the_end_of_the_result():
    # As jnp.expand_dims: index -1 puts the new axis last (flax inserts before the last
    # entry, list.insert's meaning; see docs/compatibility.md).
    ours, _ = pair(out_sharding=("a", "b"))
    nnx.spmd.add_axis(ours, -1, {PN: "L"})
    assert sharding(ours) == ("a", "b", "L")
    assert jnp.expand_dims(jnp.ones((2, 3)), -1).shape == (2, 3, 1)
    nnx.spmd.remove_axis(ours, -1, {PN: "L"})
    assert sharding(ours) == ("a", "b")


def test_remove_axis_undoes_add_axis_like_flax():
    ours, theirs = pair(out_sharding=("L", "a", "b"))
    nnx.spmd.remove_axis([ours], 0, {PN: "L"})
    flax_nnx.spmd.remove_axis([theirs], 0, {PN: "L"})
    assert sharding(ours) == sharding(theirs) == ("a", "b")


def test_remove_axis_wrong_name_raises_like_flax():
    ours, theirs = pair(out_sharding=("L", "a", "b"))
    with pytest.raises(nnx.errors.ShardingError, match="'L'"):
        nnx.spmd.remove_axis(ours, 1, {PN: "L"})
    with pytest.raises(ValueError):
        flax_nnx.spmd.remove_axis(theirs, 1, {PN: "L"})
    assert sharding(ours) == ("L", "a", "b")


def test_missing_partition_name_raises_like_flax():
    ours, theirs = pair()
    with pytest.raises(nnx.errors.ShardingError, match="partition_name"):
        nnx.spmd.add_axis(ours, 0, {})
    with pytest.raises(ValueError):
        flax_nnx.spmd.add_axis(theirs, 0, {})


def test_variables_without_sharding_are_untouched():
    ours, theirs = pair(tag="t")
    nnx.spmd.add_axis(ours, 0, {PN: "L"})
    flax_nnx.spmd.add_axis(theirs, 0, {PN: "L"})
    assert sharding(ours) is sharding(theirs) is None
    assert ours.get_metadata(exclude_required=True) == {"tag": "t"}


def test_add_axis_on_a_module_changes_each_shared_variable_once():
    init = nnx.with_partitioning(nnx.initializers.ones, ("in", "out"))
    model = nnx.Linear(2, 3, kernel_init=init, rngs=nnx.Rngs(0))
    model.tied = model.kernel
    before = nnx.graphdef(model)
    assert nnx.spmd.add_axis(model, 0, {PN: "layers"}) is model
    assert model.kernel.out_sharding == ("layers", "in", "out")
    assert nnx.graphdef(model) != before  # a metadata change is a structural change
    nnx.spmd.remove_axis(nnx.state(model), 0, {PN: "layers"})
    assert model.kernel.out_sharding == ("in", "out")


@pytest.mark.parametrize("metadata", [
    {"out_sharding": ("a", "b")}, {}, {"out_sharding": (None, "b")},
    {"out_sharding": ("a", "b"), "sharding_rules": (("a", "x"), ("b", "y"))},
    {"out_sharding": jax.P("a", None)},
])
def test_get_var_pspec_like_flax(metadata):
    ours, theirs = pair(**metadata)
    assert nnx.spmd.get_var_pspec(ours) == flax_nnx.spmd.get_var_pspec(theirs)


def test_get_var_pspec_uses_the_active_rules_like_get_partition_spec():
    ours, theirs = pair(out_sharding=("a", "b"))
    rules = [("a", "data"), ("b", "model")]
    with nnx.logical_axis_rules(rules):
        spec = nnx.spmd.get_var_pspec(ours)
        assert spec == nnx.get_partition_spec({"v": ours})["v"].value
    with flax_nnx.logical_axis_rules(rules):
        assert spec == flax_nnx.spmd.get_var_pspec(theirs) == jax.P("data", "model")
    # A name no rule maps is replicated, as in nnx.get_partition_spec and flax.linen
    # (flax.nnx keeps the name; see docs/compatibility.md).
    with nnx.logical_axis_rules([("a", "data")]):
        assert nnx.spmd.get_var_pspec(ours) == jax.P("data", None)
    with pytest.raises(TypeError, match="Variable"):
        nnx.spmd.get_var_pspec(jnp.ones(2))
