"""Tests for ``nnx.jit``'s options: static arguments, donation, ``keep_unused``, and the
decorator and method forms."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from tests.transforms.jit_models import Linear, Net, X

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")


# --------------------------------------------------------------------- static arguments
def test_static_argnums_retrace_on_change_not_on_equal_value():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit(static_argnums=1)
    def f(m, n, x):
        traces.append(n)
        for _ in range(n):  # Python control flow on the static value
            x = x * 2
        return m(x)

    for n in (2, 2, 3, 2, 3):
        np.testing.assert_allclose(f(model, n, X), model(X * 2**n), rtol=1e-6)
    assert traces == [2, 3]


def test_static_argnums_equal_but_not_identical_values_share_a_trace():
    traces = []

    @nnx.jit(static_argnums=(0,))
    def f(shape, m):
        traces.append(shape)
        return jnp.zeros(shape) + m.bias[...].sum()

    model = Linear(2, 3, rngs=nnx.Rngs(0))
    assert f((2, 3), model).shape == (2, 3)
    assert f(tuple([2, 3]), model).shape == (2, 3)  # a different, equal tuple
    assert len(traces) == 1


def test_static_argnames_by_keyword_and_by_position():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit(static_argnames="mode")
    def f(m, x, mode="sum"):
        traces.append(mode)
        y = m(x)
        return y.sum() if mode == "sum" else y.max()

    assert float(f(model, X, mode="sum")) == pytest.approx(float(model(X).sum()), rel=1e-5)
    assert float(f(model, X, mode="max")) == pytest.approx(float(model(X).max()), rel=1e-5)
    f(model, X, mode="sum")
    assert traces == ["sum", "max"]
    assert float(f(model, X, "max")) == pytest.approx(float(model(X).max()), rel=1e-5)


def test_static_argument_with_module_mutation():
    model = Net()

    @nnx.jit(static_argnames="times")
    def f(m, x, times):
        for _ in range(times):
            m.stats(x)
        return m.stats.count[...]

    assert int(f(model, jnp.ones((2, 3)), times=3)) == 3
    assert int(model.stats.count[...]) == 3


def test_unhashable_static_argument_is_a_clear_error():
    f = nnx.jit(lambda m, sizes: m, static_argnums=1)
    with pytest.raises(ValueError, match="hashable.*tuple instead of a list"):
        f(Net(), [1, 2])


# ------------------------------------------------------------------------- donation
def _jax_deletes_donated_buffers():
    """Whether this backend invalidates a donated input that an output reuses."""
    x = jnp.ones(3)
    jax.jit(lambda a: a + 1, donate_argnums=0)(x)
    return x.is_deleted()


class TwoVectors(nnx.Module):
    def __init__(self):
        self.a = nnx.Param(jnp.ones(3))
        self.b = nnx.Param(jnp.full((3,), 2.0))
        self.c = nnx.BatchStat(jnp.zeros(3))


def test_donate_argnums_module_results_and_invalidation_match_jax():
    model = TwoVectors()
    old_b = model.b[...]

    @nnx.jit(donate_argnums=0)
    def f(m):
        m.b[...] = m.b + m.a
        return m.c[...] * 2  # an unchanged, donated variable returned

    out = f(model)
    np.testing.assert_array_equal(out, np.zeros(3))
    np.testing.assert_array_equal(model.b[...], np.full(3, 3.0))
    # every variable of the model is still valid: donated buffers an output reused
    # were given back, changed or not
    for var in (model.a, model.b, model.c):
        assert not var[...].is_deleted()
        np.asarray(var[...])
    assert old_b.is_deleted() == _jax_deletes_donated_buffers()


def test_donating_unchanged_same_shaped_variables_keeps_the_model_valid():
    model = TwoVectors()
    step = nnx.jit(lambda m: m.b.set_value(m.b + m.a), donate_argnums=0)
    for _ in range(3):
        step(model)
    np.testing.assert_array_equal(model.a[...], np.ones(3))
    np.testing.assert_array_equal(model.b[...], np.full(3, 5.0))
    np.testing.assert_array_equal(model.c[...], np.zeros(3))


def test_donate_argnames_module():
    model = TwoVectors()
    old_a = model.a[...]

    @nnx.jit(donate_argnames="m")
    def f(m, x):
        m.a[...] = m.a * x
        return m.a.sum()

    assert float(f(model, 4.0)) == 12.0
    assert float(f(m=model, x=0.5)) == 6.0
    np.testing.assert_array_equal(model.a[...], np.full(3, 2.0))
    assert old_a.is_deleted() == _jax_deletes_donated_buffers()


def test_donate_array_argument():
    model = TwoVectors()
    x = jnp.arange(3.0)
    y = nnx.jit(lambda m, x: x + m.a, donate_argnums=1)(model, x)
    np.testing.assert_array_equal(y, [1.0, 2.0, 3.0])
    assert x.is_deleted() == _jax_deletes_donated_buffers()
    assert not model.a[...].is_deleted()
    x = jnp.arange(3.0)
    nnx.jit(lambda m, x: x + m.a, donate_argnames="x")(model, x=x)
    assert x.is_deleted() == _jax_deletes_donated_buffers()


def test_donate_argnums_count_static_arguments():
    model = TwoVectors()
    x = jnp.arange(3.0)
    old_c = model.c[...]

    @nnx.jit(static_argnums=0, donate_argnums=(1, 2))
    def f(times, m, x):
        for _ in range(times):
            m.c[...] = m.c + x
        return x * 2

    np.testing.assert_array_equal(f(2, model, x), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(model.c[...], [0.0, 2.0, 4.0])
    deletes = _jax_deletes_donated_buffers()
    assert old_c.is_deleted() == deletes and x.is_deleted() == deletes
    assert not model.a[...].is_deleted()


def test_donated_arguments_with_structural_change_inside():
    model = TwoVectors()

    @nnx.jit(donate_argnums=0)
    def f(m):
        m.d = nnx.Param(m.a * 2)
        m.a[...] = m.a + 1

    f(model)
    np.testing.assert_array_equal(model.a[...], np.full(3, 2.0))
    np.testing.assert_array_equal(model.d[...], np.full(3, 2.0))
    for var in (model.b, model.c):
        assert not var[...].is_deleted()


# ------------------------------------------------------------------------ keep_unused
def _main_arguments(lowered):
    text = lowered.as_text()
    signature = re.search(r"func\.func public @main\((.*?)\)\s*(->|\{)", text, re.S).group(1)
    return len(re.findall(r"%arg\d+:", signature))


def test_keep_unused():
    model = TwoVectors()

    def f(m, unused):
        return m.a + 1

    pruned = nnx.jit(f).lower(model, jnp.ones(5))
    kept = nnx.jit(f, keep_unused=True).lower(model, jnp.ones(5))
    # b, c and `unused` are dropped from the compiled program unless keep_unused
    assert _main_arguments(pruned) == 1
    assert _main_arguments(kept) == 4
    np.testing.assert_array_equal(nnx.jit(f, keep_unused=True)(model, jnp.ones(5)),
                                  np.full(3, 2.0))


# ------------------------------------------------------------ decorators and methods
def test_decorator_forms():
    model = TwoVectors()

    @nnx.jit
    def plain(m):
        """Doc."""
        return m.a * 2

    @nnx.jit()
    def empty_parens(m):
        return m.a * 3

    @nnx.jit(static_argnames="k")
    def with_options(m, k):
        return m.a * k

    assert isinstance(plain, nnx.JitWrapped)
    assert plain.__name__ == "plain" and plain.__doc__ == "Doc."
    assert plain.__wrapped__.__name__ == "plain"
    np.testing.assert_array_equal(plain(model), np.full(3, 2.0))
    np.testing.assert_array_equal(empty_parens(model), np.full(3, 3.0))
    np.testing.assert_array_equal(with_options(model, k=4), np.full(3, 4.0))
    np.testing.assert_array_equal(nnx.jit(lambda m: m.a * 5)(model), np.full(3, 5.0))


class JittedModel(nnx.Module):
    traces = []

    def __init__(self, seed):
        self.linear = Linear(2, 2, rngs=nnx.Rngs(seed))
        self.calls = nnx.Variable(jnp.array(0))

    @nnx.jit
    def __call__(self, x):
        JittedModel.traces.append(1)
        self.calls[...] += 1
        return self.linear(x)

    @nnx.jit(static_argnames="scale")
    def shift(self, delta, scale=1.0):
        self.linear.bias[...] = self.linear.bias + scale * delta
        return self


def test_jitted_methods():
    JittedModel.traces.clear()
    a, b = JittedModel(0), JittedModel(1)
    assert isinstance(JittedModel.__call__, nnx.JitWrapped)
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(a(x), x @ a.linear.kernel[...] + a.linear.bias[...])
    a(x)
    np.testing.assert_allclose(b(x), x @ b.linear.kernel[...] + b.linear.bias[...])
    assert int(a.calls[...]) == 2 and int(b.calls[...]) == 1
    assert len(JittedModel.traces) == 1  # same structure: one trace for both instances
    assert a.shift(jnp.ones(2), scale=3.0) is a
    np.testing.assert_array_equal(a.linear.bias[...], [3.0, 3.0])
