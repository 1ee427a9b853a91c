"""Tests for ``nnx.checkify``: errors are returned as values, outputs equal plain
``jax.experimental.checkify`` on pytrees, and state changes are written back."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify as jax_checkify

import nnxlib as nnx


class Scaler(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.array([1.0, 2.0, 3.0]))
        self.calls = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.calls[...] += 1
        jax_checkify.check(jnp.all(x > 0), "x must be positive, got {x}", x=x)
        return jnp.log(x) * self.w


def plain(w, x):
    jax_checkify.check(jnp.all(x > 0), "x must be positive, got {x}", x=x)
    return jnp.log(x) * w


@pytest.mark.parametrize("x", [jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, -2.0, 3.0])])
def test_matches_plain_checkify_and_writes_state_back(x):
    model = Scaler()
    err, y = nnx.checkify(lambda m, x: m(x))(model, x)
    expected_err, expected_y = jax_checkify.checkify(plain)(model.w[...], x)
    assert err.get() == expected_err.get()
    np.testing.assert_allclose(y, expected_y)
    assert int(model.calls[...]) == 1  # also when the check failed


def test_under_jit_and_throw():
    model = Scaler()
    f = nnx.jit(nnx.checkify(lambda m, x: m(x)))
    err, _ = f(model, jnp.ones(3))
    err.throw()  # no error: does nothing
    err, _ = f(model, -jnp.ones(3))
    with pytest.raises(jax_checkify.JaxRuntimeError, match="x must be positive"):
        err.throw()
    assert int(model.calls[...]) == 2


def test_error_categories():
    def index(v, i):
        return v[...][i]

    v = nnx.Variable(jnp.arange(3.0))
    err, _ = nnx.checkify(index, errors=jax_checkify.index_checks)(v, 5)
    assert "out-of-bounds" in err.get()
    err, _ = nnx.checkify(index)(v, 5)  # user checks only: indexing is not checked
    assert err.get() is None
    err, _ = nnx.checkify(lambda v: jnp.log(v[...] - 1.0),
                          errors=jax_checkify.float_checks)(v)
    assert "nan" in err.get()


def test_modules_in_outputs_and_structure_changes():
    model = Scaler()

    def grow(m):
        m.extra = nnx.Variable(jnp.zeros(2))
        return m, nnx.Linear(1, 1, rngs=nnx.Rngs(0))

    err, (same, new) = nnx.checkify(grow)(model)
    assert err.get() is None and same is model
    assert isinstance(new, nnx.Linear) and model.extra.shape == (2,)


def test_exception_leaves_model_unchanged():
    model = Scaler()

    def bad(m):
        m.calls[...] += 5
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        nnx.checkify(bad)(model)
    assert int(model.calls[...]) == 0


def test_grad_of_checkified_function():
    model = Scaler()
    x = jnp.array([1.0, 2.0, 4.0])

    def loss(m):
        err, y = nnx.checkify(lambda m: m(x))(m)
        return y.sum(), err

    grads, err = nnx.grad(loss, has_aux=True)(model)
    assert err.get() is None
    np.testing.assert_allclose(grads["w"][...], jnp.log(x))
    assert int(model.calls[...]) == 1
    np.testing.assert_allclose(jax.grad(lambda w: plain(w, x).sum())(model.w[...]),
                               grads["w"][...])
