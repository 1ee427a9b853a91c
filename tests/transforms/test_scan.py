"""Tests for nnx.scan: results equal jax.lax.scan / Python loops; state semantics hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.linear(x)))


def _stack(n, seed=0, cls=Block, **tm):
    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=0, out_axes=0, **tm)
    def create(rngs):
        return cls(rngs)

    return create(nnx.Rngs(seed))


def _unstack(stacked, n):
    graphdef, state = nnx.split(stacked)
    return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(n)]


class Acc(nnx.Module):
    def __init__(self):
        self.total = nnx.Variable(jnp.array(0.0))
        self.steps = nnx.Variable(jnp.array(0))


# ------------------------------------------------------------------ plain values
def test_cumsum_matches_lax_scan():
    xs = jnp.arange(5.0)

    def f(c, x):
        return c + x, c * x

    out = nnx.scan(f)(1.0, xs)
    ref = jax.lax.scan(f, 1.0, xs)
    jax.tree.map(np.testing.assert_allclose, out, ref)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("unroll", [1, 2, True])
def test_reverse_and_unroll_match_lax_scan(reverse, unroll):
    xs = jax.random.normal(jax.random.key(0), (6, 2))

    def f(c, x):
        c = jnp.tanh(c + x)
        return c, c.sum()

    out = nnx.scan(f, reverse=reverse, unroll=unroll)(jnp.zeros(2), xs)
    ref = jax.lax.scan(f, jnp.zeros(2), xs, reverse=reverse, unroll=unroll)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), out, ref)


def test_length_with_carry_only():
    out = nnx.scan(lambda c: c * 2, in_axes=nnx.Carry, out_axes=nnx.Carry, length=5)(1.0)
    assert float(out) == 32.0


def test_scan_and_stack_on_other_axes():
    xs = jnp.arange(12.0).reshape(3, 4)  # scan over axis 1 (4 steps)

    def f(c, x):
        return c + x.sum(), jnp.stack([x, x])

    total, ys = nnx.scan(f, in_axes=(nnx.Carry, 1), out_axes=(nnx.Carry, 2))(0.0, xs)
    assert float(total) == float(xs.sum())
    assert ys.shape == (2, 3, 4)
    np.testing.assert_allclose(ys[0], xs)


def test_broadcast_argument():
    def f(c, x, w):
        return c + x * w, None

    total, _ = nnx.scan(f, in_axes=(nnx.Carry, 0, None), out_axes=(nnx.Carry, 0))(
        0.0, jnp.arange(4.0), 3.0)
    assert float(total) == 18.0


def test_no_carry_is_a_map():
    out = nnx.scan(lambda x: x * 2, in_axes=0, out_axes=0)(jnp.arange(3.0))
    np.testing.assert_allclose(out, [0.0, 2.0, 4.0])


def test_keyword_arguments_are_moved_to_positions():
    def f(c, x):
        return c + x, x

    total, _ = nnx.scan(f)(0.0, x=jnp.arange(3.0))
    assert float(total) == 3.0


# ------------------------------------------------------------------ scan over layers
def test_scan_over_layers_equals_python_loop():
    n = 4
    stack = _stack(n)
    layers = _unstack(nnx.clone(stack), n)
    x = jax.random.normal(jax.random.key(1), (5, 3))

    y = nnx.scan(lambda x, b: b(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, stack)

    ref = x
    for layer in layers:
        ref = layer(ref)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # BatchNorm statistics of each layer were updated, stacked
    np.testing.assert_allclose(stack.bn.mean[...],
                               jnp.stack([layer.bn.mean[...] for layer in layers]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stack.bn.var[...],
                               jnp.stack([layer.bn.var[...] for layer in layers]),
                               rtol=1e-5)


def test_scan_over_layers_compiles_one_layer_body():
    n = 6
    stack = _stack(n)
    graphdef, state = nnx.split(stack)

    def forward(state, x):
        stack = nnx.merge(graphdef, state)
        return nnx.scan(lambda x, b: b(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(
            x, stack)

    jaxpr = jax.make_jaxpr(forward)(state, jnp.ones((2, 3))).jaxpr
    scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1
    assert scans[0].params["length"] == n
    body = scans[0].params["jaxpr"].jaxpr
    dots = [e for e in body.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 1
    assert not [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def test_scan_over_layers_inside_jit_and_grad_matches_loop():
    n = 3
    stack = _stack(n)
    layers = _unstack(nnx.clone(stack), n)
    x = jax.random.normal(jax.random.key(2), (4, 3))

    @nnx.jit
    def loss(stack, x):
        body = nnx.scan(lambda x, b: b(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        return (body(x, stack) ** 2).sum()

    grads = nnx.jit(nnx.grad(loss))(stack, x)

    def loop_loss(params_list, x):
        for layer, p in zip(layers, params_list):
            graphdef, _, rest = nnx.split(layer, nnx.Param, ...)
            x = nnx.merge(graphdef, p, rest)(x)
        return (x ** 2).sum()

    params_list = [nnx.state(layer, nnx.Param) for layer in layers]
    ref = jax.grad(loop_loss)(params_list, x)
    np.testing.assert_allclose(
        grads["linear"]["kernel"][...],
        jnp.stack([r["linear"]["kernel"][...] for r in ref]), rtol=1e-4, atol=1e-6)


def test_stacked_dropout_layers_use_their_own_keys():
    class Drop(nnx.Module):
        def __init__(self, rngs):
            self.drop = nnx.Dropout(0.5, rngs=rngs)

    stack = _stack(3, cls=Drop)
    assert stack.drop.rngs.key.shape == (3,)

    def f(x, layer):
        return x, layer.drop(jnp.ones(32))

    _, masks = nnx.scan(f, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))(0.0, stack)
    assert len({np.asarray(m != 0).tobytes() for m in masks}) == 3
    np.testing.assert_array_equal(stack.drop.rngs.count[...], [1, 1, 1])


def test_split_rngs_gives_each_step_its_own_key():
    rngs = nnx.Rngs(0)

    @nnx.split_rngs(splits=4)
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def draw(c, rngs):
        return c, jax.random.normal(rngs(), ())

    _, values = draw(0.0, rngs)
    assert len(set(np.asarray(values).tolist())) == 4


def test_broadcast_rngs_draw_the_same_key_every_step():
    rngs = nnx.Rngs(0)

    def f(c, rngs):
        return c, jax.random.normal(rngs(), ())

    _, values = nnx.scan(f, in_axes=(nnx.Carry, None), out_axes=(nnx.Carry, 0), length=3)(
        0.0, rngs)
    assert np.allclose(values, values[0])
    assert int(rngs.default.count[...]) == 0


def test_sow_inside_scanned_layer_comes_back_stacked():
    class Layer(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)

        def __call__(self, x):
            y = self.linear(x)
            self.sow(nnx.Intermediate, "y", y)
            return y

    stack = _stack(3, cls=Layer)
    nnx.scan(lambda x, layer: layer(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(
        jnp.ones(2), stack)
    ys = nnx.pop(stack, nnx.Intermediate)
    leaves = jax.tree.leaves(ys)
    assert len(leaves) == 1 and leaves[0].shape[0] == 3


# ------------------------------------------------------------------ carried modules
def test_carried_module_state_is_updated_each_step():
    acc = Acc()

    def step(acc, x):
        acc.total[...] += x
        acc.steps[...] += 1
        return acc, acc.total[...]

    acc_out, partial = nnx.scan(step)(acc, jnp.arange(1.0, 5.0))
    assert acc_out is acc
    np.testing.assert_allclose(partial, [1.0, 3.0, 6.0, 10.0])
    assert float(acc.total[...]) == 10.0 and int(acc.steps[...]) == 4


def test_state_axes_with_carry_and_scanned_parts():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.arange(4.0))  # scanned: one weight per step
            self.count = nnx.Variable(jnp.array(0))  # carried

    model = Model()
    axes = nnx.StateAxes({nnx.Param: 0, ...: nnx.Carry})

    def step(c, m):
        m.count[...] += 1
        return c + m.w[...], None

    total, _ = nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=(nnx.Carry, 0))(0.0, model)
    assert float(total) == 6.0 and int(model.count[...]) == 4


def test_scanned_state_changes_come_back_stacked():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.arange(3.0))

    model = Model()

    def f(m):
        m.w[...] = m.w[...] * 10
        return None

    nnx.scan(f, in_axes=0, out_axes=0)(model)
    np.testing.assert_allclose(model.w[...], [0.0, 10.0, 20.0])


def test_carried_module_matches_lax_scan_on_pytrees():
    acc = Acc()
    xs = jax.random.normal(jax.random.key(0), (5,))

    def step(acc, x):
        acc.total[...] = acc.total[...] * 0.5 + x
        return acc, acc.total[...]

    _, ys = nnx.scan(step)(acc, xs)

    def pure(total, x):
        total = total * 0.5 + x
        return total, total

    total, ref = jax.lax.scan(pure, jnp.array(0.0), xs)
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    np.testing.assert_allclose(acc.total[...], total, rtol=1e-6)


# ------------------------------------------------------------------ transform_metadata
def test_transform_metadata_in_scan_over_layers():
    seen = []

    class Layer(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.linear = nnx.Linear(3, 3, kernel_init=init, rngs=rngs)

    tm = {nnx.PARTITION_NAME: "layers"}
    stack = _stack(4, cls=Layer, transform_metadata=tm)
    assert stack.linear.kernel.out_sharding == ("layers", "embed", "mlp")

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, transform_metadata=tm)
    def forward(x, layer):
        seen.append(layer.linear.kernel.out_sharding)
        return layer.linear(x)

    assert forward(jnp.ones((2, 3)), stack).shape == (2, 3)
    assert seen == [("embed", "mlp")]
    assert stack.linear.kernel.out_sharding == ("layers", "embed", "mlp")


def test_transform_metadata_on_variables_created_in_scan():
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 1),
              transform_metadata={nnx.PARTITION_NAME: "steps"})
    def f(c, x):
        return c, nnx.Param(x, out_sharding=("a",))

    _, p = f(0.0, jnp.ones((4, 2)))
    assert p.shape == (2, 4) and p.out_sharding == ("a", "steps")


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("options", [dict(), dict(graph_updates=False), dict(graph=False)])
def test_changed_broadcast_state_flows_from_step_to_step_like_a_loop(options):
    # A broadcast (None) variable that the body changes is seen changed by the next
    # step and by the caller afterwards, as in a Python loop (and flax.nnx).
    acc, count = Acc(), nnx.BatchStat(jnp.array(0))

    def f(c, acc, count, x):
        acc.total[...] += x
        count[...] += 1
        return c + acc.total[...], acc.total[...]

    scan = nnx.scan(f, in_axes=(nnx.Carry, None, None, 0), out_axes=(nnx.Carry, 0),
                    **options)
    c, ys = scan(0.0, acc, count, jnp.arange(1.0, 5.0))
    np.testing.assert_allclose(ys, [1.0, 3.0, 6.0, 10.0])
    assert float(c) == 20.0 and float(acc.total[...]) == 10.0 and int(count[...]) == 4
    c, ys = scan(0.0, acc, count, jnp.arange(1.0, 5.0))  # the cached layout carries it
    np.testing.assert_allclose(ys, [11.0, 13.0, 16.0, 20.0])
    assert int(count[...]) == 8


def test_only_changed_broadcast_state_is_carried():
    # Unchanged broadcast parameters stay loop constants: the scan carries one value.
    model = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    count = nnx.BatchStat(jnp.array(0))

    def f(x, model, count):
        count[...] += 1
        return model(x), None

    scan = nnx.scan(f, in_axes=(nnx.Carry, None, None), out_axes=(nnx.Carry, 0), length=3)
    jaxpr = jax.make_jaxpr(lambda x, m, c: scan(x, m, c)[0])(jnp.ones((1, 3)), model, count)
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert eqn.params["num_carry"] == 2  # x and count, not the kernel or bias
    y, _ = scan(jnp.ones((1, 3)), model, count)
    expected = jnp.ones((1, 3))
    for _ in range(3):
        expected = model(expected)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert int(count[...]) == 3


def test_exception_inside_leaves_model_unchanged():
    acc = Acc()

    def step(acc, x):
        acc.total[...] += x
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nnx.scan(step)(acc, jnp.ones(3))
    assert float(acc.total[...]) == 0.0


def test_carry_structure_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="carry returned by the scanned function"):
        nnx.scan(lambda c, x: ((c, c), x))(0.0, jnp.ones(3))


def test_returning_another_module_as_carry_is_an_error():
    other = Acc()
    with pytest.raises(ValueError, match="holds a Acc where the carry passed in held a Acc"):
        nnx.scan(lambda acc, x: (other, x))(Acc(), jnp.ones(3))


def test_new_variable_in_carried_module_is_an_error():
    acc = Acc()

    def step(acc, x):
        acc.extra = nnx.Variable(x)
        return acc, x

    with pytest.raises(ValueError, match="created at 'extra'.*carried"):
        nnx.scan(step)(acc, jnp.ones(3))
    assert not hasattr(acc, "extra")


def test_axes_validation_errors():
    with pytest.raises(ValueError, match="both mark a carry"):
        nnx.scan(lambda c, x: c, in_axes=(nnx.Carry, 0), out_axes=0)
    with pytest.raises(ValueError, match="more than one argument"):
        nnx.scan(lambda a, b: a, in_axes=(nnx.Carry, nnx.Carry), out_axes=nnx.Carry)
    with pytest.raises(ValueError, match="top-level"):
        nnx.scan(lambda a: a, in_axes=((nnx.Carry, 0),), out_axes=nnx.Carry)
    with pytest.raises(ValueError, match="contains None"):
        nnx.scan(lambda c, x: (c, x), out_axes=(nnx.Carry, None))
    with pytest.raises(ValueError, match="can only be stacked"):
        nnx.scan(lambda x: x, in_axes=0, out_axes=nnx.StateAxes({...: None}))


def test_in_axes_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 entries but the function was called with 3"):
        nnx.scan(lambda c, x, y: (c, x))(0.0, jnp.ones(2), jnp.ones(2))


def test_non_exhaustive_state_axes_is_a_clear_error():
    acc = Acc()
    with pytest.raises(ValueError, match="no filter of StateAxes"):
        nnx.scan(lambda c, m: (c, None), in_axes=(nnx.Carry, nnx.StateAxes({nnx.Param: 0})),
                 length=2)(0.0, acc)


def test_scanning_a_non_array_is_a_clear_error():
    with pytest.raises(ValueError, match="not an array"):
        nnx.scan(lambda c, x: (c, None))(0.0, "abc")


def test_carry_only_takes_one_argument():
    with pytest.raises(ValueError, match="exactly one argument"):
        nnx.scan(lambda a, b: a, in_axes=nnx.Carry, out_axes=nnx.Carry, length=2)(1.0, 2.0)


def test_scanned_state_without_the_axis_is_a_clear_error():
    acc = Acc()
    with pytest.raises(ValueError, match=r"args\[1\]\.(steps|total) has shape \(\)"):
        nnx.scan(lambda c, m: (c, None))(0.0, acc)


def test_length_mismatch_names_the_values():
    with pytest.raises(ValueError, match=r"size 3: args\[1\]; size 4: length"):
        nnx.scan(lambda c, x: (c, None), length=4)(0.0, jnp.ones(3))


def test_mutating_a_captured_module_is_a_clear_error():
    acc = Acc()

    def f(c, x):
        acc.total[...] += x
        return c, x

    with pytest.raises(nnx.TraceContextError, match="captured"):
        nnx.scan(f)(0.0, jnp.ones(3))
    assert float(acc.total[...]) == 0.0


def test_nested_scan_in_vmap_ensemble_of_deep_models():
    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=0, out_axes=0)
        def blocks(rngs):
            return Block(rngs)

        return blocks(rngs)

    ens = make(nnx.Rngs(0))
    assert ens.linear.kernel.shape == (2, 3, 3, 3)
    member1 = _unstack(nnx.clone(ens), 2)[1]
    x = jax.random.normal(jax.random.key(4), (5, 3))
    run = nnx.scan(lambda x, b: b(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    y = nnx.vmap(run, in_axes=(None, 0))(x, ens)
    assert y.shape == (2, 5, 3) and ens.bn.mean.shape == (2, 3, 3)
    np.testing.assert_allclose(y[1], run(x, member1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ens.bn.mean[1], member1.bn.mean[...], rtol=1e-5, atol=1e-7)
