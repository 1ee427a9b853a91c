"""Core soundness: array-true variable writes, tracer checks at assignment, merge checks,
model lifetime (no cycles through caches), threads, and cached joint plans."""

import gc
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from nnxlib.errors import ShapeMismatchError, StateMismatchError, TraceContextError
from nnxlib.graph import _graphdef


# ----------------------------------------------------------------- v[...] = x
def test_ellipsis_write_of_a_scalar_keeps_shape_and_dtype():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    m.kernel[...] = 0.0
    assert m.kernel.shape == (2, 3) and m.kernel.dtype == jnp.float32
    assert isinstance(m.kernel.value, jax.Array)
    np.testing.assert_array_equal(m(jnp.ones((1, 2))), m.bias[...][None])


def test_ellipsis_write_broadcasts():
    v = nnx.Param(jnp.zeros((2, 3)))
    v[...] = jnp.arange(3.0)
    np.testing.assert_array_equal(v[...], np.tile(np.arange(3.0), (2, 1)))


def test_ellipsis_write_casts_to_the_variable_dtype():
    v = nnx.Variable(jnp.zeros((2,), jnp.int32))
    v[...] = jnp.array([1.7, 2.2])
    assert v.dtype == jnp.int32
    np.testing.assert_array_equal(v[...], [1, 2])


@pytest.mark.parametrize("bad", [(5, 5), (2,), (2, 3, 1)])
def test_incompatible_shape_raises_and_keeps_the_value(bad):
    v = nnx.Param(jnp.ones((2, 3)))
    before = v.value
    with pytest.raises(ShapeMismatchError, match=r"\(2, 3\)") as info:
        v[...] = jnp.zeros(bad)
    assert str(bad) in str(info.value) and "v.value = x" in str(info.value)
    assert v.value is before


def test_indexed_write_uses_jax_semantics():
    v = nnx.Param(jnp.zeros((2, 3)))
    v[0] = 1.0
    v[1, 1:] = jnp.array([2.0, 3.0])
    np.testing.assert_array_equal(v[...], [[1, 1, 1], [0, 2, 3]])
    with pytest.raises(ShapeMismatchError, match="Param"):
        v[0] = jnp.zeros(4)
    np.testing.assert_array_equal(v[...], [[1, 1, 1], [0, 2, 3]])


def test_numpy_held_value_is_written_not_aliased():
    host = np.zeros(3, np.float32)
    v = nnx.Variable(host)
    v[...] = 2.0
    assert host.sum() == 0 and isinstance(v.value, np.ndarray)
    np.testing.assert_array_equal(v.value, [2, 2, 2])


def test_value_assignment_replaces():
    v = nnx.Param(jnp.ones((2, 3)))
    v.value = jnp.zeros((5, 5))
    assert v.shape == (5, 5)
    v.set_value(jnp.zeros((1,), jnp.int8))
    assert v.shape == (1,) and v.dtype == jnp.int8


def test_python_scalar_variables():
    v = nnx.Variable(1.0)
    v[...] = 2.0
    assert v.value == 2.0
    with pytest.raises(ShapeMismatchError):
        v[...] = jnp.zeros(3)


def test_ellipsis_write_inside_jit_matches_eager():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    eager = nnx.clone(m)
    eager.kernel[...] = eager.kernel[...] * 2 + 1

    @nnx.jit
    def f(m):
        m.kernel[...] = m.kernel[...] * 2 + 1

    f(m)
    np.testing.assert_allclose(m.kernel[...], eager.kernel[...])


def test_sharded_variable_keeps_its_sharding_on_write():
    mesh = jax.make_mesh((8,), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.P("x"))
    v = nnx.Param(jax.device_put(jnp.zeros(16), sharding))
    v[...] = 1.0
    assert v.value.sharding == sharding
    v[2] = 5.0
    assert v.value.sharding == sharding
    np.testing.assert_array_equal(np.asarray(v.value)[1:4], [1.0, 5.0, 1.0])


# ------------------------------------------------------------ leaked tracers
def leaked_tracer():
    box = []

    @jax.jit
    def f(x):
        box.append(x * 2)
        return x

    f(jnp.ones((2, 3)))
    return box[0]


def test_assigning_a_leaked_tracer_raises_at_assignment():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = m.kernel.value
    with pytest.raises(TraceContextError, match="already returned"):
        m.kernel.value = leaked_tracer()
    with pytest.raises(TraceContextError):
        m.kernel[...] = leaked_tracer()
    assert m.kernel.value is before


def test_update_with_a_leaked_tracer_raises_and_writes_nothing():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = (m.kernel.value, m.bias.value)
    with pytest.raises(TraceContextError):
        nnx.update(m, {"bias": jnp.zeros(3), "kernel": leaked_tracer()})
    assert (m.kernel.value, m.bias.value) == before


def test_write_back_into_a_captured_module_raises():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = model.kernel.value

    @nnx.jit
    def step(m, x):
        m.kernel.value = m.kernel.value * x
        return x

    def loss(x):
        step(model, x)  # model is captured from outside the grad: its trace is another
        return x

    with pytest.raises(TraceContextError):
        jax.grad(loss)(2.0)
    assert model.kernel.value is before


# ---------------------------------------------------------------- merge checks
def test_merge_of_another_models_state_raises():
    small = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    big = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(small)
    with pytest.raises(StateMismatchError, match=r"kernel.*float32\[2, 3\].*float32\[4, 3\]"):
        nnx.merge(graphdef, nnx.state(big))


def test_merge_dtype_mismatch_raises():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(m)
    cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), state)
    with pytest.raises(StateMismatchError, match="bfloat16"):
        nnx.merge(graphdef, cast)


def test_merge_path_mismatch_raises():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    other = nnx.Linear(2, 3, use_bias=False, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(m)
    with pytest.raises(StateMismatchError, match="missing paths.*bias"):
        nnx.merge(graphdef, nnx.state(other))


def test_merge_of_slices_under_lax_scan_still_works():
    """Traced leaves are not checked: slicing a stacked state is legitimate."""
    layers = nnx.vmap(lambda r: nnx.Linear(3, 3, rngs=r))(nnx.Rngs(0).fork(split=4))
    graphdef, stacked = nnx.split(layers)

    def body(x, s):
        return nnx.merge(graphdef, s)(x), None

    out, _ = jax.lax.scan(body, jnp.ones((1, 3)), stacked)
    assert out.shape == (1, 3)


def test_merge_of_abstract_state_with_concrete_graph():
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0))))
    concrete = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(1)))
    assert nnx.merge(graphdef, concrete).kernel.shape == (2, 3)
    assert isinstance(abstract["kernel"].value, jax.ShapeDtypeStruct)


# ------------------------------------------------------------------- lifetime
def test_deleted_model_is_freed_without_the_cycle_collector():
    gc.collect()
    gc.disable()
    try:
        model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
        optimizer = nnx.Optimizer(model, __import__("optax").sgd(0.1), wrt=nnx.Param)
        nnx.split(model)
        nnx.state(model.layers)
        nnx.graphdef(model.layers[0])

        @nnx.jit
        def step(model, optimizer, x):
            grads = nnx.grad(lambda m: jnp.sum(m(x)))(model)
            optimizer.update(model, grads)

        step(model, optimizer, jnp.ones((4, 2)))
        nnx.jit(lambda v: v[...] * 2)(model.layers[0].kernel)  # a variable-first plan
        refs = [weakref.ref(model), weakref.ref(model.layers[0].kernel),
                weakref.ref(model.layers[0]), weakref.ref(optimizer)]
        del model, optimizer
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()


def _custom_vjp_of(f):
    g = nnx.custom_vjp(f)
    g.defvjp(lambda m, x: (g(m, x), None), lambda res, ct: (None, None))
    return g


@pytest.mark.parametrize("transform", [
    lambda f: nnx.vmap(f, in_axes=(None, 0)),
    lambda f: nnx.scan(f, in_axes=(None, 0), out_axes=0),
    lambda f: nnx.grad(lambda m, x: f(m, x).sum()),
    lambda f: _custom_vjp_of(f),
])
def test_a_transform_kept_alive_does_not_keep_its_inputs_alive(transform):
    # transforms cache per structure: the cache must hold definitions, not Variables
    f = transform(lambda m, x: m(x))
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    f(model, jnp.ones((3, 2)))
    refs = [weakref.ref(model), weakref.ref(model.kernel)]
    del model
    gc.collect()
    assert [r() for r in refs] == [None, None]


# -------------------------------------------------------------------- threads
def test_threads_on_separate_models_match_single_threaded():
    def work(seed):
        model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(seed)),
                               nnx.Linear(4, 1, rngs=nnx.Rngs(seed + 1)))

        @nnx.jit
        def step(m, x):
            m.layers[0].kernel.value = m.layers[0].kernel.value * 0.5
            return m(x)

        outs = []
        for i in range(15):
            if i % 5 == 0:  # structural changes interleaved with cached calls
                model.layers.append(nnx.Linear(1, 1, rngs=nnx.Rngs(i)))
                model.layers.pop()
                model.note = i
            graphdef, state = nnx.split(model)
            model = nnx.merge(graphdef, state)
            outs.append(np.asarray(step(model, jnp.ones((2, 3)))))
        return np.stack(outs)

    expected = {seed: work(seed) for seed in range(4)}
    results: dict = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, work(s)))
               for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in range(4):
        np.testing.assert_array_equal(results[seed], expected[seed])


# -------------------------------------------------- alternating transforms
def test_alternating_transforms_on_one_root_do_not_rewalk(monkeypatch):
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    other = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
    f = nnx.jit(lambda m, o: m(jnp.ones((1, 2))) + o(jnp.ones((1, 2))))
    g = nnx.jit(lambda m: m(jnp.ones((1, 2))))
    h = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 2)))))
    for _ in range(2):  # warm up: plans and traces
        f(model, other), g(model), h(model)
    walks = []
    real_walk = _graphdef._walk
    monkeypatch.setattr(_graphdef, "_walk", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    for _ in range(5):
        f(model, other), g(model), h(model)
    assert walks == []
