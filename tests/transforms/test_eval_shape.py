"""Tests for ``nnx.eval_shape``: abstract outputs, abstract modules (the abstract-init
pattern), agreement with eager construction, and that arguments are never changed."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Model(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.norm = nnx.BatchNorm(dout, rngs=rngs)
        self.scale = nnx.Param(jnp.ones((dout,), jnp.bfloat16), out_sharding=("embed",),
                               note="custom metadata")
        self.steps = nnx.Variable(jnp.array(0, jnp.int32))
        self.table = jnp.zeros((2, dout))  # a raw array attribute is state too
        self.tied = self.linear  # a shared reference

    def __call__(self, x):
        self.steps[...] += 1
        return self.norm(self.linear(x)) * self.scale


def shapes(state):
    return jax.tree.map(lambda v: (tuple(v.shape), jnp.dtype(v.dtype)), nnx.to_pure_dict(state))


def metadata(state):
    return {path: (type(v), v.get_metadata()) if isinstance(v, nnx.Variable) else "array"
            for path, v in nnx.to_flat_state(state)}


def test_abstract_init_matches_eager_construction():
    abstract = nnx.eval_shape(lambda: Model(3, 4, rngs=nnx.Rngs(0)))
    eager = Model(3, 4, rngs=nnx.Rngs(0))
    abs_graphdef, abs_state = nnx.split(abstract)
    graphdef, state = nnx.split(eager)
    assert abs_graphdef == graphdef
    assert shapes(abs_state) == shapes(state)
    assert metadata(abs_state) == metadata(state)
    for _, leaf in nnx.to_flat_state(abs_state):
        value = leaf.value if isinstance(leaf, nnx.Variable) else leaf
        assert isinstance(value, jax.ShapeDtypeStruct)
    assert abstract.tied is abstract.linear
    assert abstract.scale.out_sharding == ("embed",)


def test_materialising_under_jit_gives_the_eager_values():
    abstract = nnx.eval_shape(lambda: Model(3, 4, rngs=nnx.Rngs(0)))
    built = nnx.jit(lambda: Model(3, 4, rngs=nnx.Rngs(0)))()
    eager = Model(3, 4, rngs=nnx.Rngs(0))
    assert nnx.graphdef(built) == nnx.graphdef(abstract)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(built)),
                 nnx.to_pure_dict(nnx.state(eager)))
    # the abstract state describes the real one exactly
    real = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nnx.to_pure_dict(nnx.state(eager)))
    assert nnx.to_pure_dict(nnx.state(abstract)) == real


def test_outputs_are_shape_dtype_structs_and_match_plain_jax():
    model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((8, 4))
    out = nnx.eval_shape(lambda m, x: {"y": m(x), "n": x.sum()}, model, x)
    expected = jax.eval_shape(lambda p, x: {"y": x @ p["kernel"] + p["bias"], "n": x.sum()},
                              {"kernel": model.kernel[...], "bias": model.bias[...]}, x)
    assert out == expected


def test_arguments_are_never_changed():
    model = Model(3, 4, rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(5)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    graphdef = nnx.graphdef(model)
    out = nnx.eval_shape(lambda m, x: m(x), model, jnp.ones((2, 3)))
    assert out == jax.ShapeDtypeStruct((2, 4), jnp.float32)
    nnx.eval_shape(lambda r: nnx.Linear(2, 2, rngs=r), rngs)
    assert int(rngs.default.count[...]) == 0
    assert int(model.steps[...]) == 0 and nnx.graphdef(model) == graphdef
    jax.tree.map(np.testing.assert_array_equal, before,
                 nnx.to_pure_dict(nnx.state(model)))
    assert isinstance(model.linear.kernel[...], jax.Array)

    def grows(m):
        m.extra = nnx.Param(jnp.ones(2))
        return m

    copy = nnx.eval_shape(grows, model)
    assert not hasattr(model, "extra")
    assert isinstance(copy.extra.value, jax.ShapeDtypeStruct)


def test_returned_argument_is_a_new_abstract_copy():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    copy = nnx.eval_shape(lambda m: m, model)
    assert copy is not model and copy.kernel is not model.kernel
    assert copy.kernel.value == jax.ShapeDtypeStruct((2, 3), jnp.float32)
    assert nnx.graphdef(copy) == nnx.graphdef(model)


def test_abstract_arguments_and_kwargs():
    spec = jax.ShapeDtypeStruct((5, 2), jnp.float16)

    def build(x, *, scale):
        layer = nnx.Linear(x.shape[-1], 7, rngs=nnx.Rngs(0))
        return layer, layer(x) * scale

    # Python numbers are traced, as in jax.eval_shape (close over sizes instead)
    layer, y = nnx.eval_shape(build, spec, scale=2.0)
    assert y == jax.ShapeDtypeStruct((5, 7), jnp.float32)
    assert layer.kernel.value.shape == (2, 7)


def test_shared_references_across_outputs():
    def build():
        a = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        b = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
        b.kernel = a.kernel
        return a, [b, a]

    a, (b, a2) = nnx.eval_shape(build)
    assert a2 is a and b.kernel is a.kernel


def test_abstract_variables_and_plain_values():
    var = nnx.eval_shape(lambda: nnx.Param(jnp.zeros((3,)), tag="w"))
    assert isinstance(var, nnx.Param) and var.tag == "w"
    assert var.value == jax.ShapeDtypeStruct((3,), jnp.float32)
    assert nnx.eval_shape(lambda: 3) == jax.ShapeDtypeStruct((), jnp.int32, weak_type=True)


def test_abstract_model_can_be_split_and_filtered():
    abstract = nnx.eval_shape(lambda: Model(3, 4, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    assert sorted(params) == ["linear", "norm", "scale"]
    assert params["scale"].value.dtype == jnp.bfloat16
    assert rest["norm"]["mean"].value.shape == (4,)


def test_errors_propagate_and_leave_arguments_alone():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    kernel = model.kernel[...]

    def bad(m):
        m.kernel[...] = jnp.zeros((2, 3))
        raise ArithmeticError("nope")

    with pytest.raises(ArithmeticError):
        nnx.eval_shape(bad, model)
    np.testing.assert_array_equal(model.kernel[...], kernel)
    with pytest.raises(ValueError, match="in_features|entries"):  # wrong input size
        nnx.eval_shape(lambda m: m(jnp.ones((1, 5))), model)
