"""Tests for ``nnx.cond``, ``nnx.switch``, ``nnx.fori_loop`` and ``nnx.while_loop``.

Each result is compared with the same computation written with ``jax.lax`` on plain
pytrees of arrays; state changes must be visible on the caller's modules, errors must
leave them unchanged, and the transforms must nest with ``jit`` and ``grad``.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Dense(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)) * 0.5)
        self.bias = nnx.Param(jnp.zeros((dout,)))
        self.calls = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.calls[...] += 1
        return jnp.tanh(x @ self.kernel + self.bias)


class Pair(nnx.Module):
    def __init__(self):
        self.a = nnx.Variable(jnp.array(0.0))
        self.b = nnx.Variable(jnp.array(0.0))


def values(module):
    return jax.tree.map(lambda v: np.asarray(v), nnx.to_pure_dict(nnx.state(module)))


def assert_tree_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, **kw),
                 a, b)


# ------------------------------------------------------------------------------- cond
@pytest.mark.parametrize("pred", [True, False])
def test_cond_matches_plain_jax(pred):
    model = Dense(3, 3, rngs=nnx.Rngs(0))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    x = jnp.arange(6.0).reshape(2, 3) / 6

    def true_fun(m, x):
        return m(x)

    def false_fun(m, x):
        m.bias[...] += 1.0
        return -x

    def plain(p, x):
        def t(p, x):
            return p, jnp.tanh(x @ p["kernel"] + p["bias"]), 1

        def f(p, x):
            return {**p, "bias": p["bias"] + 1.0}, -x, 0

        return jax.lax.cond(pred, t, f, p, x)

    expected_params, expected_y, expected_calls = plain(params, x)
    y = nnx.cond(jnp.array(pred), true_fun, false_fun, model, x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6)
    np.testing.assert_allclose(model.bias[...], expected_params["bias"])
    assert int(model.calls[...]) == expected_calls


def test_cond_branches_change_different_variables():
    pair = Pair()

    def up(p, x):
        p.a[...] += x
        return x

    def down(p, x):
        p.b[...] -= x
        return -x

    assert float(nnx.cond(True, up, down, pair, 2.0)) == 2.0
    assert float(nnx.cond(False, up, down, pair, 3.0)) == -3.0
    assert (float(pair.a[...]), float(pair.b[...])) == (2.0, -3.0)


def test_cond_inside_jit_with_traced_predicate():
    pair = Pair()

    @nnx.jit
    def step(p, flag):
        return nnx.cond(flag, lambda p: p.a.__iadd__(1.0)[...],
                        lambda p: p.b.__iadd__(1.0)[...], p)

    for flag in [True, True, False]:
        step(pair, jnp.array(flag))
    assert (float(pair.a[...]), float(pair.b[...])) == (2.0, 1.0)


def test_cond_returns_caller_module_and_keeps_identity():
    pair = Pair()
    a = pair.a
    out = nnx.cond(True, lambda p: p, lambda p: p, pair)
    assert out is pair and pair.a is a


def test_cond_output_pytrees_and_modules():
    pair = Pair()
    out = nnx.cond(False, lambda p: {"p": p, "v": jnp.ones(2)},
                   lambda p: {"p": p, "v": jnp.zeros(2)}, pair)
    assert out["p"] is pair
    np.testing.assert_array_equal(out["v"], jnp.zeros(2))


def test_cond_structure_change_in_one_branch_is_an_error():
    pair = Pair()
    before = values(pair)

    def adds(p):
        p.a[...] += 1
        p.c = nnx.Variable(jnp.array(1.0))

    with pytest.raises(ValueError, match="change the structure of the module operands"):
        nnx.cond(True, adds, lambda p: None, pair)
    assert not hasattr(pair, "c")
    assert_tree_close(values(pair), before)


def test_cond_same_structure_change_in_both_branches_is_applied():
    pair = Pair()

    def t(p):
        p.c = nnx.Variable(jnp.array(1.0))

    def f(p):
        p.c = nnx.Variable(jnp.array(2.0))

    nnx.cond(False, t, f, pair)
    assert float(pair.c[...]) == 2.0
    nnx.cond(True, t, f, pair)  # replaces the variable again, same structure
    assert float(pair.c[...]) == 1.0


def test_cond_different_outputs_is_a_clear_error():
    with pytest.raises(ValueError, match="outputs of different structure"):
        nnx.cond(True, lambda x: (x, x), lambda x: x, jnp.ones(2))
    pair = Pair()
    with pytest.raises(ValueError, match="return different modules or variables"):
        nnx.cond(True, lambda p: p.a, lambda p: p.b, pair)


def test_cond_exception_leaves_model_unchanged():
    model = Dense(2, 2, rngs=nnx.Rngs(0))
    before = values(model)

    def boom(m, x):
        m.bias[...] += 5.0
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nnx.cond(True, boom, lambda m, x: None, model, jnp.ones((1, 2)))
    assert_tree_close(values(model), before)


def test_cond_captured_module_mutation_raises():
    pair = Pair()
    with pytest.raises(nnx.TraceContextError):
        nnx.cond(True, lambda: pair.a.__setitem__(..., 1.0), lambda: None)
    assert float(pair.a[...]) == 0.0


def test_cond_shared_variable_stays_shared():
    pair = Pair()
    pair.b = pair.a  # one variable, two paths
    def add(p):
        p.b[...] += 3.0

    nnx.cond(True, add, lambda p: None, pair)
    assert pair.a is pair.b and float(pair.a[...]) == 3.0


def test_cond_batchnorm_statistics_update():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    twin = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    x = jnp.arange(12.0).reshape(4, 3)
    nnx.cond(True, lambda m, x: m(x), lambda m, x: x, bn, x)
    twin(x)
    np.testing.assert_allclose(bn.mean[...], twin.mean[...])
    np.testing.assert_allclose(bn.var[...], twin.var[...])


def test_cond_under_grad_matches_plain_jax():
    model = Dense(2, 2, rngs=nnx.Rngs(1))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    x = jnp.array([[0.3, -0.2]])

    def loss(m, flag):
        return nnx.cond(flag, lambda m: (m(x) ** 2).sum(), lambda m: m(x).sum(), m)

    def plain_loss(p, flag):
        y = jnp.tanh(x @ p["kernel"] + p["bias"])
        return jax.lax.cond(flag, lambda y: (y ** 2).sum(), lambda y: y.sum(), y)

    for flag in [True, False]:
        grads = nnx.grad(loss)(model, jnp.array(flag))
        expected = jax.grad(plain_loss)(params, jnp.array(flag))
        np.testing.assert_allclose(grads["kernel"][...], expected["kernel"], rtol=1e-5)
        np.testing.assert_allclose(grads["bias"][...], expected["bias"], rtol=1e-5)


# ----------------------------------------------------------------------------- switch
def test_switch_matches_plain_jax_and_clamps():
    hits = nnx.Variable(jnp.zeros(3))

    def hit(k):
        def branch(v, x):
            v[k] += x
            return x * k
        return branch

    expected = jnp.zeros(3)
    for index in [0, 2, -4, 9, 1]:
        out = nnx.switch(index, [hit(0), hit(1), hit(2)], hits, 2.0)
        plain_state, plain_out = jax.lax.switch(
            index, [lambda s, x, k=k: (s.at[k].add(x), x * k) for k in range(3)],
            expected, 2.0)
        expected = plain_state
        assert float(out) == float(plain_out)
    np.testing.assert_array_equal(hits[...], expected)


def test_switch_inside_jit_with_traced_index():
    pair = Pair()
    def add_a(p):
        p.a[...] += 1.0

    def add_b(p):
        p.b[...] += 10.0

    branches = [add_a, add_b, lambda p: None]
    step = nnx.jit(lambda p, i: nnx.switch(i, branches, p))
    for i in [0, 1, 1, 2]:
        step(pair, jnp.array(i))
    assert (float(pair.a[...]), float(pair.b[...])) == (1.0, 20.0)


def test_switch_structure_mismatch_names_branches():
    pair = Pair()
    with pytest.raises(ValueError, match=r"branches\[1\]"):
        nnx.switch(0, [lambda p: None, lambda p: setattr(p, "z", nnx.Variable(1.0))],
                   pair)
    assert not hasattr(pair, "z")


def test_switch_needs_branches():
    with pytest.raises(ValueError, match="at least one branch"):
        nnx.switch(0, [], 1.0)


# -------------------------------------------------------------------------- fori_loop
def test_fori_loop_matches_plain_jax():
    model = Dense(3, 3, rngs=nnx.Rngs(0))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    x0 = jnp.ones((2, 3))

    def body(i, carry):
        m, x = carry
        m.bias[...] += 0.1 * i
        return m, m(x)

    def plain_body(i, carry):
        p, x, calls = carry
        p = {**p, "bias": p["bias"] + 0.1 * i}
        return p, jnp.tanh(x @ p["kernel"] + p["bias"]), calls + 1

    out_model, x = nnx.fori_loop(0, 5, body, (model, x0))
    p, expected_x, calls = jax.lax.fori_loop(0, 5, plain_body, (params, x0, 0))
    assert out_model is model
    np.testing.assert_allclose(x, expected_x, rtol=1e-5)
    np.testing.assert_allclose(model.bias[...], p["bias"], rtol=1e-6)
    assert int(model.calls[...]) == calls == 5


@pytest.mark.parametrize("unroll", [None, 2, True])
def test_fori_loop_unroll_and_traced_bounds(unroll):
    counter = nnx.Variable(jnp.array(0))

    def body(i, c):
        c[...] += i
        return c

    out = nnx.fori_loop(0, 6, body, counter, unroll=unroll)
    assert out is counter and int(counter[...]) == 15
    nnx.jit(lambda c, n: nnx.fori_loop(0, n, body, c))(counter, jnp.array(3))
    assert int(counter[...]) == 18


def test_fori_loop_with_rngs_advances_the_stream():
    rngs = nnx.Rngs(0)

    def body(i, carry):
        r, acc = carry
        return r, acc + jax.random.uniform(r.default())

    _, total = nnx.fori_loop(0, 4, body, (rngs, jnp.array(0.0)))
    assert int(rngs.default.count[...]) == 4
    reference = nnx.Rngs(0)
    expected = sum(float(jax.random.uniform(reference.default())) for _ in range(4))
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)


def test_fori_loop_structure_change_is_an_error_and_model_unchanged():
    pair = Pair()
    before = values(pair)

    def body(i, p):
        p.a[...] += 1
        p.extra = nnx.Variable(jnp.array(0.0))
        return p

    with pytest.raises(ValueError, match=r"same structure as init_val.*new state at \['extra'\]"):
        nnx.fori_loop(0, 3, body, pair)
    assert not hasattr(pair, "extra")
    assert_tree_close(values(pair), before)


def test_fori_loop_body_must_return_the_carry():
    pair = Pair()
    with pytest.raises(ValueError, match="same structure as init_val"):
        nnx.fori_loop(0, 2, lambda i, p: None, pair)


def test_fori_loop_exception_leaves_model_unchanged():
    pair = Pair()

    def body(i, p):
        p.a[...] += 1
        raise KeyError("inside")

    with pytest.raises(KeyError):
        nnx.fori_loop(0, 2, body, pair)
    assert float(pair.a[...]) == 0.0


def test_fori_loop_keeps_shared_references():
    first = Dense(2, 2, rngs=nnx.Rngs(0))
    second = Dense(2, 2, rngs=nnx.Rngs(1))
    second.kernel = first.kernel  # tied weights across two carried modules

    def body(i, carry):
        a, b = carry
        a.kernel[...] += 1.0
        return a, b

    kernel = first.kernel[...]
    nnx.fori_loop(0, 3, body, (first, second))
    assert second.kernel is first.kernel
    np.testing.assert_allclose(first.kernel[...], kernel + 3.0)


def test_grad_through_fori_loop_matches_plain_jax():
    model = Dense(2, 2, rngs=nnx.Rngs(3))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    x0 = jnp.array([[0.5, -1.0]])

    def loss(m):
        _, x = nnx.fori_loop(0, 3, lambda i, c: (c[0], c[0](c[1])), (m, x0))
        return (x ** 2).sum()

    def plain_loss(p):
        x = jax.lax.fori_loop(0, 3, lambda i, x: jnp.tanh(x @ p["kernel"] + p["bias"]), x0)
        return (x ** 2).sum()

    grads = nnx.jit(nnx.grad(loss))(model)
    expected = jax.grad(plain_loss)(params)
    np.testing.assert_allclose(grads["kernel"][...], expected["kernel"], rtol=1e-5)
    np.testing.assert_allclose(grads["bias"][...], expected["bias"], rtol=1e-5)
    assert int(model.calls[...]) == 3  # counted under grad and jit, written back


# ------------------------------------------------------------------------- while_loop
def test_while_loop_matches_plain_jax():
    model = Dense(2, 2, rngs=nnx.Rngs(0))
    params = {"kernel": model.kernel[...], "bias": model.bias[...]}

    def cond(carry):
        m, x, n = carry
        return n < 4

    def body(carry):
        m, x, n = carry
        return m, m(x), n + 1

    def plain_body(carry):
        x, n = carry
        return jnp.tanh(x @ params["kernel"] + params["bias"]), n + 1

    x0 = jnp.ones((1, 2))
    out_model, x, n = nnx.while_loop(cond, body, (model, x0, 0))
    expected_x, expected_n = jax.lax.while_loop(lambda c: c[1] < 4, plain_body, (x0, 0))
    assert out_model is model and int(n) == int(expected_n) == 4
    np.testing.assert_allclose(x, expected_x, rtol=1e-5)
    assert int(model.calls[...]) == 4


def test_while_loop_cond_mutations_are_discarded():
    pair = Pair()

    def cond(p):
        p.b[...] += 100.0  # dropped: cond_fun only decides
        return p.a[...] < 3

    def body(p):
        p.a[...] += 1
        return p

    nnx.while_loop(cond, body, pair)
    assert (float(pair.a[...]), float(pair.b[...])) == (3.0, 0.0)


def test_while_loop_inside_jit_and_structure_error():
    pair = Pair()
    step = nnx.jit(lambda p, limit: nnx.while_loop(
        lambda p: p.a[...] < limit, lambda p: (p.a.__iadd__(1.0), p)[1], p))
    step(pair, 5.0)
    assert float(pair.a[...]) == 5.0

    def grows(p):
        p.new = nnx.Variable(jnp.array(0.0))
        return p

    with pytest.raises(ValueError, match="while_loop: body_fun must return"):
        nnx.while_loop(lambda p: p.a[...] < 10, grows, pair)
    assert not hasattr(pair, "new") and float(pair.a[...]) == 5.0


def test_loops_without_modules_behave_like_lax():
    assert int(nnx.fori_loop(0, 4, lambda i, x: x + i, 0)) == 6
    assert int(nnx.while_loop(lambda x: x < 10, lambda x: x * 3, 1)) == 27


def test_raw_array_attributes_are_carried_and_written_back():
    class Holder(nnx.Module):
        def __init__(self):
            self.table = jnp.zeros(2)  # a raw array attribute
            self.pair = (jnp.ones(2), nnx.Param(jnp.ones(1)))  # arrays inside a tuple

    def bump(h):
        h.table = h.table + 1
        h.pair = (h.pair[0] * 2, h.pair[1])
        h.pair[1][...] += 1

    holder = Holder()
    nnx.fori_loop(0, 3, lambda i, h: (bump(h), h)[1], holder)
    nnx.cond(True, bump, lambda h: None, holder)
    np.testing.assert_array_equal(holder.table, jnp.full(2, 4.0))
    np.testing.assert_array_equal(holder.pair[0], jnp.full(2, 16.0))
    np.testing.assert_array_equal(holder.pair[1][...], jnp.full(1, 5.0))


@pytest.mark.parametrize("loop", ["while_loop", "fori_loop"])
def test_replacing_a_carried_variable_is_an_error_naming_it(loop):
    # Same structure, new object: the loop would silently write into the old one.
    def body(carry):
        m, c = carry
        m.kernel = nnx.Param(jnp.zeros_like(m.kernel))
        return m, c - 1.0

    module = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel = module.kernel[...]
    with pytest.raises(ValueError, match=r"replaced the Param at carry\[0\]\.kernel"):
        if loop == "while_loop":
            nnx.while_loop(lambda carry: carry[1] > 0, body, (module, 2.0))
        else:
            nnx.fori_loop(0, 2, lambda i, carry: body(carry), (module, 2.0))
    np.testing.assert_array_equal(module.kernel[...], kernel)  # left as it was
