"""Tests for nnx.vmap: results equal plain jax.vmap on pytrees; state semantics hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Counter(nnx.Module):
    def __init__(self):
        self.n = nnx.Variable(jnp.array(0))


class Scaled(nnx.Module):
    def __init__(self, w, scale):
        self.w = nnx.Param(w)
        self.scale = nnx.BatchStat(scale)

    def __call__(self, x):
        return x * self.w * self.scale


def _linear_pure(params, x):
    return x @ params["kernel"] + params["bias"]


# ------------------------------------------------------------------ basic mapping
def test_broadcast_module_mapped_input_matches_jax_vmap():
    model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (6, 3))
    out = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(model, x)
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    ref = jax.vmap(_linear_pure, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_mapped_module_matches_jax_vmap_over_stacked_params():
    kernels = jax.random.normal(jax.random.key(0), (5, 3, 2))
    biases = jax.random.normal(jax.random.key(1), (5, 2))
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    model.kernel = nnx.Param(kernels)
    model.bias = nnx.Param(biases)
    x = jax.random.normal(jax.random.key(2), (4, 3))
    out = nnx.vmap(lambda m, x: m(x), in_axes=(0, None), out_axes=1)(model, x)
    ref = jax.vmap(_linear_pure, in_axes=({"kernel": 0, "bias": 0}, None), out_axes=1)(
        {"kernel": kernels, "bias": biases}, x)
    assert out.shape == (4, 5, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_pytree_args_and_outputs_follow_prefixes():
    def f(pair, scale):
        a, b = pair
        return {"sum": a + b, "scaled": a * scale}

    a, b = jnp.arange(6.0).reshape(2, 3), jnp.arange(2.0)
    out = nnx.vmap(f, in_axes=((1, None), None), out_axes={"sum": 0, "scaled": 1})(
        (a, b), 2.0)
    ref = jax.vmap(f, in_axes=((1, None), None), out_axes={"sum": 0, "scaled": 1})(
        (a, b), 2.0)
    jax.tree.map(np.testing.assert_allclose, out, ref)


def test_state_axes_maps_params_and_broadcasts_the_rest():
    model = Scaled(jnp.arange(4.0), jnp.array(3.0))
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    out = nnx.vmap(lambda m, x: m(x), in_axes=(axes, None))(model, jnp.array(2.0))
    np.testing.assert_allclose(out, jnp.arange(4.0) * 6.0)


def test_keyword_arguments_are_moved_to_positions():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def f(m, x, scale=1.0):
        return m(x) * scale

    out = nnx.vmap(f, in_axes=(None, 0, None))(model, x=jnp.ones((3, 2)), scale=2.0)
    np.testing.assert_allclose(out, 2 * model(jnp.ones((3, 2))), rtol=1e-6)


def test_axis_size_without_mapped_inputs():
    out = nnx.vmap(lambda: jnp.arange(3), in_axes=(), axis_size=4)()
    assert out.shape == (4, 3)


def test_decorating_a_method():
    class Ensemble(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.arange(3.0))

        @nnx.vmap(in_axes=(0, None))
        def __call__(self, x):
            return self.w * x

    np.testing.assert_allclose(Ensemble()(2.0), jnp.arange(3.0) * 2)


def test_variable_argument():
    v = nnx.Param(jnp.arange(3.0))

    def f(v):
        v[...] = v[...] * 2
        return v[...] + 1

    out = nnx.vmap(f)(v)
    np.testing.assert_allclose(out, jnp.arange(3.0) * 2 + 1)
    np.testing.assert_allclose(v[...], jnp.arange(3.0) * 2)


# ------------------------------------------------------------------ ensembles
def _make_ensemble(n, seed=0):
    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return nnx.Linear(3, 2, rngs=rngs)

    return create(nnx.Rngs(seed))


def test_vmap_creates_a_stack_of_distinct_members():
    ensemble = _make_ensemble(4)
    assert ensemble.kernel.shape == (4, 3, 2) and ensemble.bias.shape == (4, 2)
    kernels = np.asarray(ensemble.kernel[...])
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(kernels[i], kernels[j])


def test_ensemble_forward_equals_loop_over_members():
    ensemble = _make_ensemble(3)
    x = jax.random.normal(jax.random.key(3), (5, 3))
    out = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, x)
    for i in range(3):
        ref = x @ ensemble.kernel[i] + ensemble.bias[i]
        np.testing.assert_allclose(out[i], ref, rtol=1e-6)


def test_ensemble_creation_is_deterministic():
    a, b = _make_ensemble(3, seed=7), _make_ensemble(3, seed=7)
    np.testing.assert_array_equal(a.kernel[...], b.kernel[...])


def test_created_stack_on_out_axis_1():
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=1)
    def create(rngs):
        return nnx.Linear(4, 2, rngs=rngs)

    assert create(nnx.Rngs(0)).kernel.shape == (4, 3, 2)


def test_shared_reference_created_inside_stays_shared():
    class Tied(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(2, 2, rngs=rngs)
            self.b = self.a

    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(rngs):
        return Tied(rngs)

    tied = create(nnx.Rngs(0))
    assert tied.a is tied.b and tied.a.kernel.shape == (2, 2, 2)


# ------------------------------------------------------------------ rngs
def test_split_rngs_gives_each_member_its_own_key():
    rngs = nnx.Rngs(0)

    @nnx.split_rngs(splits=5)
    @nnx.vmap(in_axes=0)
    def draw(rngs):
        return jax.random.normal(rngs(), ())

    values = np.asarray(draw(rngs))
    assert len(set(values.tolist())) == 5
    assert rngs.default.key.shape == ()  # restored afterwards


def test_broadcast_rngs_give_every_member_the_same_key():
    rngs = nnx.Rngs(0)
    values = nnx.vmap(lambda r, x: jax.random.normal(r(), ()) + x, in_axes=(None, 0))(
        rngs, jnp.zeros(3))
    assert np.allclose(values, values[0])
    assert int(rngs.default.count[...]) == 1  # the unmapped count change is written back


def test_dropout_masks_differ_per_member():
    class Model(nnx.Module):
        def __init__(self):
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))

        def __call__(self, x):
            return self.drop(x)

    model = Model()
    axes = nnx.StateAxes({"dropout": 0, ...: None})

    @nnx.split_rngs(splits=4, only="dropout")
    @nnx.vmap(in_axes=(axes, None))
    def forward(model, x):
        return model(x)

    masks = np.asarray(forward(model, jnp.ones(64)) != 0)
    assert masks.shape == (4, 64)
    assert len({m.tobytes() for m in masks}) == 4
    assert model.drop.rngs.key.shape == ()


def test_rng_state_filter_selects_keys_and_counts():
    axes = nnx.StateAxes({nnx.RngState: 0, ...: None})
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=3):
        keys = nnx.vmap(lambda r: jax.random.key_data(r()), in_axes=(axes,))(rngs)
    assert keys.shape[0] == 3 and len({k.tobytes() for k in np.asarray(keys)}) == 3


# ------------------------------------------------------------------ state semantics
def test_batchnorm_stats_with_axis_name_match_full_batch():
    x = jax.random.normal(jax.random.key(0), (8, 3)) * 2 + 1
    bn = nnx.BatchNorm(3, axis_name="batch", rngs=nnx.Rngs(0))
    ref = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    y = nnx.vmap(lambda m, x: m(x[None])[0], in_axes=(None, 0), axis_name="batch")(bn, x)
    y_ref = ref(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], ref.mean[...], rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], ref.var[...], rtol=1e-5)


def test_mapped_batchnorm_stats_come_back_stacked():
    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(rngs):
        return nnx.BatchNorm(3, rngs=rngs)

    bns = create(nnx.Rngs(0))
    x = jnp.stack([jnp.ones((4, 3)), 3 * jnp.ones((4, 3))])
    nnx.vmap(lambda m, x: m(x))(bns, x)
    np.testing.assert_allclose(bns.mean[...], [[0.01] * 3, [0.03] * 3], rtol=1e-5)


def test_broadcast_state_changed_identically_is_written_back():
    counter = Counter()

    def f(c, x):
        c.n[...] += 1
        return x

    nnx.vmap(f, in_axes=(None, 0))(counter, jnp.ones(4))
    assert int(counter.n[...]) == 1


def test_broadcast_state_changed_per_member_is_an_error_and_leaves_model_unchanged():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(bn))
    with pytest.raises(ValueError, match=r"(mean|var) is broadcast"):
        nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(bn, jnp.ones((2, 4, 3)))
    after = nnx.state(bn)
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_exception_inside_leaves_model_unchanged():
    model = Scaled(jnp.arange(3.0), jnp.ones(3))

    def f(m, x):
        m.w[...] = m.w[...] * 10
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nnx.vmap(f, in_axes=(0, None))(model, 1.0)
    np.testing.assert_array_equal(model.w[...], jnp.arange(3.0))


def test_mapped_state_mutation_is_visible_outside():
    model = Scaled(jnp.arange(3.0), jnp.array(2.0))

    def f(m):
        m.w[...] = m.w[...] + m.scale[...]

    nnx.vmap(f, in_axes=(nnx.StateAxes({nnx.Param: 0, ...: None}),))(model)
    np.testing.assert_allclose(model.w[...], jnp.arange(3.0) + 2)


def test_new_attribute_inside_comes_out_mapped():
    model = Scaled(jnp.arange(3.0), jnp.ones(3))

    def f(m):
        m.extra = nnx.Variable(m.w[...] * 2)

    nnx.vmap(f, in_axes=(nnx.StateAxes({nnx.Param: 0, nnx.Variable: 0}),))(model)
    np.testing.assert_allclose(model.extra[...], jnp.arange(3.0) * 2)


def test_shared_module_across_arguments_keeps_identity():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def f(a, b, x):
        assert a is b
        return a(x)

    out = nnx.vmap(f, in_axes=(None, None, 0))(layer, layer, jnp.ones((3, 2)))
    assert out.shape == (3, 2)


def test_returning_an_input_module_gives_the_caller_object():
    model = Scaled(jnp.arange(3.0), jnp.ones(3))
    out = nnx.vmap(lambda m: m, in_axes=(0,), out_axes=0)(model)
    assert out is model


# ------------------------------------------------------------------ composition
def test_per_example_grads_match_jax():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 3))

    def loss(m, x):
        return (m(x) ** 2).sum()

    grads = nnx.vmap(nnx.grad(loss), in_axes=(None, 0))(model, x)
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    ref = jax.vmap(jax.grad(lambda p, x: (_linear_pure(p, x) ** 2).sum()),
                   in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(grads["kernel"][...], ref["kernel"], rtol=1e-5)
    np.testing.assert_allclose(grads["bias"][...], ref["bias"], rtol=1e-5)


def test_vmap_inside_jit_and_jit_inside_vmap():
    ensemble = _make_ensemble(3)
    x = jnp.ones((2, 3))
    inner = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))
    a = nnx.jit(inner)(ensemble, x)
    b = nnx.vmap(nnx.jit(lambda m, x: m(x)), in_axes=(0, None))(ensemble, x)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, inner(ensemble, x), rtol=1e-6)


def test_stateful_update_inside_jit():
    counter = Counter()
    step = nnx.jit(nnx.vmap(lambda c, x: (c.n.__setitem__(..., c.n[...] + 1), x)[1],
                            in_axes=(None, 0)))
    step(counter, jnp.ones(2))
    step(counter, jnp.ones(2))
    assert int(counter.n[...]) == 2


# ------------------------------------------------------------------ transform_metadata
def test_transform_metadata_adds_and_removes_the_axis_name():
    seen = []

    class Block(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.linear = nnx.Linear(2, 3, kernel_init=init, rngs=rngs)
            seen.append(self.linear.kernel.out_sharding)

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
        return Block(rngs)

    block = create(nnx.Rngs(0))
    assert seen == [("embed", "mlp")]
    assert block.linear.kernel.out_sharding == ("layers", "embed", "mlp")
    assert block.linear.kernel.shape == (4, 2, 3)
    assert "out_sharding" not in block.linear.bias.get_metadata()

    @nnx.vmap(in_axes=(0, None), transform_metadata={nnx.PARTITION_NAME: "layers"})
    def apply(block, x):
        seen.append(block.linear.kernel.out_sharding)
        return block.linear(x)

    assert apply(block, jnp.ones((1, 2))).shape == (4, 1, 3)
    assert seen[-1] == ("embed", "mlp")
    assert block.linear.kernel.out_sharding == ("layers", "embed", "mlp")


def test_transform_metadata_at_out_axis_1():
    @nnx.vmap(in_axes=0, out_axes=1, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(x):
        return nnx.Param(x, out_sharding=("a",))

    p = create(jnp.ones((4, 2)))
    assert p.shape == (2, 4) and p.out_sharding == ("a", "layers")


def test_transform_metadata_wrong_name_is_a_clear_error():
    p = nnx.Param(jnp.ones((4, 2)), out_sharding=("batch", "a"))
    with pytest.raises(ValueError, match="expected 'layers' at position 0"):
        nnx.vmap(lambda p: p[...], transform_metadata={nnx.PARTITION_NAME: "layers"})(p)
    assert p.out_sharding == ("batch", "a")


def test_transform_metadata_needs_a_partition_name():
    with pytest.raises(ValueError, match="partition_name"):
        nnx.vmap(lambda x: x, transform_metadata={"foo": 1})


# ------------------------------------------------------------------ errors
def test_non_exhaustive_state_axes_is_a_clear_error():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"no filter of StateAxes.*(bias|mean|scale|var)"):
        nnx.vmap(lambda m: m.scale[...], in_axes=(nnx.StateAxes({nnx.Param: 0}),))(bn)


def test_in_axes_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 entries but the function was called with 1"):
        nnx.vmap(lambda x: x, in_axes=(0, 0))(jnp.ones(3))


def test_carry_in_vmap_is_rejected():
    with pytest.raises(ValueError, match="only meaningful in nnx.scan"):
        nnx.vmap(lambda x: x, in_axes=nnx.Carry)
    with pytest.raises(ValueError, match="only meaningful in nnx.scan"):
        nnx.vmap(lambda x: x, in_axes=(nnx.StateAxes({...: nnx.Carry}),))


def test_state_axes_on_an_array_is_rejected():
    with pytest.raises(ValueError, match="not a module or variable"):
        nnx.vmap(lambda x: x, in_axes=(nnx.StateAxes({...: 0}),))(jnp.ones(3))


def test_invalid_axis_value_is_rejected():
    with pytest.raises(TypeError, match="expected an int or None"):
        nnx.vmap(lambda x: x, in_axes=("zero",))


def test_shared_state_with_two_axes_is_an_error():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    # names both paths and both axes, with flax's phrase (users search for it)
    with pytest.raises(ValueError, match=r"shared with[\s\S]*The following nodes have "
                       r"different prefixes: Param at args\[0\]\.\w+: None, "
                       r"args\[1\]\.\w+: 0"):
        nnx.vmap(lambda a, b: a.kernel[...], in_axes=(None, 0))(layer, layer)


def test_wrong_axis_for_state_shape_raises():
    model = Scaled(jnp.arange(3.0), jnp.array(2.0))
    with pytest.raises(ValueError, match=r"args\[0\]\.(scale|w) has shape .* no axis 1"):
        nnx.vmap(lambda m: m.w[...], in_axes=(1,))(model)
    np.testing.assert_array_equal(model.w[...], jnp.arange(3.0))


def test_unsplit_rng_key_mapped_gives_a_hint():
    with pytest.raises(ValueError, match="split_rngs"):
        nnx.vmap(lambda r: r())(nnx.Rngs(0))


def test_inconsistent_sizes_name_the_values():
    with pytest.raises(ValueError, match=r"different sizes .*args\[0\].*args\[1\]"):
        nnx.vmap(lambda a, b: a + b)(jnp.ones(3), jnp.ones(4))


def test_state_axes_mapping_api():
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    assert axes.filters == (nnx.Param, ...) and axes.axes == (0, None)
    assert axes[nnx.Param] == 0 and len(axes) == 2 and list(axes) == [nnx.Param, ...]
    assert axes == nnx.StateAxes([(nnx.Param, 0), (..., None)])
    assert hash(axes) == hash(nnx.StateAxes({nnx.Param: 0, ...: None}))
    assert repr(axes) == "StateAxes({Param: 0, ...: None})"


def test_mutating_a_captured_module_is_a_clear_error():
    counter = Counter()

    def f(x):
        counter.n[...] += 1
        return x

    with pytest.raises(nnx.TraceContextError, match="captured"):
        nnx.vmap(f)(jnp.ones(3))
    assert int(counter.n[...]) == 0
