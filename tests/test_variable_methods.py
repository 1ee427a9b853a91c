"""Variable methods with flax.nnx 0.12's full signatures: get_value(index=),
set_value(value, index=), copy(value, **updates), get_metadata(exclude_required=).
Each is checked against what flax.nnx does with the same call."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


def both(value, **metadata):
    return nnx.Param(value, **metadata), flax_nnx.Param(value, **metadata)


@pytest.mark.parametrize("index", [0, 1, (0, 2), (slice(None), 1), ..., jnp.array([1, 0])])
def test_get_value_index_reads_like_flax(index):
    ours, theirs = both(jnp.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(ours.get_value(index=index),
                                  theirs.get_value(index=index))
    np.testing.assert_array_equal(ours.get_value(), theirs.get_value())


@pytest.mark.parametrize("index,value", [(1, 7.0), (1, jnp.array([1.0, 2.0, 3.0])),
                                         ((0, 2), 5.0), (..., 3.0),
                                         ((slice(None), 0), jnp.array([8.0, 9.0]))])
def test_set_value_index_writes_like_flax(index, value):
    ours, theirs = both(jnp.arange(6.0).reshape(2, 3))
    ours.set_value(value, index=index)
    theirs.set_value(value, index=index)
    np.testing.assert_array_equal(ours.get_value(), theirs.get_value())
    assert ours.shape == (2, 3) and ours.dtype == jnp.float32


def test_set_value_index_casts_to_the_held_dtype():
    p = nnx.Param(jnp.zeros(3, jnp.float32))
    p.set_value(2, index=0)
    assert p.dtype == jnp.float32 and p.value.tolist() == [2.0, 0.0, 0.0]


def test_set_value_index_shape_mismatch_raises_and_keeps_value():
    p = nnx.Param(jnp.zeros((2, 3)))
    with pytest.raises(nnx.errors.ShapeMismatchError):
        p.set_value(jnp.ones(2), index=1)
    with pytest.raises(ValueError):  # flax refuses the same write
        flax_nnx.Param(jnp.zeros((2, 3))).set_value(jnp.ones(2), index=1)
    assert p.value.tolist() == [[0.0] * 3] * 2


def test_set_value_index_on_a_list_and_dict():
    items = [1, 2, 3]
    p = nnx.Variable(items)
    p.set_value(9, index=0)
    assert p.get_value() == [9, 2, 3] and p.get_value(index=0) == 9
    d = nnx.Variable({"a": 1})
    d.set_value(2, index="b")
    assert d.get_value() == {"a": 1, "b": 2}


def test_set_value_keyword_name_is_value():
    p = nnx.Param(1.0)
    p.set_value(value=3.0)
    assert p.value == 3.0


def test_set_value_index_is_a_write_not_a_structure_change():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = nnx.graphdef(model)
    model.bias.set_value(1.0, index=0)
    assert nnx.graphdef(model) == before
    assert model.bias.value.tolist() == [1.0, 0.0, 0.0]


def test_copy_with_value_and_metadata_updates_like_flax():
    ours, theirs = both(jnp.ones(3), tag="a")
    o, t = ours.copy(jnp.zeros(2), tag="b", extra=1), theirs.copy(jnp.zeros(2), tag="b",
                                                                  extra=1)
    assert type(o) is nnx.Param and o is not ours
    np.testing.assert_array_equal(o.get_value(), t.get_value())
    assert (o.tag, o.extra) == (t.tag, t.extra) == ("b", 1)
    assert ours.tag == "a" and ours.shape == (3,) and not hasattr(ours, "extra")
    assert "_copy_ref" not in ours.copy(_copy_ref=False).get_metadata()
    plain = ours.copy()
    assert plain.get_metadata(exclude_required=True) == {"tag": "a"} and plain.value is ours.value


def test_get_metadata_exclude_required_like_flax():
    ours, theirs = both(jnp.ones(3), tag="a")
    assert ours.get_metadata(exclude_required=True) == theirs.get_metadata(
        exclude_required=True) == {"tag": "a"}
    assert ours.get_metadata(exclude_required=False) == theirs.get_metadata(
        exclude_required=False)
    assert ours.get_metadata(exclude_required=True) == {"tag": "a"}
    given = nnx.Param(1.0, eager_sharding=False, tag="b")
    assert given.get_metadata(exclude_required=True) == {"tag": "b"}
    assert given.get_metadata(exclude_required=False)["eager_sharding"] is False
    with pytest.raises(TypeError, match="exclude_required"):
        ours.get_metadata("tag", exclude_required=True)
    with pytest.raises(TypeError):
        theirs.get_metadata("tag", exclude_required=True)
    assert ours.get_metadata("missing", 5) == theirs.get_metadata("missing", 5) == 5


def test_an_overridden_get_value_serves_every_read_like_flax():
    for lib in (nnx, flax_nnx):
        class Shifted(lib.Param):
            def get_value(self, **kwargs):
                return super().get_value(**kwargs) + 3

        v = Shifted(jnp.array([1, 2]))
        assert v[...].tolist() == [4, 5] and int(v[0]) == 4
        assert v.get_value().tolist() == [4, 5] and v.get_raw_value().tolist() == [1, 2]


def test_an_overridden_set_value_serves_every_write_like_flax():
    for lib in (nnx, flax_nnx):
        class Offset(lib.Param):
            def set_value(self, value, **kwargs):
                super().set_value(value + 7, **kwargs)

        v = Offset(jnp.array(1))
        v[...] = 5
        assert int(v.get_raw_value()) == 12
        v.set_raw_value(jnp.array(5))  # the raw write skips the override
        assert int(v.get_raw_value()) == 5


def test_set_raw_value_checks_the_trace_and_records_new_shapes():
    import jax
    v = nnx.Param(jnp.zeros(2))
    layer = nnx.Dict(v=v)
    before = nnx.graphdef(layer)
    v.set_raw_value(jnp.zeros(3))  # a new shape is a structural change
    assert nnx.graphdef(layer).avals == (((3,), jnp.float32),) != before.avals

    @jax.jit
    def f(x):
        v.set_raw_value(x)

    with pytest.raises(nnx.errors.TraceContextError, match="set the raw value"):
        f(jnp.ones(3))
