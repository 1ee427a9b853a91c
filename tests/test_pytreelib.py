"""Data versus static markers and helpers (nnx.pytreelib), checked against flax.nnx."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


def test_data_annotation_makes_a_scalar_state():
    class Step(nnx.Module):
        count: nnx.Data[int]

        def __init__(self):
            self.count = 3
            self.label = 3  # unmarked: static

    step = Step()
    assert list(nnx.state(step)) == ["count"]
    assert int(step.count) == 3


def test_static_annotation_rejects_state_and_keeps_values_static():
    class Config(nnx.Module):
        sizes: nnx.Static[tuple]

        def __init__(self, sizes):
            self.sizes = sizes

    assert list(nnx.state(Config((1, 2)))) == []
    with pytest.raises(ValueError, match="static"):
        Config(jnp.ones(2))


def test_dataclass_fields_and_markers_match_flax_leaves():
    def build(lib):
        @lib.dataclass
        class Foo(lib.Pytree):
            a: int
            b: lib.Data[int]
            c: str = lib.static(default="x")
            d: int = lib.data(default=3)

        return Foo(1, 2)

    ours, theirs = build(nnx), build(flax_nnx)
    assert [int(x) for x in jax.tree.leaves(nnx.state(ours))] == \
        [int(x) for x in jax.tree.leaves(theirs)] == [2, 3]
    assert (ours.a, ours.c) == (theirs.a, theirs.c) == (1, "x")


def test_dataclass_rejects_plain_classes():
    with pytest.raises(TypeError, match="nnx.Pytree"):
        nnx.dataclass(type("Plain", (), {}))


def test_data_field_keywords_pass_to_dataclasses():
    field = nnx.data(default=1, repr=False)
    assert isinstance(field, dataclasses.Field) and field.default == 1 and not field.repr


@pytest.mark.parametrize("value", [jnp.ones(2), np.ones(2), 1, "s", [jnp.ones(1)], (1, 2),
                                   None, 2.5])
def test_is_data_agrees_with_flax(value):
    assert nnx.is_data(value) == flax_nnx.is_data(value)


def test_is_data_for_objects():
    assert nnx.is_data(nnx.Param(1.0)) and nnx.is_data(nnx.Rngs(0))
    assert nnx.is_data(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))


def test_has_data_lists_the_data_leaves():
    p, a = nnx.Param(1.0), jnp.zeros(1)
    found = nnx.has_data({"p": p, "x": 2, "nested": [a, "s"]})
    assert {id(x) for x in found} == {id(p), id(a)} and len(found) == 2


def test_register_data_type_makes_values_state():
    @dataclasses.dataclass(frozen=True)
    class Token:
        value: int

    assert not nnx.is_data(Token(1))
    assert nnx.register_data_type(Token) is Token
    assert nnx.is_data(Token(1))

    class Holder(nnx.Module):
        def __init__(self):
            self.token = Token(5)

    holder = Holder()
    graphdef, state = nnx.split(holder)
    assert state["token"] == Token(5)
    assert nnx.merge(graphdef, state).token == Token(5)


def test_register_data_type_rejects_non_classes():
    with pytest.raises(TypeError, match="expects a class"):
        nnx.register_data_type(3)


def test_check_pytree_finds_hidden_state():
    class Box(nnx.Module):
        pass

    class Holder:
        def __init__(self):
            self.p = nnx.Param(1.0)

    box = Box()
    nnx.check_pytree(box)
    box.__dict__["bad"] = Holder()
    with pytest.raises(nnx.errors.GraphStructureError, match="Box.bad"):
        nnx.check_pytree(box)
    with pytest.raises(TypeError, match="nnx.Pytree"):
        nnx.check_pytree(5)
