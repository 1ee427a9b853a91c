"""Tests for ``nnx.vjp``, ``nnx.jvp`` and ``nnx.custom_vjp``: results equal JAX on plain
pytrees (and flax.nnx's custom_vjp on the same example), module cotangents are States,
and state changed inside is written back."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Dense(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)))
        self.bias = nnx.Param(jnp.full((dout,), 0.1))
        self.mean = nnx.BatchStat(jnp.zeros((dout,)))
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        y = jnp.tanh(x @ self.kernel + self.bias)
        self.mean[...] = 0.9 * self.mean + 0.1 * y.mean(0)
        self.count[...] += 1
        return y


def params(m):
    return {"kernel": m.kernel[...], "bias": m.bias[...]}


def plain_apply(p, x):
    return jnp.tanh(x @ p["kernel"] + p["bias"])


X = jnp.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])


# --------------------------------------------------------------------------------- vjp
def test_vjp_matches_jax_vjp_and_writes_state_back():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    p = params(model)
    y, vjp_fn = nnx.vjp(lambda m, x: m(x), model, X)
    expected_y, expected_vjp = jax.vjp(plain_apply, p, X)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6)
    ct = jnp.arange(4.0).reshape(2, 2)
    m_ct, x_ct = vjp_fn(ct)
    p_ct, expected_x_ct = expected_vjp(ct)
    assert isinstance(m_ct, nnx.State) and sorted(m_ct) == ["bias", "kernel"]
    assert isinstance(m_ct["kernel"], nnx.Param)
    np.testing.assert_allclose(m_ct["kernel"][...], p_ct["kernel"], rtol=1e-5)
    np.testing.assert_allclose(m_ct["bias"][...], p_ct["bias"], rtol=1e-5)
    np.testing.assert_allclose(x_ct, expected_x_ct, rtol=1e-5)
    assert int(model.count[...]) == 1
    np.testing.assert_allclose(model.mean[...], 0.1 * expected_y.mean(0), rtol=1e-6)


@pytest.mark.parametrize("graph", [True, False])
def test_vjp_without_graph_updates_is_module_shaped_like_jax_vjp(graph):
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    p = params(model)
    y, vjp_fn = nnx.vjp(lambda m, x: m(x), model, X, graph=graph, graph_updates=False)
    _, expected_vjp = jax.vjp(plain_apply, p, X)
    ct = jnp.arange(4.0).reshape(2, 2)
    m_ct, _ = vjp_fn(ct)
    p_ct, _ = expected_vjp(ct)
    # jax.vjp's convention: a Dense holding a cotangent for every floating leaf
    assert type(m_ct) is Dense and m_ct is not model
    np.testing.assert_allclose(m_ct.kernel[...], p_ct["kernel"], rtol=1e-5)
    np.testing.assert_allclose(m_ct.bias[...], p_ct["bias"], rtol=1e-5)
    np.testing.assert_array_equal(m_ct.mean[...], jnp.zeros(2))  # not an input of y
    assert m_ct.count[...].dtype == jax.dtypes.float0


def test_vjp_of_scalar_equals_grad():
    model = Dense(3, 2, rngs=nnx.Rngs(1))
    out, vjp_fn = nnx.vjp(lambda m: (m(X) ** 2).sum(), model)
    (m_ct,) = vjp_fn(jnp.ones(()))
    grads = nnx.grad(lambda m: (m(X) ** 2).sum())(model)
    jax.tree.map(np.testing.assert_allclose, nnx.to_pure_dict(m_ct),
                 nnx.to_pure_dict(grads))


def test_vjp_has_aux_decorator_forms_and_jit():
    model = Dense(3, 2, rngs=nnx.Rngs(0))

    @nnx.vjp(has_aux=True)
    def f(m, x):
        y = m(x)
        return y.sum(), {"mean": y.mean(), "model": m}

    out, vjp_fn, aux = f(model, X)
    assert aux["model"] is model
    (m_ct, _) = vjp_fn(1.0)
    assert m_ct["kernel"].shape == (3, 2)
    out2, vjp_fn2 = nnx.vjp(lambda m, x: m(x).sum())(model, X)
    assert int(model.count[...]) == 2

    @nnx.jit
    def jitted(m, x):
        out, vjp_fn = nnx.vjp(lambda m, x: m(x).sum(), m, x)
        return vjp_fn(jnp.ones(()))

    m_ct3, x_ct3 = jitted(model, X)
    expected = jax.grad(lambda p: plain_apply(p, X).sum())(params(model))
    np.testing.assert_allclose(m_ct3["kernel"][...], expected["kernel"], rtol=1e-5)
    assert int(model.count[...]) == 3


def test_vjp_nested_primal_and_variable_primal():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    scale = nnx.Param(jnp.array(2.0))
    out, vjp_fn = nnx.vjp(lambda pair, s: (pair[0](pair[1]) * s).sum(), (model, X), scale)
    (m_ct, x_ct), s_ct = vjp_fn(1.0)
    assert isinstance(m_ct, nnx.State) and x_ct.shape == X.shape
    assert isinstance(s_ct, nnx.Param)
    np.testing.assert_allclose(s_ct[...], plain_apply(params(model), X).sum(), rtol=1e-5)


def test_vjp_errors():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="returned a Dense"):
        nnx.vjp(lambda m: m, model)
    with pytest.raises(TypeError, match="has_aux=True expects"):
        nnx.vjp(lambda m: m(X).sum(), model, has_aux=True)
    assert int(model.count[...]) == 0


# --------------------------------------------------------------------------------- jvp
def test_jvp_matches_jax_jvp():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    p = params(model)
    tangent = {"kernel": jnp.ones((3, 2)) * 0.5, "bias": jnp.arange(2.0)}
    m_tangent = nnx.State({"kernel": nnx.Param(tangent["kernel"]),
                           "bias": nnx.Param(tangent["bias"])})
    x_tangent = jnp.ones_like(X)
    y, dy = nnx.jvp(lambda m, x: m(x), (model, X), (m_tangent, x_tangent))
    expected_y, expected_dy = jax.jvp(plain_apply, (p, X), (tangent, x_tangent))
    np.testing.assert_allclose(y, expected_y, rtol=1e-6)
    np.testing.assert_allclose(dy, expected_dy, rtol=1e-5)
    assert int(model.count[...]) == 1


def test_jvp_tangent_forms():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    p = params(model)
    # None: the module is constant
    _, dy = nnx.jvp(lambda m, x: m(x), (model, X), (None, jnp.ones_like(X)))
    _, expected = jax.jvp(lambda x: plain_apply(p, x), (X,), (jnp.ones_like(X),))
    np.testing.assert_allclose(dy, expected, rtol=1e-5)
    # a full-state tangent: the int counter is held constant, BatchStat moves too
    full = jax.tree.map(jnp.ones_like, nnx.state(model))
    _, dy_full = nnx.jvp(lambda m: m(X), (model,), (full,))
    ones = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
    _, expected_full = jax.jvp(lambda p: plain_apply(p, X), (p,), (ones,))
    np.testing.assert_allclose(dy_full, expected_full, rtol=1e-5)
    # a module of the same structure as tangent; a subset (kernel only)
    twin = Dense(3, 2, rngs=nnx.Rngs(0))
    _, dy_twin = nnx.jvp(lambda m: m(X), (model,), (twin,))
    _, expected_twin = jax.jvp(lambda p: plain_apply(p, X), (p,), (params(twin),))
    np.testing.assert_allclose(dy_twin, expected_twin, rtol=1e-5)
    kernel_only = nnx.State({"kernel": nnx.Param(jnp.ones((3, 2)))})
    _, dy_k = nnx.jvp(lambda m: m(X), (model,), (kernel_only,))
    _, expected_k = jax.jvp(lambda k: plain_apply({**p, "kernel": k}, X),
                            (p["kernel"],), (jnp.ones((3, 2)),))
    np.testing.assert_allclose(dy_k, expected_k, rtol=1e-5)


def test_jvp_has_aux_decorator_and_errors():
    model = Dense(3, 2, rngs=nnx.Rngs(0))
    f = nnx.jvp(lambda m: (m(X).sum(), m.count[...]), has_aux=True)
    out, tangent_out, aux = f((model,), (None,))
    assert float(tangent_out) == 0.0 and int(aux) == 1
    with pytest.raises(ValueError, match="no state there"):
        nnx.jvp(lambda m: m(X), (model,), (nnx.State({"nope": jnp.ones(())}),))
    with pytest.raises(ValueError, match="2 primals but 1 tangents"):
        nnx.jvp(lambda m, x: m(x), (model, X), (None,))
    with pytest.raises(ValueError, match="does not match its primal"):
        nnx.jvp(lambda m, xs: m(xs[0]), (model, (X,)), (None, X))
    assert int(model.count[...]) == 1


# -------------------------------------------------------------------------- custom_vjp
class Foo(nnx.Module):
    def __init__(self, x, y):
        self.x = nnx.Param(x)
        self.y = nnx.Param(y)
        self.s = nnx.BatchStat(jnp.array(0.0))


def make_f(nnx_lib, **kwargs):
    @nnx_lib.custom_vjp(**kwargs)
    def f(m, z):
        m.s[...] += 1.0
        return jnp.sin(m.x) * m.y * z

    def f_fwd(m, z):
        return f(m, z), (jnp.cos(m.x), jnp.sin(m.x), m, z)

    def f_bwd(res, g):
        input_updates_g, out_g = g
        cos_x, sin_x, m, z = res
        m_updates_g, z_updates_g = input_updates_g
        assert z_updates_g is None
        m_g = jax.tree.map(lambda v: v, m_updates_g)
        m_g["x"][...] = cos_x * out_g * m.y * z * 10  # deliberately not the true grad
        m_g["y"][...] = sin_x * out_g * z
        return m_g, sin_x * m.y * out_g

    f.defvjp(f_fwd, f_bwd)
    return f


def test_custom_vjp_matches_flax():
    from flax import nnx as flax_nnx

    class FlaxFoo(flax_nnx.Module):
        def __init__(self, x, y):
            self.x = flax_nnx.Param(x)
            self.y = flax_nnx.Param(y)
            self.s = flax_nnx.BatchStat(jnp.array(0.0))

    ours, theirs = Foo(jnp.array(1.0), jnp.array(2.0)), FlaxFoo(jnp.array(1.0), jnp.array(2.0))
    f, flax_f = make_f(nnx), make_f(flax_nnx)
    np.testing.assert_allclose(f(ours, 3.0), flax_f(theirs, 3.0))
    g_m, g_z = nnx.grad(f, argnums=(0, 1))(ours, 3.0)
    flax_m, flax_z = flax_nnx.grad(flax_f, argnums=(0, 1))(theirs, 3.0)
    assert sorted(g_m) == sorted(flax_m) == ["x", "y"]
    for name in ("x", "y"):
        np.testing.assert_allclose(g_m[name][...], flax_m[name][...], rtol=1e-6)
    np.testing.assert_allclose(g_z, flax_z, rtol=1e-6)
    assert float(ours.s[...]) == float(theirs.s[...]) == 2.0


def test_custom_vjp_without_modules_matches_jax():
    @jax.custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))

    @nnx.custom_vjp
    def ours(x):
        return x

    ours.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g[1], -1, 1),))
    x = jnp.array([1.0, 2.0, 3.0])
    expected = jax.grad(lambda x: (clip_grad(x) * 3).sum())(x)
    np.testing.assert_allclose(jax.grad(lambda x: (ours(x) * 3).sum())(x), expected)
    np.testing.assert_allclose(nnx.jit(jax.grad(lambda x: (ours(x) * 3).sum()))(x), expected)


def test_custom_vjp_diffstate_selects_substate():
    @nnx.custom_vjp(nondiff_argnums=(nnx.DiffState(0, nnx.PathContains("x")),))
    def f(m):
        return jnp.sin(m.x) * m.y

    def f_fwd(m):
        return f(m), (jnp.cos(m.x), m)

    def f_bwd(res, g):
        (m_updates_g,), out_g = g
        cos_x, m = res
        assert sorted(m_updates_g) == ["s", "x", "y"]  # every leaf, as in flax.nnx
        m_g = jax.tree.map(lambda v: v, m_updates_g)
        m_g["x"][...] = cos_x * out_g * m.y
        del m_g["y"], m_g["s"]  # not differentiable: bwd gives cotangents of x only
        return (m_g,)

    f.defvjp(f_fwd, f_bwd)
    m = Foo(jnp.array(1.0), jnp.array(2.0))
    grads = nnx.grad(f, argnums=nnx.DiffState(0, nnx.PathContains("x")))(m)
    assert sorted(grads) == ["x"]
    np.testing.assert_allclose(grads["x"][...], jnp.cos(1.0) * 2.0, rtol=1e-6)


def test_custom_vjp_int_nondiff_args_come_first_in_bwd():
    seen = []

    @nnx.custom_vjp(nondiff_argnums=(1,))
    def scale(m, factor):
        return m.x * factor

    def fwd(m, factor):
        return scale(m, factor), None

    def bwd(factor, res, g):
        seen.append(type(factor).__name__)
        (m_updates_g,), out_g = g
        return (nnx.State({"x": nnx.Param(out_g * factor * 100)}),)  # partial State: y is 0

    scale.defvjp(fwd, bwd)
    m = Foo(jnp.array(1.0), jnp.array(2.0))
    grads = nnx.grad(lambda m: scale(m, 3.0))(m)
    np.testing.assert_allclose(grads["x"][...], 300.0)
    np.testing.assert_allclose(grads["y"][...], 0.0)
    assert len(seen) == 1


def test_custom_vjp_modules_as_nondiff_and_kwargs():
    @nnx.custom_vjp(nondiff_argnums=(0,))
    def apply(m, x):
        return m.y * x

    apply.defvjp(lambda m, x: (apply(m, x), None),
                 lambda m, res, g: (g[1] * m.y[...] * 2,))
    m = Foo(jnp.array(1.0), jnp.array(4.0))
    np.testing.assert_allclose(jax.grad(lambda x: apply(m, x=x))(1.0), 8.0)


def test_custom_vjp_under_jit_and_state_write_back():
    f = make_f(nnx)
    m = Foo(jnp.array(0.5), jnp.array(2.0))
    g = nnx.jit(nnx.grad(f))(m, 1.0)
    np.testing.assert_allclose(g["x"][...], jnp.cos(0.5) * 2.0 * 10, rtol=1e-6)
    assert float(m.s[...]) == 1.0
    f(m, 1.0)
    assert float(m.s[...]) == 2.0


def test_custom_vjp_errors():
    undefined = nnx.custom_vjp(lambda x: x)
    with pytest.raises(AttributeError, match="defvjp"):
        undefined(1.0)

    wrong_count = nnx.custom_vjp(lambda x, y: x * y)
    wrong_count.defvjp(lambda x, y: (x * y, None), lambda res, g: (g[1],))
    with pytest.raises(TypeError, match="one cotangent per differentiable argument"):
        jax.grad(wrong_count)(1.0, 2.0)

    @nnx.custom_vjp(nondiff_argnums=(nnx.DiffState(0, nnx.PathContains("x")),))
    def f(m):
        return m.x * m.y

    f.defvjp(lambda m: (f(m), None),
             lambda res, g: (nnx.State({"y": nnx.Param(jnp.array(1.0))}),))
    m = Foo(jnp.array(1.0), jnp.array(2.0))
    with pytest.raises(ValueError, match="not differentiable here"):
        nnx.grad(f)(m)

    bad_fwd = nnx.custom_vjp(lambda x: x)
    bad_fwd.defvjp(lambda x: x, lambda res, g: (g[1],))
    with pytest.raises(TypeError, match="fwd must return a pair"):
        jax.grad(bad_fwd)(1.0)

    grows = nnx.custom_vjp(lambda m: setattr(m, "new", nnx.Param(1.0)) or m.x,
                           graph_updates=False)
    grows.defvjp(lambda m: (m.x, None), lambda res, g: (None,))
    with pytest.raises(ValueError, match="changed the structure"):
        grows(m)
    assert not hasattr(m, "new")
    with pytest.raises(NotImplementedError):
        grows.defvjp(lambda m: None, lambda r, g: None, symbolic_zeros=True)


class Counted(nnx.Module):
    def __init__(self):
        self.x = nnx.Param(jnp.array(1.0))
        self.y = nnx.Param(jnp.array(2.0))
        self.calls = 0  # static: changing it is a structural change
        self.seen = nnx.BatchStat(jnp.array(0))


def _counting_vjp(**options):
    @nnx.custom_vjp(**options)
    def f(m):
        m.seen[...] += 1
        if options.get("graph_updates", True):
            m.calls += 1
        return jnp.sin(m.x) * m.y

    def f_fwd(m):
        return f(m), (jnp.cos(m.x), jnp.sin(m.x), m)

    def f_bwd(res, g, *updates):
        cos_x, sin_x, m = res
        if options.get("graph_updates", True):
            (m_updates_g,), out_g = g
            m_g = jax.tree.map(lambda v: v, m_updates_g)
            m_g["x"][...] = cos_x * out_g * m.y
            m_g["y"][...] = sin_x * out_g
            return (m_g,)
        ((m_updates_g,),) = updates  # only the changed state has an entry
        assert isinstance(m_updates_g.seen, nnx.BatchStat) and m_updates_g.x is None
        m_g = nnx.clone(m)
        m_g.x[...] = cos_x * g * m.y
        m_g.y[...] = sin_x * g
        return (m_g,)

    f.defvjp(f_fwd, f_bwd)
    return f


def test_custom_vjp_graph_updates_apply_structural_changes_and_state():
    m = Counted()
    grads = nnx.grad(_counting_vjp(), argnums=nnx.DiffState(0, nnx.Param))(m)
    np.testing.assert_allclose(grads["x"][...], jnp.cos(1.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(grads["y"][...], jnp.sin(1.0), rtol=1e-6)
    assert m.calls == 1 and int(m.seen[...]) == 1  # both kinds of change came back


@pytest.mark.parametrize("graph", [True, False])
def test_custom_vjp_without_graph_updates_is_like_jax_with_update_cotangents(graph):
    m = Counted()
    grads = nnx.grad(_counting_vjp(graph=graph, graph_updates=False), allow_int=True,
                     graph=graph, graph_updates=False)(m)
    assert isinstance(grads, Counted)  # module-shaped, as jax.grad of a pytree
    np.testing.assert_allclose(grads.x[...], jnp.cos(1.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(grads.y[...], jnp.sin(1.0), rtol=1e-6)
    assert int(m.seen[...]) == 1 and m.calls == 0


def test_custom_vjp_returns_an_input_module_in_graph_mode():
    @nnx.custom_vjp
    def f(m1, m2):
        return jnp.sin(m1.x) * m1.y, m2

    f.defvjp(lambda m1, m2: (f(m1, m2), (jnp.cos(m1.x), m1.y)),
             lambda res, g: (nnx.State({"x": g[1][0] * res[0] * res[1]}), None))
    a, b = Counted(), Counted()
    y, same = f(a, b)
    assert same is b
    grads = nnx.grad(lambda m1, m2: f(m1, m2)[0],
                     argnums=nnx.DiffState(0, nnx.PathContains("x")))(a, b)
    np.testing.assert_allclose(grads["x"][...], jnp.cos(1.0) * 2.0, rtol=1e-6)
