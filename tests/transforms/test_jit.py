"""Tests for ``nnx.jit``: results, eager mutation semantics, sharing, arguments, caching
and error cases.

Most semantic tests run the same function eagerly on one model and under ``nnx.jit`` on
an identical twin, then require the two models to agree in structure (graph
definition), in values, in which objects kept their identity, and in which objects are
shared: "exactly like eager".
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from tests.transforms.jit_models import Linear, Net, X

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")


# ----------------------------------------------------------------------------- helpers
def _value(leaf):
    v = leaf[...] if isinstance(leaf, nnx.Variable) else leaf
    if not hasattr(v, "dtype"):
        return np.asarray(v)
    if jnp.issubdtype(v.dtype, jax.dtypes.prng_key):
        v = jax.random.key_data(v)
    return np.asarray(v)


def snapshot(node):
    """Structure and values of a graph: (graphdef, {path: (kind, metadata, value)})."""
    graphdef, state = nnx.split(node)
    values = {}
    for path, leaf in nnx.to_flat_state(state):
        meta = leaf.get_metadata() if isinstance(leaf, nnx.Variable) else None
        values[path] = (type(leaf), meta, _value(leaf))
    return graphdef, values


def assert_same_snapshot(a, b, exact=False):
    graphdef_a, values_a = a
    graphdef_b, values_b = b
    assert graphdef_a == graphdef_b
    assert values_a.keys() == values_b.keys()
    for path in values_a:
        kind_a, meta_a, value_a = values_a[path]
        kind_b, meta_b, value_b = values_b[path]
        assert kind_a is kind_b, path
        assert meta_a == meta_b, path
        assert value_a.shape == value_b.shape and value_a.dtype == value_b.dtype, path
        if exact:
            np.testing.assert_array_equal(value_a, value_b, err_msg=str(path))
        else:
            np.testing.assert_allclose(value_a, value_b, rtol=1e-5, atol=1e-6,
                                       err_msg=str(path))


def objects_by_path(node):
    return {p: v for p, v in nnx.iter_graph(node) if nnx.graph.is_node_or_variable(v)}


def kept_identity(before, after):
    return {p for p, v in after.items() if p in before and before[p] is v}


def assert_outputs_close(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(_value(x), _value(y), rtol=1e-5, atol=1e-6)


def run_eager_and_jit(fn, *args):
    """Run ``fn(model, *args)`` eagerly and under nnx.jit on identical models and check
    the models end up the same, with the same objects kept and the same sharing."""
    eager, jitted = Net(), Net()
    before_e, before_j = objects_by_path(eager), objects_by_path(jitted)
    out_e = fn(eager, *args)
    out_j = nnx.jit(fn)(jitted, *args)
    assert_same_snapshot(snapshot(eager), snapshot(jitted))
    after_e, after_j = objects_by_path(eager), objects_by_path(jitted)
    assert kept_identity(before_e, after_e) == kept_identity(before_j, after_j)
    assert nnx.find_duplicates(eager) == nnx.find_duplicates(jitted)
    return eager, jitted, out_e, out_j


# ------------------------------------------------------------ results equal plain jax
def test_forward_equals_jax_jit_on_pytrees():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    got = nnx.jit(lambda m, x: m(x))(model, X)
    want = jax.jit(lambda p, x: x @ p["kernel"] + p["bias"])(params, X)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_training_loop_equals_jax_jit_on_pytrees():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    y = jnp.ones((4, 3))

    @nnx.jit
    def step(m, x, y):
        def loss(m):
            return ((m(x) - y) ** 2).mean()

        value, grads = nnx.value_and_grad(loss)(m)
        m.kernel[...] = m.kernel - 0.1 * grads["kernel"]
        m.bias[...] = m.bias - 0.1 * grads["bias"]
        return value

    @jax.jit
    def raw_step(p, x, y):
        def loss(p):
            return ((x @ p["kernel"] + p["bias"] - y) ** 2).mean()

        value, grads = jax.value_and_grad(loss)(p)
        return value, jax.tree.map(lambda a, g: a - 0.1 * g, p, grads)

    for _ in range(3):
        got = step(model, X, y)
        want, params = raw_step(params, X, y)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(model.kernel[...], params["kernel"], rtol=1e-5)
    np.testing.assert_allclose(model.bias[...], params["bias"], rtol=1e-5)


def test_pytree_arguments_keywords_and_outputs():
    model = Linear(2, 3, rngs=nnx.Rngs(0))

    def fn(m, batch, *, scale):
        y = m(batch["x"]) * scale
        return {"y": y, "parts": (y.sum(), [batch["x"].shape[0], None])}

    got = nnx.jit(fn)(model, {"x": X}, scale=2.0)
    want = fn(model, {"x": X}, scale=2.0)
    assert_outputs_close(got, want)
    assert got["parts"][1][1] is None
    # Python scalars come back as arrays, as from jax.jit
    assert type(got["parts"][1][0]) is type(jax.jit(lambda: 4)())


def test_function_without_modules_behaves_like_jax_jit():
    f = nnx.jit(lambda x, y: (x * y, {"s": x.sum()}))
    got = f(jnp.arange(3.0), 2.0)
    want = jax.jit(lambda x, y: (x * y, {"s": x.sum()}))(jnp.arange(3.0), 2.0)
    assert_outputs_close(got, want)


# --------------------------------------------------------------- mutations like eager
def _set_value(m, x):
    m.linear.kernel[...] = m.linear.kernel * 2
    return m.linear(x)


def _batch_stat(m, x):
    return m.stats(m.linear(x))


def _full_forward(m, x):
    return m(x)


def _raw_array(m, x):
    m.raw = m.raw + x.sum()
    return m.raw


def _rng_counts(m, x):
    noise = jax.random.normal(m.rngs.dropout(), (2,))
    return noise + jax.random.uniform(m.rngs.dropout(), (2,)) + m.rngs.params()[None].shape[0]


def _new_variable(m, x):
    m.extra = nnx.Param(x.sum(0))
    return m.extra[...]


def _new_array_attribute(m, x):
    m.new_raw = x * 2


def _new_submodule(m, x):
    m.head = Linear(3, 1, rngs=nnx.Rngs(5))
    return m.head(m.linear(x))


def _new_submodule_from_model_rngs(m, x):
    m.head = Linear(3, 1, rngs=m.rngs)
    return m.head(m.linear(x))


def _delete_attributes(m, x):
    del m.raw
    del m.stats
    return m.linear(x)


def _list_append(m, x):
    m.layers.append(Linear(3, 3, rngs=nnx.Rngs(7)))
    return len(m.layers)


def _list_append_existing(m, x):
    m.layers.append(m.layers[0])  # a second reference to the same layer


def _list_pop(m, x):
    return m.layers.pop()(m.linear(x))


def _replace_submodule(m, x):
    m.linear = Linear(2, 3, rngs=nnx.Rngs(9))
    return m.linear(x)


def _static_attributes(m, x):
    m.flag = True
    m.name = "changed"


def _variable_metadata(m, x):
    m.linear.kernel.set_metadata(out_sharding=("in", "out"))


def _new_alias(m, x):
    m.alias = m.linear.bias  # a second path to an existing variable
    m.alias[...] = m.alias + 1.0


def _value_new_shape(m, x):
    m.stats.mean.value = jnp.zeros((5,))


def _move_variable(m, x):
    m.moved = m.linear.bias
    del m.linear.bias


MUTATIONS = [
    _set_value, _batch_stat, _full_forward, _raw_array, _rng_counts, _new_variable,
    _new_array_attribute, _new_submodule, _new_submodule_from_model_rngs,
    _delete_attributes, _list_append, _list_append_existing, _list_pop,
    _replace_submodule, _static_attributes, _variable_metadata, _new_alias,
    _value_new_shape, _move_variable,
]


@pytest.mark.parametrize("fn", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_mutations_inside_are_visible_outside_like_eager(fn):
    eager, jitted, out_e, out_j = run_eager_and_jit(fn, X)
    assert_outputs_close(out_e, out_j)
    # every array now held by the model is concrete
    for path, leaf in nnx.to_flat_state(nnx.state(jitted)):
        value = leaf[...] if isinstance(leaf, nnx.Variable) else leaf
        assert not isinstance(value, jax.core.Tracer), path


def test_mutations_accumulate_over_calls_like_eager():
    eager, jitted = Net(), Net()
    step = nnx.jit(_full_forward)
    for _ in range(3):
        out_e = _full_forward(eager, X)
        out_j = step(jitted, X)
        np.testing.assert_allclose(out_e, out_j, rtol=1e-5, atol=1e-6)
    assert int(jitted.stats.count[...]) == 3
    assert_same_snapshot(snapshot(eager), snapshot(jitted))


def test_rng_streams_advance_and_give_the_eager_keys():
    eager, jitted = Net(), Net()
    draw = nnx.jit(lambda m: jax.random.normal(m.rngs.dropout(), (3,)))
    draws_j = [draw(jitted) for _ in range(3)]
    draws_e = [jax.random.normal(eager.rngs.dropout(), (3,)) for _ in range(3)]
    for a, b in zip(draws_e, draws_j):
        np.testing.assert_allclose(a, b)
    assert not np.allclose(draws_j[0], draws_j[1])  # the count moved between calls
    assert int(jitted.rngs.dropout.count[...]) == 3
    assert int(jitted.rngs.params.count[...]) == 0


def test_new_submodule_created_inside_is_concrete_and_usable():
    model = Net()
    nnx.jit(_new_submodule)(model, X)
    head = model.head
    assert type(head) is Linear and type(head.kernel) is nnx.Param
    assert isinstance(head.kernel[...], jax.Array)
    assert not isinstance(head.kernel[...], jax.core.Tracer)
    np.testing.assert_allclose(head.kernel[...], Linear(3, 1, rngs=nnx.Rngs(5)).kernel[...])
    head.kernel[...] = jnp.zeros((3, 1))  # eager mutation is allowed: it belongs here
    assert float(head(jnp.ones((1, 3)))[0, 0]) == 0.0


def test_structural_change_inside_then_fast_path_on_later_calls():
    model = Net()
    traces = []

    @nnx.jit
    def step(m, x):
        traces.append(1)
        if not hasattr(m, "calls"):
            m.calls = nnx.Variable(jnp.array(0))
        m.calls[...] += 1
        return m(x)

    for _ in range(4):
        step(model, X)
    assert int(model.calls[...]) == 4
    assert len(traces) == 2  # the new structure once, then the cached one


# -------------------------------------------------------------------- shared references
class Tied(nnx.Module):
    def __init__(self):
        self.a = nnx.Param(jnp.ones(2))
        self.b = self.a  # one Variable, two paths
        self.lin = Linear(2, 2, rngs=nnx.Rngs(0))
        self.same_lin = self.lin  # one submodule, two paths


def test_variable_reachable_by_two_paths_stays_shared():
    model = Tied()
    seen = []

    @nnx.jit
    def f(m):
        seen.append((m.a is m.b, m.lin is m.same_lin))
        m.b[...] = m.a * 3  # write through one path, read through the other
        m.same_lin.bias[...] = m.lin.bias + 1
        return m.a[...]

    out = f(model)
    assert seen == [(True, True)]
    assert model.a is model.b and model.lin is model.same_lin
    np.testing.assert_array_equal(out, [3.0, 3.0])
    np.testing.assert_array_equal(model.b[...], [3.0, 3.0])
    np.testing.assert_array_equal(model.lin.bias[...], [1.0, 1.0])


class Parent(nnx.Module):
    def __init__(self, child):
        self.child = child


def test_submodule_shared_by_two_parents_passed_as_two_arguments():
    child = Linear(2, 2, rngs=nnx.Rngs(0))
    p1, p2 = Parent(child), Parent(child)
    seen = []

    @nnx.jit
    def f(p1, p2, child):
        seen.append((p1.child is p2.child, p2.child is child))
        p1.child.kernel[...] = jnp.zeros((2, 2))
        p2.child.bias[...] = p2.child.bias + 2.0
        p1.child.new = nnx.BatchStat(jnp.ones(1))  # structural change through one path
        return child

    out = f(p1, p2, child)
    assert seen == [(True, True)]
    assert out is child and p1.child is child and p2.child is child
    np.testing.assert_array_equal(child.kernel[...], np.zeros((2, 2)))
    np.testing.assert_array_equal(child.bias[...], [2.0, 2.0])
    assert p2.child.new is p1.child.new


def test_variable_shared_across_two_module_arguments():
    shared = nnx.Param(jnp.zeros(3))
    a, b = Parent(shared), Parent(shared)

    @nnx.jit
    def f(a, b):
        a.child[...] = a.child + 1.0
        b.child[...] = b.child * 10.0  # sees the first write: one variable
        return b.child[...]

    np.testing.assert_array_equal(f(a, b), np.full(3, 10.0))
    assert a.child is shared and b.child is shared
    np.testing.assert_array_equal(shared[...], np.full(3, 10.0))


def test_new_submodule_attached_to_two_parents_inside_is_one_object_outside():
    p1, p2 = Parent(None), Parent(None)

    @nnx.jit
    def f(p1, p2):
        p1.child = p2.child = Linear(2, 2, rngs=nnx.Rngs(0))

    f(p1, p2)
    assert isinstance(p1.child, Linear) and p1.child is p2.child
    p1.child.bias[...] = jnp.ones(2)
    np.testing.assert_array_equal(p2.child.bias[...], [1.0, 1.0])


# ---------------------------------------------------------------------- return values
def test_returning_an_input_module_returns_the_same_object():
    model = Net()
    out, sub, var = nnx.jit(lambda m: (m, m.layers[0], m.linear.kernel))(model)
    assert out is model and sub is model.layers[0] and var is model.linear.kernel


def test_returning_an_input_module_after_a_structural_change():
    model = Net()
    linear = model.linear

    @nnx.jit
    def f(m):
        m.extra = nnx.Param(jnp.ones(1))
        return m, m.linear

    out, lin = f(model)
    assert out is model and lin is linear
    np.testing.assert_array_equal(model.extra[...], [1.0])


def test_returning_a_module_created_inside_gives_a_concrete_module():
    model = Net()

    @nnx.jit
    def make(m):
        new = Linear(3, 2, rngs=nnx.Rngs(3))
        new.inner = m.linear  # refers to an input submodule
        new.bias[...] = m.linear.bias[:2] + 5.0
        return new

    new = make(model)
    assert type(new) is Linear and new.inner is model.linear
    assert not isinstance(new.kernel[...], jax.core.Tracer)
    np.testing.assert_allclose(new.kernel[...], Linear(3, 2, rngs=nnx.Rngs(3)).kernel[...])
    np.testing.assert_array_equal(new.bias[...], model.linear.bias[:2] + 5.0)
    new.extra = 1  # an ordinary outer object: mutable eagerly
    y = nnx.jit(lambda m, x: m(x))(new, jnp.ones((1, 3)))  # and usable in transforms
    np.testing.assert_allclose(y, jnp.ones((1, 3)) @ new.kernel[...] + new.bias[...])


def test_returning_state_of_the_model():
    model = Net()

    @nnx.jit
    def f(m, x):
        m(x)
        return nnx.state(m), nnx.state(m, nnx.BatchStat)

    state, stats = f(model, X)
    eager = Net()
    eager(X)
    assert isinstance(state, nnx.State) and isinstance(stats, nnx.State)
    want = dict(nnx.to_flat_state(nnx.state(eager)))
    got = dict(nnx.to_flat_state(state))
    assert got.keys() == want.keys()
    for path in want:
        assert type(got[path]) is type(want[path])
        np.testing.assert_allclose(_value(got[path]), _value(want[path]), rtol=1e-5)
    assert [p for p, _ in nnx.to_flat_state(stats)] == [("stats", "mean")]
    # as in eager mode, the state holds the model's own variables
    assert state["linear"]["kernel"] is model.linear.kernel
    nnx.update(model, jax.tree.map(jnp.zeros_like, stats))
    np.testing.assert_array_equal(model.stats.mean[...], np.zeros(3))


# -------------------------------------------------------------------------- nesting
def test_nested_jit():
    model = Net()
    inner_traces = []

    @nnx.jit
    def inner(m, x):
        inner_traces.append(1)
        return m.stats(x)

    @nnx.jit
    def outer(m, x):
        y = inner(m, m.linear(x))
        m.after = nnx.Variable(m.stats.count[...] * 10)  # sees the inner update
        return inner(m, y)

    out = outer(model, X)
    eager = Net()
    h = eager.stats(eager.linear(X))
    want = eager.stats(h)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    assert int(model.stats.count[...]) == 2 and int(model.after[...]) == 10
    np.testing.assert_allclose(model.stats.mean[...], eager.stats.mean[...], rtol=1e-5)
    outer(model, X)
    assert int(model.stats.count[...]) == 4


def test_grad_inside_jit():
    model = Linear(2, 3, rngs=nnx.Rngs(0))

    def loss(m, x):
        return (m(x) ** 2).sum()

    got = nnx.jit(nnx.grad(loss))(model, X)
    want = nnx.grad(loss)(model, X)
    for path in (("kernel",), ("bias",)):
        np.testing.assert_allclose(got[path[0]][...], want[path[0]][...], rtol=1e-5)
    assert type(got["kernel"]) is nnx.Param


@pytest.mark.skipif(not hasattr(nnx, "vmap"), reason="nnx.vmap not available yet")
def test_grad_inside_jit_inside_vmap():
    model = Linear(2, 3, rngs=nnx.Rngs(0))

    def loss(m, x):
        return (m(x) ** 2).sum()

    per_example = nnx.vmap(nnx.jit(nnx.grad(loss)), in_axes=(None, 0))(model, X)

    def pure(p, x):
        return ((x @ p["kernel"] + p["bias"]) ** 2).sum()

    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    want = jax.vmap(jax.grad(pure), in_axes=(None, 0))(params, X)
    np.testing.assert_allclose(per_example["kernel"][...], want["kernel"], rtol=1e-5)
    np.testing.assert_allclose(per_example["bias"][...], want["bias"], rtol=1e-5)


# ------------------------------------------------------------------------ exceptions
def _mutate_everything_then_raise(m, x, fail):
    m.linear.kernel[...] = m.linear.kernel * 0
    m(x)  # BatchStat and counter updates
    m.rngs.dropout()
    m.extra = nnx.Param(jnp.ones(1))
    m.layers.append(Linear(3, 3, rngs=nnx.Rngs(0)))
    del m.raw
    m.flag = True
    if fail:
        raise ValueError("boom")
    return m.linear.kernel.sum()


@pytest.mark.parametrize("first_call_fails", [True, False])
def test_exception_leaves_the_model_unchanged(first_call_fails):
    model = Net()
    f = nnx.jit(_mutate_everything_then_raise, static_argnums=2)
    if not first_call_fails:  # the failing signature is traced after a cached one
        other = Net()
        f(other, X, False)
    before = snapshot(model)
    objects = objects_by_path(model)
    with pytest.raises(ValueError, match="boom"):
        f(model, X, True)
    assert_same_snapshot(before, snapshot(model), exact=True)
    assert objects_by_path(model) == objects
    assert all(objects[p] is v for p, v in objects_by_path(model).items())
    # and the model still works, in the transform and eagerly
    eager = Net()
    assert float(f(model, X, False)) == 0.0
    _mutate_everything_then_raise(eager, X, False)
    assert_same_snapshot(snapshot(eager), snapshot(model))


def test_jax_error_inside_leaves_the_model_unchanged():
    model = Net()
    before = snapshot(model)

    @nnx.jit
    def f(m, x):
        m.stats(m.linear(x))
        m.new = nnx.Param(jnp.ones(2))
        return m.linear(m.linear(x))  # (4, 3) @ (2, 3): a shape error at trace time

    with pytest.raises(TypeError):
        f(model, X)
    assert_same_snapshot(before, snapshot(model), exact=True)
    assert not hasattr(model, "new")
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(model, X), Net()(X), rtol=1e-5)


# ------------------------------------------------------------------- trace context
def test_mutating_a_module_captured_by_closure_raises():
    model = Net()
    before = snapshot(model)

    @nnx.jit
    def set_value(x):
        model.linear.bias[...] = x
        return x

    with pytest.raises(nnx.TraceContextError,
                       match=r"(?s)captured from an outer trace.*pass the module"):
        set_value(jnp.ones(3))

    @nnx.jit
    def set_attribute(x):
        model.extra = nnx.Param(x)

    with pytest.raises(nnx.TraceContextError, match="set attribute 'extra'"):
        set_attribute(jnp.ones(3))

    @nnx.jit
    def call_stateful(x):
        return model.stats(x)  # updates a BatchStat of the captured module

    with pytest.raises(nnx.TraceContextError):
        call_stateful(jnp.ones((2, 3)))
    assert_same_snapshot(before, snapshot(model), exact=True)


def test_reading_a_module_captured_by_closure_is_allowed():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(nnx.jit(lambda x: model(x))(X), model(X), rtol=1e-6)


def test_input_module_stored_outside_is_unusable_afterwards():
    model = Net()
    escaped = []

    @nnx.jit
    def f(m, x):
        escaped.append(m)  # the traced copy escapes
        m.head = Linear(3, 1, rngs=nnx.Rngs(0))
        escaped.append(m.head)
        return m(x)

    f(model, X)
    inner_model, inner_head = escaped
    assert inner_model is not model
    for obj, din in ((inner_model.linear, 2), (inner_head, 3)):
        with pytest.raises(nnx.TraceContextError, match="created inside a transform"):
            obj.kernel[...]
        with pytest.raises(nnx.TraceContextError, match="created inside a transform"):
            obj(jnp.ones((1, din)))
        with pytest.raises(nnx.TraceContextError):
            obj.kernel[...] = jnp.zeros(1)
        with pytest.raises(nnx.TraceContextError, match="escaped the transform"):
            obj.anything = 1
    # the real model was updated normally
    assert isinstance(model.head, Linear) and model.head is not inner_head
    assert not isinstance(model.head.kernel[...], jax.core.Tracer)


def test_module_created_inside_and_stored_outside_fails_when_used():
    escaped = []

    @nnx.jit
    def f(x):
        escaped.append(Linear(2, 2, rngs=nnx.Rngs(0)))
        return x

    f(jnp.ones(2))
    (leaked,) = escaped
    with pytest.raises(nnx.TraceContextError):
        leaked.kernel[...] = jnp.zeros((2, 2))
    with pytest.raises(nnx.TraceContextError):
        leaked.other = 1
    # reading it leaks a tracer of the finished trace, which JAX rejects on use
    with pytest.raises((nnx.TraceContextError, jax.errors.UnexpectedTracerError)):
        leaked(jnp.ones((1, 2)))


# ------------------------------------------------------------------------------ cache
def test_same_structure_does_not_retrace():
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(1)
        return m(x)

    model = Net()
    for _ in range(3):
        f(model, X)
    assert len(traces) == 1
    f(Net(seed=5), X)  # another model, same structure
    assert len(traces) == 1
    model.linear.kernel[...] = jnp.zeros((2, 3))  # new values: not structural
    model.raw = jnp.ones(3)
    want = nnx.clone(model)(X)
    np.testing.assert_allclose(f(model, X), want, rtol=1e-5)
    assert len(traces) == 1


def test_structural_change_outside_retraces_and_works():
    traces = []

    @nnx.jit
    def total(m):
        traces.append(1)
        return sum(leaf.sum() for leaf in jax.tree.leaves(nnx.state(m, nnx.Param)))

    model = Linear(2, 3, rngs=nnx.Rngs(0))
    base = float(total(model))
    model.extra = nnx.Param(jnp.full((2,), 10.0))
    assert float(total(model)) == pytest.approx(base + 20.0, rel=1e-5)
    assert len(traces) == 2
    total(model)
    assert len(traces) == 2
    del model.extra  # back to the first structure: its trace is reused
    assert float(total(model)) == pytest.approx(base, rel=1e-5)
    assert len(traces) == 2
    model.kernel.set_metadata(tag="x")  # metadata is structure too
    total(model)
    assert len(traces) == 3


def test_structural_change_in_a_submodule_outside_retraces():
    traces = []
    f = nnx.jit(lambda m, x: traces.append(1) or m(x))
    model = Net()
    f(model, X)
    model.layers.append(Linear(3, 3, rngs=nnx.Rngs(1)))
    want = nnx.clone(model)(X)
    np.testing.assert_allclose(f(model, X), want, rtol=1e-5)
    assert len(traces) == 2


def test_input_shapes_and_dtypes_retrace():
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(x.shape)
        return m(x)

    model = Linear(2, 3, rngs=nnx.Rngs(0))
    f(model, jnp.ones((4, 2)))
    f(model, jnp.ones((4, 2)))
    assert f(model, jnp.ones((7, 2))).shape == (7, 3)
    assert len(traces) == 2
    f(model, jnp.ones((4, 2), jnp.int32))
    assert len(traces) == 3
    f(model, jnp.ones((4, 2)))
    assert len(traces) == 3
    model.kernel.value = jnp.ones((2, 5))  # a variable's new shape: retraced by jax
    model.bias.value = jnp.ones(5)
    assert f(model, jnp.ones((4, 2))).shape == (4, 5)
    assert len(traces) == 4


def test_variable_metadata_survives_the_transform():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    model.kernel.set_metadata(out_sharding=("in", "out"), note={"a": [1, 2]})

    @nnx.jit
    def f(m):
        assert m.kernel.out_sharding == ("in", "out")
        m.kernel[...] = m.kernel + 1
        return m.kernel

    assert f(model) is model.kernel
    assert model.kernel.get_metadata(exclude_required=True) == {"out_sharding": ("in", "out"),
                                           "note": {"a": [1, 2]}}


@pytest.mark.parametrize("use", [
    lambda v: v + 1, lambda v: 1 - v, lambda v: -v, lambda v: v @ jnp.ones(3),
    lambda v: jnp.sum(v), lambda v: jax.tree.leaves(v), lambda v: v.shape,
    lambda v: np.asarray(v), lambda v: v == 0,
], ids=["add", "rsub", "neg", "matmul", "jnp", "tree_leaves", "shape", "numpy", "eq"])
def test_escaped_variable_raises_clear_error_in_every_array_use(use):
    escaped = []

    @nnx.jit
    def f(m):
        escaped.append(m.kernel)

    f(Linear(3, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.TraceContextError, match="return the module"):
        use(escaped[0])


def test_variable_as_first_argument_is_not_rewalked_on_each_call(monkeypatch):
    from nnxlib.graph import _graphdef

    walks = []
    real_walk = _graphdef._walk
    monkeypatch.setattr(_graphdef, "_walk", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    counter = nnx.Variable(jnp.array(0))
    model = Net()

    @nnx.jit
    def step(counter, model, x):
        counter[...] += 1
        return model(x)

    for _ in range(3):
        step(counter, model, X)
    assert int(counter[...]) == 3
    assert len(walks) == 1  # the joint plan is cached on the variable
    model.extra = 1  # structure changed: walked again, once
    step(counter, model, X)
    step(counter, model, X)
    assert len(walks) == 2


def test_compiled_stage_takes_modules_and_writes_state_back():
    class Counter(nnx.Module):
        def __init__(self):
            self.count = nnx.Variable(jnp.array(0))
            self.w = nnx.Param(jnp.array(2.0))

        @nnx.jit
        def __call__(self, x):
            self.count[...] += 1
            return x * self.w

    m = Counter()
    f = nnx.jit(lambda m, x: m(x))
    lowered = f.lower(m, jnp.array(3.0))
    assert isinstance(lowered, nnx.transforms.compilation.Lowered)
    compiled = lowered.compile()
    assert compiled.cost_analysis() is not None and "multiply" in compiled.as_text()
    assert float(compiled(m, jnp.array(3.0))) == 6.0 and int(m.count[...]) == 1
    assert float(compiled(m, jnp.array(1.0))) == 2.0 and int(m.count[...]) == 2
    traced = f.trace(m, jnp.array(3.0))
    assert float(traced.lower().compile()(m, jnp.array(3.0))) == 6.0
    assert int(m.count[...]) == 3
    other = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="lowered for arguments of another structure"):
        compiled(other, jnp.array(3.0))
    assert int(m.count[...]) == 3
