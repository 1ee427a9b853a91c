"""Metadata conversion between Linen boxes and nnxlib variables, both ways."""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from bridge import (
    PARTITION_NAME,
    NNXMeta,
    get_col_name,
    is_vanilla_variable,
    linen_vars_to_nnx_attrs,
    nnx_attrs_to_linen_vars,
    to_linen_var,
    to_nnx_var,
    variable_to_logically_partitioned,
    with_partitioning,
)


def _mesh():
    return jax.make_mesh((2, 4), ("data", "model"))


RULES = (("embed", "data"), ("mlp", "model"))


def _box_fields(box):
    return (type(box), np.asarray(box.value).tolist(), box.names, box.mesh,
            getattr(box, "rules", None))


@pytest.mark.parametrize("make", [
    lambda v, m: nn.Partitioned(v, ("embed", None)),
    lambda v, m: nn.Partitioned(v, ("data", "model"), mesh=m),
    lambda v, m: nn.LogicallyPartitioned(v, ("embed", "mlp")),
    lambda v, m: nn.LogicallyPartitioned(v, ("embed", "mlp"), mesh=m, rules=RULES),
])
def test_box_round_trip_keeps_type_and_fields(make):
    box = make(jnp.arange(8.0).reshape(2, 4), _mesh())
    before = copy.copy(box.__dict__)
    var = to_nnx_var("params", box)
    assert isinstance(var, nnx.Param)
    assert var.out_sharding == tuple(box.names)
    assert var.get_metadata("mesh", None) is box.mesh
    back = to_linen_var(var)
    assert _box_fields(back) == _box_fields(box)
    # The Linen box was read, never modified (flax's to_nnx_metadata deletes fields).
    assert box.__dict__.keys() == before.keys()
    assert all(box.__dict__[k] is before[k] for k in before)


def test_logically_partitioned_gives_rules_and_mesh():
    mesh = _mesh()
    var = to_nnx_var("batch_stats", nn.LogicallyPartitioned(jnp.zeros(2), ("embed",),
                                                            mesh=mesh, rules=RULES))
    assert isinstance(var, nnx.BatchStat)
    assert var.sharding_rules == RULES and var.mesh is mesh
    assert var.linen_meta_type is nn.LogicallyPartitioned


def test_unknown_collection_gets_a_registered_kind_and_back():
    var = to_nnx_var("my_counters", jnp.array(3))
    assert nnx.variable_name_from_type(type(var)) == "my_counters"
    assert nnx_attrs_to_linen_vars({"n": var}) == {"my_counters": {"n": var.get_value()}}


def test_other_axis_metadata_box_is_kept_whole():
    class Tagged(nn.meta.AxisMetadata):
        def __init__(self, value, tag):
            self.value, self.tag = value, tag

        def unbox(self):
            return self.value

        def replace_boxed(self, val):
            return Tagged(val, self.tag)

        def add_axis(self, index, params):
            return self

        def remove_axis(self, index, params):
            return self

    box = Tagged(jnp.ones(2), "hello")
    var = to_nnx_var("params", box)
    back = to_linen_var(var)
    assert isinstance(back, Tagged) and back.tag == "hello" and back.value is box.value
    assert box.value is not None  # the given box still holds its value


def test_vanilla_variables_become_bare_values():
    value = jnp.ones(3)
    assert is_vanilla_variable(nnx.Param(value))
    assert to_linen_var(nnx.Param(value)) is value
    assert not is_vanilla_variable(nnx.Param(value, note="x"))


def test_nnx_meta_round_trip_keeps_kind_and_metadata():
    var = nnx.BatchStat(jnp.ones(2), out_sharding=("embed",), note="hi")
    box = to_linen_var(var)
    assert isinstance(box, NNXMeta)
    again = to_nnx_var("batch_stats", box)
    assert type(again) is nnx.BatchStat
    assert again.get_metadata() == var.get_metadata()
    assert nn.get_partition_spec({"x": box})["x"] == jax.sharding.PartitionSpec("embed")


def test_nnx_meta_in_the_wrong_collection_is_an_error():
    box = to_linen_var(nnx.BatchStat(jnp.ones(2), note="x"))
    with pytest.raises(nnx.errors.GraphStructureError, match="batch_stats"):
        to_nnx_var("params", box)


def test_nnx_meta_axis_add_remove_is_exact_and_never_twice():
    box = NNXMeta(nnx.Param, jnp.ones((2, 3)), {"out_sharding": ("a", "b")})
    params = {nn.PARTITION_NAME: "layers"}
    stacked = box.add_axis(0, params)
    assert stacked.metadata["out_sharding"] == ("layers", "a", "b")
    restored = stacked.remove_axis(0, params)
    assert restored.metadata == box.metadata
    # Removing again does not eat a real name.
    assert restored.remove_axis(0, params).metadata == box.metadata
    assert box.add_axis(1, params).metadata["out_sharding"] == ("a", "layers", "b")
    # Without sharding names nothing changes.
    plain = NNXMeta(nnx.Param, 1.0, {"note": 1})
    assert plain.add_axis(0, params).metadata == {"note": 1}


def test_nnx_meta_with_an_older_sharding_key_still_follows_axes():
    # A box written with the pre-0.12 key (sharding_names) gets the scan axis too, and
    # its variable stores the names as out_sharding.
    box = NNXMeta(nnx.Param, jnp.ones((4, 2, 3)), {"sharding_names": ("a", "b")})
    stacked = box.add_axis(0, {nn.PARTITION_NAME: "layers"})
    with pytest.warns(DeprecationWarning, match="sharding_names"):
        spec = tuple(stacked.get_partition_spec())
        var = stacked.to_nnx_variable()
    assert spec == ("layers", "a", "b")
    assert var.out_sharding == ("layers", "a", "b")
    assert "sharding_names" not in var.get_metadata()


def test_nnx_meta_is_a_pytree_keeping_metadata():
    box = NNXMeta(nnx.Param, jnp.ones(2), {"out_sharding": ("a",)})
    doubled = jax.tree.map(lambda x: x * 2, box)
    assert isinstance(doubled, NNXMeta) and doubled.metadata == box.metadata
    assert float(doubled.value[0]) == 2.0


def test_variable_to_logically_partitioned_precedence_and_scan_name():
    v = nnx.Param(jnp.ones((2, 3)), out_sharding=("x", "y"), mesh=None,
                  sharding_rules=RULES)
    box = variable_to_logically_partitioned(v)
    assert isinstance(box, nn.LogicallyPartitioned)
    assert box.names == ("x", "y") and box.rules == RULES
    v2 = nnx.Param(jnp.ones((2, 3)), out_sharding=("a", "b"))
    assert variable_to_logically_partitioned(v2).names == ("a", "b")
    scanned = nnx.Param(jnp.ones((2, 4, 3)), out_sharding=("a", "b"), param_scan_axis=1,
                        **{PARTITION_NAME: "layers"})
    assert variable_to_logically_partitioned(scanned).names == ("a", "layers", "b")
    other = nnx.BatchStat(jnp.ones((4, 2)), out_sharding=("a",), param_scan_axis=1,
                          **{PARTITION_NAME: "layers"})
    assert variable_to_logically_partitioned(other).names == ("layers", "a")
    present = nnx.Param(jnp.ones((4, 2)), out_sharding=("layers", "a"),
                        **{PARTITION_NAME: "layers"})
    assert variable_to_logically_partitioned(present).names == ("layers", "a")
    plain = nnx.Param(jnp.ones(2))
    assert variable_to_logically_partitioned(plain) is plain.get_value()


def test_named_sharding_annotations_become_logically_partitioned_names():
    mesh = jax.make_mesh((2,), ("x",))
    v = nnx.Param(jnp.ones((2, 3)), out_sharding=jax.NamedSharding(mesh, jax.P("x")))
    box = variable_to_logically_partitioned(v)
    assert type(box) is nn.LogicallyPartitioned and box.names == ("x",)


def test_with_partitioning_makes_partitioned_boxes():
    init = with_partitioning(nnx.initializers.ones, ("embed", "mlp"))
    var = nnx.Param(init(jax.random.key(0), (2, 3)))
    box = to_linen_var(var)
    assert type(box) is nn.Partitioned and box.names == ("embed", "mlp")


def test_get_col_name():
    (path, _), = jax.tree_util.tree_flatten_with_path({"cache": {"k": 1}})[0]
    assert get_col_name(path) == "cache"
    assert get_col_name(("params", "x")) == "params"
    with pytest.raises(ValueError):
        get_col_name(())


def test_linen_vars_round_trip_through_nnx_attrs():
    mesh = _mesh()
    variables = {
        "params": {"Dense_0": {"kernel": nn.LogicallyPartitioned(jnp.ones((2, 4)),
                                                                 ("embed", "mlp"), mesh=mesh,
                                                                 rules=RULES),
                               "bias": jnp.zeros(4)}},
        "batch_stats": {"Dense_0": {"mean": nn.Partitioned(jnp.zeros(4), ("model",))}},
        "cache": {"k": jnp.ones(1)},
    }
    attrs = linen_vars_to_nnx_attrs(variables)
    assert type(attrs["Dense_0"]["mean"]) is nnx.BatchStat
    assert type(attrs["k"]) is nnx.Cache
    back = nnx_attrs_to_linen_vars(attrs)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back, is_leaf=nn.meta.is_axis_metadata),
                    jax.tree.leaves(variables, is_leaf=nn.meta.is_axis_metadata)):
        assert type(a) is type(b)
        if isinstance(b, nn.Partitioned):
            assert _box_fields(a) == _box_fields(b)
        else:
            assert a is b
    assert nn.get_partition_spec(back) == nn.get_partition_spec(variables)


def test_nnx_vars_round_trip_through_linen():
    attrs = {"w": nnx.Param(jnp.ones(2), out_sharding=("a",)),
             "s": nnx.BatchStat(jnp.zeros(2)), "i": nnx.Intermediate((jnp.ones(1),))}
    again = linen_vars_to_nnx_attrs(nnx_attrs_to_linen_vars(attrs))
    for name, var in attrs.items():
        assert type(again[name]) is type(var)
        assert again[name].get_metadata() == var.get_metadata()
        assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()),
                                         again[name].get_value(), var.get_value()))


def test_same_path_in_two_collections_is_an_error():
    with pytest.raises(nnx.errors.GraphStructureError, match=r"x\.y.*params.*batch_stats"):
        linen_vars_to_nnx_attrs({"params": {"x": {"y": 1.0}},
                                 "batch_stats": {"x": {"y": 2.0}}})


def test_non_variable_leaf_is_an_error():
    with pytest.raises(nnx.errors.GraphStructureError, match=r"a\.b"):
        nnx_attrs_to_linen_vars({"a": {"b": jnp.ones(2)}})
