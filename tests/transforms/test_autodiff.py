"""Tests for ``nnx.grad`` and ``nnx.value_and_grad``, compared with ``jax.grad`` on the
equivalent pure functions of pytrees."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx


# ----------------------------------------------------------------------------- modules
class Linear(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)))
        self.bias = nnx.Param(jax.random.normal(rngs.params(), (dout,)))

    def __call__(self, x):
        return x @ self.kernel + self.bias


class Norm(nnx.Module):
    """Normalises with batch statistics and keeps a running mean (a BatchStat)."""

    def __init__(self, n):
        self.scale = nnx.Param(jnp.linspace(0.5, 1.5, n))
        self.mean = nnx.BatchStat(jnp.zeros((n,)))
        self.steps = nnx.Variable(jnp.array(0))  # neither Param nor BatchStat
        self.cache = nnx.Cache(jnp.ones((n,)))

    def __call__(self, x):
        mean = x.mean(0)
        self.mean[...] = 0.9 * self.mean + 0.1 * mean
        self.steps[...] += 1
        return (x - mean) * self.scale * self.cache


class Model(nnx.Module):
    def __init__(self, seed=0):
        rngs = nnx.Rngs(seed)
        self.linear = Linear(2, 3, rngs=rngs)
        self.norm = Norm(3)
        self.out = Linear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.norm(self.linear(x))))


X = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]])
Y = jnp.array([[1.0], [0.0], [-1.0], [0.5]])


def pure_forward(params, stats, x):
    """Model.__call__ on pytrees: returns (prediction, new running mean)."""
    h = x @ params["linear"]["kernel"] + params["linear"]["bias"]
    mean = h.mean(0)
    new_mean = 0.9 * stats["mean"] + 0.1 * mean
    h = (h - mean) * params["norm"]["scale"] * stats["cache"]
    h = jnp.tanh(h)
    return h @ params["out"]["kernel"] + params["out"]["bias"], new_mean


def pure_loss(params, stats, x, y):
    pred, new_mean = pure_forward(params, stats, x)
    return ((pred - y) ** 2).mean(), new_mean


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean()


def params_of(model):
    return {
        "linear": {"kernel": model.linear.kernel[...], "bias": model.linear.bias[...]},
        "norm": {"scale": model.norm.scale[...]},
        "out": {"kernel": model.out.kernel[...], "bias": model.out.bias[...]},
    }


def stats_of(model):
    return {"mean": model.norm.mean[...], "cache": model.norm.cache[...]}


def flat(tree):
    return {path: leaf for path, leaf in nnx.to_flat_state(tree)}


def assert_state_matches(grads, want, kind=nnx.Param):
    """``grads`` is a State of ``kind`` leaves with the paths and values of ``want``."""
    assert isinstance(grads, nnx.State)
    got = flat(grads)
    expected = flat(nnx.State(want))
    assert got.keys() == expected.keys()
    for path, leaf in got.items():
        assert type(leaf) is kind, path
        np.testing.assert_allclose(leaf[...], expected[path], rtol=1e-5, atol=1e-6,
                                   err_msg=str(path))


# ---------------------------------------------------------------- against jax.grad
def test_grad_matches_jax_grad_on_the_pure_function():
    model = Model()
    want = jax.grad(lambda p: pure_loss(p, stats_of(model), X, Y)[0])(params_of(model))
    grads = nnx.grad(loss_fn)(model, X, Y)
    assert_state_matches(grads, want)


def test_value_and_grad_matches_jax():
    model = Model()
    (want_loss, _), want = jax.value_and_grad(
        lambda p: pure_loss(p, stats_of(model), X, Y), has_aux=True)(params_of(model))
    loss, grads = nnx.value_and_grad(loss_fn)(model, X, Y)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert_state_matches(grads, want)


def test_grads_are_a_state_with_the_parameter_paths_and_metadata():
    model = Model()
    model.linear.kernel.set_metadata(out_sharding=("in", "out"))
    grads = nnx.grad(loss_fn)(model, X, Y)
    params = nnx.state(model, nnx.Param)
    assert [p for p, _ in nnx.to_flat_state(grads)] == [
        p for p, _ in nnx.to_flat_state(params)]
    g = grads["linear"]["kernel"]
    assert type(g) is nnx.Param and g is not model.linear.kernel
    assert g.get_metadata(exclude_required=True) == {"out_sharding": ("in", "out")}
    assert g.shape == model.linear.kernel.shape
    # a State of gradients is a pytree usable with jax.tree and optax
    doubled = jax.tree.map(lambda a: 2 * a, grads)
    np.testing.assert_allclose(doubled["out"]["bias"][...], 2 * grads["out"]["bias"][...])
    updates, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params))
    np.testing.assert_allclose(updates["out"]["bias"][...], -0.1 * grads["out"]["bias"][...],
                               rtol=1e-6)


def test_default_differentiates_only_params():
    model = Model()
    grads = nnx.grad(loss_fn)(model, X, Y)
    kinds = {type(leaf) for _, leaf in nnx.to_flat_state(grads)}
    assert kinds == {nnx.Param}
    paths = set(flat(grads))
    assert ("norm", "mean") not in paths and ("norm", "steps") not in paths
    assert ("norm", "cache") not in paths


def test_grad_does_not_change_parameter_values():
    model = Model()
    before = {p: np.asarray(v) for p, v in flat(nnx.state(model, nnx.Param)).items()}
    nnx.grad(loss_fn)(model, X, Y)
    for path, leaf in flat(nnx.state(model, nnx.Param)).items():
        np.testing.assert_array_equal(leaf[...], before[path])


# --------------------------------------------------------------------- DiffState
def test_diffstate_selects_batch_stats():
    model = Model()

    def loss(m, x):
        m.norm(m.linear(x))
        return (m.norm.mean[...] ** 2).sum() + m.linear(x).sum()

    # d/d(mean_old) of sum((0.9 * mean_old + 0.1 * batch_mean)^2)
    h = X @ model.linear.kernel[...] + model.linear.bias[...]
    new_mean = 0.9 * model.norm.mean[...] + 0.1 * h.mean(0)
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.BatchStat))(model, X)
    assert_state_matches(grads, {"norm": {"mean": 2 * 0.9 * new_mean}}, kind=nnx.BatchStat)


def test_diffstate_with_a_path_filter():
    model = Model()
    kernels = nnx.All(nnx.Param, nnx.PathContains("kernel"))
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, kernels))(model, X, Y)
    full = nnx.grad(loss_fn)(model, X, Y)
    assert set(flat(grads)) == {("linear", "kernel"), ("out", "kernel")}
    for path, leaf in flat(grads).items():
        np.testing.assert_allclose(leaf[...], flat(full)[path][...], rtol=1e-6)


def test_diffstate_for_two_arguments():
    encoder, norm = Linear(2, 3, rngs=nnx.Rngs(0)), Norm(3)

    def loss(enc, nrm, x):
        return (nrm(enc(x)) ** 2).sum() + (nrm.cache[...] * enc.bias).sum()

    g_enc, g_norm = nnx.grad(loss, argnums=(nnx.DiffState(0, nnx.Param),
                                             nnx.DiffState(1, nnx.Cache)))(encoder, norm, X)

    def pure(enc_params, cache):
        h = X @ enc_params["kernel"] + enc_params["bias"]
        out = (h - h.mean(0)) * norm.scale[...] * cache
        return (out ** 2).sum() + (cache * enc_params["bias"]).sum()

    want_enc, want_cache = jax.grad(pure, argnums=(0, 1))(
        {"kernel": encoder.kernel[...], "bias": encoder.bias[...]}, norm.cache[...])
    assert_state_matches(g_enc, want_enc)
    assert_state_matches(g_norm, {"cache": want_cache}, kind=nnx.Cache)


def test_diffstate_argnum_may_be_negative():
    model = Linear(2, 3, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda x, m: m(x).sum(), argnums=nnx.DiffState(-1, nnx.Param))(X, model)
    np.testing.assert_allclose(grads["bias"][...], np.full(3, 4.0))


# ---------------------------------------------------------------------- argnums
def test_argnums_tuple_of_two_modules():
    a, b = Linear(2, 3, rngs=nnx.Rngs(0)), Linear(3, 1, rngs=nnx.Rngs(1))

    def loss(a, b, x):
        return (b(jnp.tanh(a(x))) ** 2).sum()

    def pure(pa, pb, x):
        h = jnp.tanh(x @ pa["kernel"] + pa["bias"])
        return ((h @ pb["kernel"] + pb["bias"]) ** 2).sum()

    ga, gb = nnx.grad(loss, argnums=(0, 1))(a, b, X)
    wa, wb = jax.grad(pure, argnums=(0, 1))(
        {"kernel": a.kernel[...], "bias": a.bias[...]},
        {"kernel": b.kernel[...], "bias": b.bias[...]}, X)
    assert_state_matches(ga, wa)
    assert_state_matches(gb, wb)
    gb_only = nnx.grad(loss, argnums=1)(a, b, X)
    assert_state_matches(gb_only, wb)
    (single,) = nnx.grad(loss, argnums=(1,))(a, b, X)  # a tuple of argnums: a tuple back
    assert_state_matches(single, wb)


def test_array_and_pytree_arguments_are_differentiated_like_jax():
    model = Linear(2, 3, rngs=nnx.Rngs(0))

    def loss(m, x, extra):
        return (m(x) * extra["w"]).sum() + (extra["b"] ** 2).sum()

    extra = {"w": jnp.arange(3.0), "b": jnp.ones(2)}
    gx = nnx.grad(loss, argnums=1)(model, X, extra)
    assert isinstance(gx, jax.Array) and not isinstance(gx, nnx.Variable)

    def pure(p, x, extra):
        return ((x @ p["kernel"] + p["bias"]) * extra["w"]).sum() + (extra["b"] ** 2).sum()

    params = {"kernel": model.kernel[...], "bias": model.bias[...]}
    wp, wx, we = jax.grad(pure, argnums=(0, 1, 2))(params, X, extra)
    np.testing.assert_allclose(gx, wx, rtol=1e-6)
    gm, gx2, ge = nnx.grad(loss, argnums=(0, 1, 2))(model, X, extra)
    assert_state_matches(gm, wp)
    np.testing.assert_allclose(gx2, wx, rtol=1e-6)
    assert ge.keys() == {"w", "b"}
    np.testing.assert_allclose(ge["w"], we["w"], rtol=1e-6)
    np.testing.assert_allclose(ge["b"], we["b"], rtol=1e-6)


def test_argnums_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="argnums 3 is out of range"):
        nnx.grad(loss_fn, argnums=3)(Model(), X, Y)


# ----------------------------------------------------------------------- has_aux
def test_has_aux_with_modules_in_aux():
    model = Model()

    def loss(m, x, y):
        pred = m(x)
        head = Linear(1, 1, rngs=nnx.Rngs(4))  # created inside: comes back concrete
        return ((pred - y) ** 2).mean(), {"model": m, "sub": m.norm, "new": head,
                                          "pred": pred}

    (value, aux), grads = nnx.value_and_grad(loss, has_aux=True)(model, X, Y)
    assert aux["model"] is model and aux["sub"] is model.norm
    new = aux["new"]
    assert type(new) is Linear and not isinstance(new.kernel[...], jax.core.Tracer)
    np.testing.assert_allclose(new.kernel[...], Linear(1, 1, rngs=nnx.Rngs(4)).kernel[...])
    want_pred, _ = pure_forward(params_of(Model()), stats_of(Model()), X)
    np.testing.assert_allclose(aux["pred"], want_pred, rtol=1e-5)
    np.testing.assert_allclose(value, ((want_pred - Y) ** 2).mean(), rtol=1e-5)
    g2, aux2 = nnx.grad(loss, has_aux=True)(model, X, Y)
    assert aux2["model"] is model
    assert set(flat(g2)) == set(flat(grads))


def test_has_aux_requires_a_pair():
    with pytest.raises(TypeError, match="pair"):
        nnx.grad(lambda m: m.bias.sum(), has_aux=True)(Linear(1, 1, rngs=nnx.Rngs(0)))


# -------------------------------------------------------------- state updates inside
def test_batch_stat_updates_inside_grad_are_visible_outside():
    model, eager = Model(), Model()
    grads = nnx.grad(loss_fn)(model, X, Y)
    loss_fn(eager, X, Y)
    np.testing.assert_allclose(model.norm.mean[...], eager.norm.mean[...], rtol=1e-6)
    assert int(model.norm.steps[...]) == 1
    _, want_mean = pure_loss(params_of(Model()), stats_of(Model()), X, Y)
    np.testing.assert_allclose(model.norm.mean[...], want_mean, rtol=1e-6)
    assert not isinstance(model.norm.mean[...], jax.core.Tracer)
    # the gradient is taken at the old statistics and ignores the update
    want = jax.grad(lambda p: pure_loss(p, stats_of(Model()), X, Y)[0])(params_of(Model()))
    assert_state_matches(grads, want)


def test_structural_changes_inside_grad_are_visible_outside():
    model = Linear(2, 3, rngs=nnx.Rngs(0))

    def loss(m, x):
        y = m(x)
        m.last = nnx.Intermediate(y)
        m.sub = Linear(3, 1, rngs=nnx.Rngs(1))
        return (m.sub(y) ** 2).sum()

    grads = nnx.grad(loss)(model, X)
    assert set(flat(grads)) == {("kernel",), ("bias",)}  # the new params have no grads
    np.testing.assert_allclose(model.last[...], X @ model.kernel[...] + model.bias[...],
                               rtol=1e-6)
    assert isinstance(model.sub, Linear) and not isinstance(model.sub.kernel[...],
                                                            jax.core.Tracer)


def test_shared_parameter_gets_one_gradient_summing_both_uses():
    class Tied(nnx.Module):
        def __init__(self):
            self.p = nnx.Param(jnp.array([1.0, 2.0]))
            self.q = self.p

    tied = Tied()
    grads = nnx.grad(lambda t: (t.p[...] * t.q[...] * 3).sum())(tied)
    assert set(flat(grads)) == {("p",)}
    want = jax.grad(lambda p: (p * p * 3).sum())(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(grads["p"][...], want)
    assert tied.p is tied.q


def test_exception_inside_grad_leaves_the_model_unchanged():
    model = Model()
    before = {p: np.asarray(v[...]) for p, v in flat(nnx.state(model)).items()}

    def loss(m, x):
        m(x)
        m.extra = nnx.Param(jnp.ones(1))
        raise RuntimeError("inside grad")

    with pytest.raises(RuntimeError, match="inside grad"):
        nnx.grad(loss)(model, X)
    after = {p: np.asarray(v[...]) for p, v in flat(nnx.state(model)).items()}
    assert after.keys() == before.keys() and not hasattr(model, "extra")
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])


def test_mutating_a_captured_module_inside_grad_raises():
    model = Model()

    def loss(x):
        model.norm.mean[...] = x.mean(0)
        return x.sum()

    with pytest.raises(nnx.TraceContextError):
        nnx.grad(loss)(jnp.ones((2, 3)))
    np.testing.assert_array_equal(model.norm.mean[...], np.zeros(3))


# ------------------------------------------------------------------ composition
def test_grad_inside_jit_matches_eager_grad():
    jitted_model, eager_model = Model(), Model()
    traces = []

    @nnx.jit
    def step(m, x, y):
        traces.append(1)
        return nnx.value_and_grad(loss_fn)(m, x, y)

    for _ in range(2):
        loss_j, grads_j = step(jitted_model, X, Y)
        loss_e, grads_e = nnx.value_and_grad(loss_fn)(eager_model, X, Y)
        np.testing.assert_allclose(loss_j, loss_e, rtol=1e-5)
        for path, leaf in flat(grads_e).items():
            assert type(flat(grads_j)[path]) is nnx.Param
            np.testing.assert_allclose(flat(grads_j)[path][...], leaf[...], rtol=1e-5,
                                       atol=1e-6)
    assert len(traces) == 1
    np.testing.assert_allclose(jitted_model.norm.mean[...], eager_model.norm.mean[...],
                               rtol=1e-5)
    assert int(jitted_model.norm.steps[...]) == 2


def test_jitted_sgd_loop_matches_pure_jax():
    model = Model()
    params, stats = params_of(model), stats_of(model)

    @nnx.jit
    def step(m, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(m, x, y)
        for path, g in nnx.to_flat_state(grads):
            var = m
            for key in path:
                var = getattr(var, key)
            var[...] = var - 0.1 * g
        return loss

    @jax.jit
    def raw_step(params, stats, x, y):
        (loss, new_mean), grads = jax.value_and_grad(pure_loss, has_aux=True)(
            params, stats, x, y)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return loss, params, {**stats, "mean": new_mean}

    for _ in range(3):
        got = step(model, X, Y)
        want, params, stats = raw_step(params, stats, X, Y)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for path, leaf in flat(nnx.State(params)).items():
        np.testing.assert_allclose(flat(nnx.state(model))[path][...], leaf, rtol=1e-5)
    np.testing.assert_allclose(model.norm.mean[...], stats["mean"], rtol=1e-5)


def test_second_order_grad():
    class Cubic(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array([1.0, 2.0]))

    def f(m):
        return (m.w[...] ** 3).sum()

    def g_sum(m):
        return nnx.grad(f)(m)["w"][...].sum()

    grads = nnx.grad(g_sum)(Cubic())  # d/dw sum(3 w^2) = 6 w
    np.testing.assert_allclose(grads["w"][...], [6.0, 12.0])


class Noisy(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.array([1.0, -2.0, 3.0]))
        self.rngs = nnx.Rngs(noise=7)

    def __call__(self):
        return self.w * jax.random.normal(self.rngs.noise(), (3,))


def test_rngs_inside_grad():
    model, eager = Noisy(), Noisy()
    grads = nnx.grad(lambda m: (m() ** 2).sum())(model)
    noise = jax.random.normal(eager.rngs.noise(), (3,))  # the key the first call used
    np.testing.assert_allclose(grads["w"][...], 2 * model.w[...] * noise**2, rtol=1e-5)
    assert int(model.rngs.noise.count[...]) == 1
    assert set(flat(grads)) == {("w",)}  # RNG state is not differentiated
    grads2 = nnx.jit(nnx.grad(lambda m: (m() ** 2).sum()))(model)
    noise2 = jax.random.normal(eager.rngs.noise(), (3,))
    np.testing.assert_allclose(grads2["w"][...], 2 * model.w[...] * noise2**2, rtol=1e-5)
    assert int(model.rngs.noise.count[...]) == 2


def test_decorator_forms():
    model = Linear(2, 1, rngs=nnx.Rngs(0))

    @nnx.grad
    def g(m):
        return m(X).sum()

    @nnx.grad(has_aux=True)
    def g_aux(m):
        return m(X).sum(), "aux"

    @nnx.value_and_grad(argnums=1)
    def vg(x, m):
        return m(x).sum()

    np.testing.assert_allclose(g(model)["bias"][...], [4.0])
    grads, aux = g_aux(model)
    assert aux == "aux"
    np.testing.assert_allclose(grads["kernel"][...], X.sum(0)[:, None], rtol=1e-6)
    value, grads = vg(X, model)
    np.testing.assert_allclose(value, model(X).sum(), rtol=1e-6)
    np.testing.assert_allclose(grads["bias"][...], [4.0])


# ------------------------------------------------------------- nnxlib's own layers
@pytest.mark.skipif(not hasattr(nnx, "Linear"), reason="nnx.Linear not available")
def test_nnx_linear_grads_match_jax():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m, x: (m(x) ** 2).sum())(layer, X)
    params = {"kernel": layer.kernel[...], "bias": layer.bias[...]}
    want = jax.grad(lambda p: ((X @ p["kernel"] + p["bias"]) ** 2).sum())(params)
    assert_state_matches(grads, want)


@pytest.mark.skipif(not hasattr(nnx, "BatchNorm"), reason="nnx.BatchNorm not available")
def test_nnx_batchnorm_grads_and_statistics():
    bn = nnx.BatchNorm(2, momentum=0.9, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m, x: (m(x) * jnp.array([1.0, 2.0])).sum())(bn, X)
    assert set(flat(grads)) == {("scale",), ("bias",)}
    np.testing.assert_allclose(grads["bias"][...], [4.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose(bn.mean[...], 0.1 * X.mean(0), rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * X.var(0), rtol=1e-5)
