"""Ref-backed variables (``ref=True`` / ``hijax=True``): modules in plain JAX transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx
from nnxlib.errors import ImmutableVariableError


def _mlp(ref: bool = True) -> nnx.Module:
    with nnx.var_defaults(ref=ref):
        return nnx.Sequential(nnx.Linear(2, 8, rngs=nnx.Rngs(0)), nnx.relu,
                              nnx.Linear(8, 1, rngs=nnx.Rngs(1)))


def _data():
    x = jnp.linspace(-1, 1, 16).reshape(8, 2)
    return x, 2 * x[:, :1] - x[:, 1:]


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


# ----------------------------------------------------------------------- creation
@pytest.mark.parametrize("flag", ["ref", "hijax"])
def test_every_kind_is_ref_backed(flag):
    for kind in (nnx.Variable, nnx.Param, nnx.BatchStat, nnx.Cache, nnx.Intermediate):
        v = kind(jnp.arange(3.0), **{flag: True})
        assert isinstance(v.get_raw_value(), jax.Ref)
        assert getattr(v, flag) is True
        np.testing.assert_array_equal(v[...], [0.0, 1.0, 2.0])
        assert type(v[...]) is not type(v.get_raw_value())


def test_default_mode_is_unchanged():
    v = nnx.Param(jnp.ones(2))
    assert not isinstance(v.get_raw_value(), jax.Ref)
    assert not v.ref and not v.hijax and v.mutable


def test_var_defaults_call_context_and_decorator():
    with nnx.var_defaults(ref=True):
        assert isinstance(nnx.Param(1.0).get_raw_value(), jax.Ref)
    assert not isinstance(nnx.Param(1.0).get_raw_value(), jax.Ref)

    @nnx.var_defaults(hijax=True)
    def make():
        return nnx.Linear(1, 1, rngs=nnx.Rngs(0))

    assert isinstance(make().kernel.get_raw_value(), jax.Ref)
    assert not isinstance(nnx.Linear(1, 1, rngs=nnx.Rngs(0)).kernel.get_raw_value(), jax.Ref)
    d = nnx.var_defaults()
    assert dict(d) == {"hijax": False, "ref": False}


def test_raw_value_round_trip():
    v = nnx.Param(jnp.zeros(2), ref=True)
    ref = v.get_raw_value()
    v.set_raw_value(jnp.ones(2))  # a plain value goes into the ref
    assert v.get_raw_value() is ref
    np.testing.assert_array_equal(ref[...], [1.0, 1.0])
    other = jax.new_ref(jnp.full(2, 5.0))
    v.set_raw_value(other)  # a ref is held as is
    assert v.get_raw_value() is other and v[...].tolist() == [5.0, 5.0]


def test_eager_write_keeps_ref_and_old_reads():
    v = nnx.Param(jnp.zeros(3), ref=True)
    ref, before = v.get_raw_value(), v[...]
    v[...] = jnp.ones(3)
    v[1] = 7.0
    assert v.get_raw_value() is ref
    assert v[...].tolist() == [1.0, 7.0, 1.0] and before.tolist() == [0.0, 0.0, 0.0]
    v.value = jnp.zeros((2, 2))  # a new shape: a new ref
    assert isinstance(v.get_raw_value(), jax.Ref) and v.shape == (2, 2)


# --------------------------------------------------------------------- plain jit
def test_jit_argument_and_closure_mutate_in_place():
    v = nnx.Variable(jnp.array(0), ref=True)
    ref = v.get_raw_value()

    @jax.jit
    def inc(v):
        v[...] += 1

    inc(v)
    inc(v)
    jax.jit(lambda: v.__setitem__(..., v[...] + 10))()
    jax.jit(lambda: v.__setitem__(..., v[...] + 10))()
    assert int(v[...]) == 22 and v.get_raw_value() is ref


def test_train_step_closed_over_with_plain_jax():
    model = _mlp()
    with nnx.var_defaults(ref=True):
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x, y = _data()
    kernel_ref = model.layers[0].kernel.get_raw_value()

    @jax.jit
    def step(x, y):
        loss, grads = jax.value_and_grad(_loss)(nnx.with_vars(model, mutable=False), x, y)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(x, y)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert int(optimizer.step[...]) == 30
    assert model.layers[0].kernel.get_raw_value() is kernel_ref  # updated in place


def test_train_step_with_arguments_matches_nnx_jit():
    x, y = _data()
    results = []
    for plain in (True, False):
        model = _mlp(ref=plain)
        optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        if plain:
            @jax.jit
            def step(model, optimizer, x, y):
                loss, grads = jax.value_and_grad(_loss)(
                    nnx.with_vars(model, mutable=False), x, y)
                optimizer.update(model, grads)
                return loss
        else:
            @nnx.jit
            def step(model, optimizer, x, y):
                loss, grads = nnx.value_and_grad(_loss)(model, x, y)
                optimizer.update(model, grads)
                return loss
        for _ in range(3):
            step(model, optimizer, x, y)
        results.append(np.asarray(model.layers[0].kernel[...]))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_grads_of_immutable_view_have_param_paths():
    model = _mlp()
    x, y = _data()
    grads = jax.grad(_loss)(nnx.with_vars(model, mutable=False), x, y)
    state = nnx.state(grads, nnx.Param)
    paths = {p for p, _ in nnx.to_flat_state(state)}
    assert paths == {("layers", 0, "kernel"), ("layers", 0, "bias"),
                     ("layers", 2, "kernel"), ("layers", 2, "bias")}
    params = nnx.state(nnx.with_vars(model, mutable=False), nnx.Param)
    grads2 = jax.grad(lambda p: _loss(nnx.merge(nnx.graphdef(model), p), x, y))(params)
    np.testing.assert_allclose(grads2["layers"][0]["kernel"][...],
                               grads.layers[0].kernel[...], rtol=1e-6)


def test_immutable_view_write_names_path_and_leaves_model():
    model = _mlp()
    before = model.layers[2].bias[...]
    frozen = nnx.with_vars(model, mutable=False)
    assert not frozen.layers[2].bias.mutable and not frozen.layers[2].bias.ref
    with pytest.raises(ImmutableVariableError, match=r"layers\[2\]\.bias"):
        frozen.layers[2].bias[...] = jnp.ones(1)
    with pytest.raises(ImmutableVariableError):
        jax.jit(lambda m: m.layers[2].bias.__setitem__(..., jnp.ones(1)))(frozen)
    np.testing.assert_array_equal(model.layers[2].bias[...], before)
    again = nnx.with_vars(frozen, mutable=True)
    assert again.layers[2].bias.ref and isinstance(again.layers[2].bias.get_raw_value(), jax.Ref)


def test_with_vars_shares_unchanged_and_copies_changed():
    class Foo(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(jnp.array(1.0), ref=True)
            self.b = nnx.BatchStat(jnp.array(2.0))

    m = Foo()
    view = nnx.with_vars(m, ref=True)
    assert view is not m and view.a is m.a and view.b is not m.b
    view.a[...] = 5.0  # shared: visible in m
    view.b[...] = 7.0  # a copy: m.b unchanged
    assert float(m.a[...]) == 5.0 and float(m.b[...]) == 2.0
    only = nnx.with_vars(m, ref=True, only=nnx.Param)
    assert only.b is m.b


def test_with_vars_duplicate_raises():
    shared = nnx.Param(jnp.zeros(1))
    node = nnx.List([shared, shared])
    with pytest.raises(ValueError, match="Found duplicate at paths"):
        nnx.with_vars(node, ref=True)


# ------------------------------------------------------------- pytree values
def test_pytree_value_and_dynamic_structure_in_jit():
    v = nnx.Variable({"a": jnp.array(0), "b": jnp.array(2)}, ref=True)

    @jax.jit
    def inc_and_double(v):
        v["a"] += 1
        v["b"] *= 2

    inc_and_double(v)
    inc_and_double(v)
    assert int(v["a"]) == 2 and int(v["b"]) == 8

    metrics = nnx.Variable({}, ref=True)

    @jax.jit
    def record(x, metrics):
        metrics["mean"] = jnp.mean(x)
        return x

    record(jnp.arange(4.0), metrics)
    assert float(metrics["mean"]) == 1.5
    record(jnp.ones(4), metrics)  # the key exists now: written in place
    assert float(metrics["mean"]) == 1.0

    closed = nnx.Variable({}, ref=True)
    jax.jit(lambda x: closed.__setitem__("sum", x.sum()))(jnp.ones(3))
    assert float(closed["sum"]) == 3.0


# ----------------------------------------------------- other plain transforms
class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.count[...] += 1
        return jax.nn.relu(self.linear(x))


def _stack():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return Block(rngs)

    return nnx.with_vars(make(nnx.Rngs(0).fork(split=3)), ref=True)


def test_scan_over_layers_vmap_and_checkpoint():
    stack = _stack()
    x = jnp.ones((2, 4))
    y, _ = jax.lax.scan(lambda h, block: (block(h), None), x, stack)
    expected = x
    for i in range(3):
        expected = jax.nn.relu(expected @ stack.linear.kernel[...][i] + stack.linear.bias[...][i])
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert stack.count[...].tolist() == [1, 1, 1]
    jax.jit(lambda x: jax.lax.scan(lambda h, b: (b(h), None), x, stack))(x)
    assert stack.count[...].tolist() == [2, 2, 2]
    out = jax.vmap(lambda block, x: block(x), in_axes=(0, None))(stack, x)
    assert out.shape == (3, 2, 4) and stack.count[...].tolist() == [3, 3, 3]

    model = _mlp()
    xs, ys = _data()
    g1 = jax.grad(lambda m: jax.checkpoint(_loss)(m, xs, ys))(nnx.with_vars(model, mutable=False))
    g2 = jax.grad(_loss)(nnx.with_vars(model, mutable=False), xs, ys)
    np.testing.assert_allclose(g1.layers[0].kernel[...], g2.layers[0].kernel[...], rtol=1e-6)


def test_nnx_transforms_on_ref_modules():
    stack = _stack()
    x = jnp.ones((2, 4))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(h, block):
        return block(h)

    run(x, stack)

    @nnx.vmap(in_axes=(0, None))
    def each(block, x):
        return block(x)

    assert each(stack, x).shape == (3, 2, 4)
    assert stack.count[...].tolist() == [2, 2, 2]
    assert isinstance(stack.count.get_raw_value(), jax.Ref)

    model = _mlp()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    ref = model.layers[0].kernel.get_raw_value()
    xs, ys = _data()

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_loss)(model, x, y)
        optimizer.update(model, grads)
        return loss

    l0 = step(model, optimizer, xs, ys)
    l1 = step(model, optimizer, xs, ys)
    assert float(l1) < float(l0) and model.layers[0].kernel.get_raw_value() is ref
    loss, grads = nnx.value_and_grad(_loss)(model, xs, ys)  # eager nnx.grad
    assert model.layers[0].kernel.get_raw_value() is ref
    assert nnx.remat(lambda m, x: m(x))(model, xs).shape == (8, 1)
    assert nnx.cond(True, lambda m: m(xs), lambda m: -m(xs), model).shape == (8, 1)


def test_split_merge_state_share_refs():
    model = _mlp()
    graphdef, state = nnx.split(model)
    again = nnx.merge(graphdef, state)
    assert again.layers[0].kernel is model.layers[0].kernel
    leaves = jax.tree.leaves(nnx.state(model))
    assert all(isinstance(leaf, jax.Ref) for leaf in leaves)

    @jax.jit
    def zero(graphdef, state):
        m = nnx.merge(graphdef, state)
        m.layers[0].bias[...] = jnp.zeros(8)

    model.layers[0].bias[...] = jnp.ones(8)
    zero(graphdef, state)
    assert float(model.layers[0].bias[...].sum()) == 0.0


# ------------------------------------------------------------------------ errors
def test_returned_and_escaped_refs_raise():
    model = _mlp()
    with pytest.raises(ValueError, match="mutable array references cannot be returned"):
        jax.jit(lambda m: m)(model)
    box = []

    @jax.jit
    def leak(x):
        box.append(nnx.Variable(x, ref=True))
        return x

    leak(1.0)
    with pytest.raises(jax.errors.UnexpectedTracerError):
        box[0][...]
    c = nnx.Variable(jnp.array(0.0), ref=True)
    with pytest.raises(Exception, match="Move the array reference to be an argument"):
        jax.vmap(lambda x: c.__setitem__(..., x.sum()))(jnp.ones((3, 2)))


def test_value_created_inside_nnx_jit_comes_out_ref_backed():
    @nnx.jit
    def make():
        return nnx.with_vars(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), ref=True)

    out = make()
    assert isinstance(out.kernel.get_raw_value(), jax.Ref)
    v = nnx.Variable(jnp.zeros(2), ref=True)

    @nnx.jit
    def grow(v):
        v.value = jnp.ones(5)

    grow(v)
    assert v.shape == (5,) and isinstance(v.get_raw_value(), jax.Ref)


def test_copy_makes_new_refs_and_pickle_round_trip():
    import pickle

    v = nnx.Param(jnp.ones(2), ref=True, tag="t")
    c = v.copy()
    assert c.get_raw_value() is not v.get_raw_value()
    c[...] = jnp.zeros(2)
    assert v[...].tolist() == [1.0, 1.0]
    back = pickle.loads(pickle.dumps(v))
    assert isinstance(back.get_raw_value(), jax.Ref) and back.tag == "t"
    plain = v.copy(ref=False)
    assert not isinstance(plain.get_raw_value(), jax.Ref)


def test_eager_writes_keep_the_ref_and_fall_back_for_other_shapes_and_dtypes():
    v = nnx.BatchStat(jnp.zeros(3), ref=True)
    ref = v.get_raw_value()
    v[...] = jnp.arange(3.0)  # same shape and dtype: the same ref holds the new buffer
    assert v.get_raw_value() is ref and ref[...].tolist() == [0.0, 1.0, 2.0]
    v.value = jnp.ones(4)  # a new shape: a new ref
    assert v.get_raw_value() is not ref and v.shape == (4,)
    v.value = jnp.ones(4, jnp.int32)  # a new dtype as well
    assert v.dtype == jnp.int32 and isinstance(v.get_raw_value(), jax.Ref)
    frozen = nnx.with_vars(nnx.Dict(s=v), mutable=False)
    with pytest.raises(ImmutableVariableError, match="s"):
        frozen.s[...] = jnp.zeros(4, jnp.int32)
    assert v[...].tolist() == [1, 1, 1, 1]
