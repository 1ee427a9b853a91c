"""Recurrent cells, RNN and Bidirectional against flax.linen (same parameters copied over)
and flax.nnx (same seed, bit-identical state)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx
from flax.linen.recurrent import flip_sequences as linen_flip_sequences
from jax.extend.core import ClosedJaxpr, Jaxpr

import nnxlib as nnx
from nnxlib.nn.recurrent import flip_sequences

CELLS = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]
IN, HIDDEN = 3, 4


# ------------------------------------------------------------------ helpers
def normal(seed, shape, dtype=jnp.float32):
    """Random test data from NumPy (no XLA compile per shape, unlike jax.random)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def randomize(model, seed=1):
    """Give every Param random values, so zero biases or a swapped block would show."""
    for i, (_, var) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.Param))):
        var[...] = normal(seed * 1000 + i, var.shape, var.dtype)


def linen_params(cell) -> dict:
    """Our cell's parameters laid out as the flax.linen cell of the same kind holds them."""
    def dense(kernel, bias=None):
        return {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}

    if isinstance(cell, nnx.LSTMCell):
        out = {g: dense(getattr(cell, "i" + g[1:] if g != "if" else "if_").kernel[...])
               for g in ("ii", "if", "ig", "io")}
        out.update({g: dense(getattr(cell, g).kernel[...], getattr(cell, g).bias[...])
                    for g in ("hi", "hf", "hg", "ho")})
        return out
    if isinstance(cell, nnx.OptimizedLSTMCell):
        ki = jnp.split(cell.dense_i.kernel[...], 4, axis=-1)
        kh = jnp.split(cell.dense_h.kernel[...], 4, axis=-1)
        bh = jnp.split(cell.dense_h.bias[...], 4, axis=-1)
        out = {}
        for n, g in enumerate("ifgo"):
            out["i" + g] = dense(ki[n])
            out["h" + g] = dense(kh[n], bh[n])
        return out
    if isinstance(cell, nnx.GRUCell):
        ki = jnp.split(cell.dense_i.kernel[...], 3, axis=-1)
        bi = jnp.split(cell.dense_i.bias[...], 3, axis=-1)
        kh = jnp.split(cell.dense_h.kernel[...], 3, axis=-1)
        out = {}
        for n, g in enumerate("rzn"):
            out["i" + g] = dense(ki[n], bi[n])
            out["h" + g] = dense(kh[n])
        # flax.nnx's GRU has no bias on the recurrent candidate product; linen's does.
        out["hn"]["bias"] = jnp.zeros(cell.hidden_features)
        return out
    assert isinstance(cell, nnx.SimpleCell)
    return {"i": dense(cell.dense_i.kernel[...], cell.dense_i.bias[...]),
            "h": dense(cell.dense_h.kernel[...])}


def make_cell(name, rngs=None, **kw):
    cell = getattr(nnx, name)(IN, HIDDEN, rngs=rngs or nnx.Rngs(0), **kw)
    randomize(cell)
    return cell


def random_carry(cell, batch, seed=7):
    shapes = cell._carry_shapes(batch)
    leaves, tree = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple)
                                              and all(isinstance(d, int) for d in s))
    return jax.tree_util.tree_unflatten(tree, [normal(seed * 100 + i, s)
                                               for i, s in enumerate(leaves)])


def close(a, b, tol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def flat(model, nnx_module):
    """``[(path, variable type name, value as numpy)]`` of a model's whole state."""
    out = []
    for path, var in nnx_module.to_flat_state(nnx_module.state(model)):
        value = var[...]
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        out.append((path, type(var).__name__, np.asarray(value)))
    return out


def assert_same_state(ours, theirs):
    a, b = flat(ours, nnx), flat(theirs, flax_nnx)
    assert [(p, t) for p, t, _ in a] == [(p, t) for p, t, _ in b]
    for (path, _, x), (_, _, y) in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        np.testing.assert_array_equal(x, y, err_msg=str(path))


def count_equations(jaxpr) -> int:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    total += count_equations(sub)
    return total


X = normal(3, (2, 5, IN))
LENGTHS = jnp.array([5, 2])


# ------------------------------------------------------------------ cells vs linen
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_cell_step_matches_linen(name, batch):
    cell = make_cell(name)
    carry = random_carry(cell, batch)
    x = normal(4, batch + (IN,))
    ref_carry, ref_y = getattr(linen, name)(HIDDEN).apply({"params": linen_params(cell)},
                                                            carry, x)
    new_carry, y = cell(carry, x)
    close(new_carry, ref_carry)
    close(y, ref_y)
    assert jax.tree.structure(new_carry) == jax.tree.structure(ref_carry)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("dtype,param_dtype", [(jnp.bfloat16, jnp.float32),
                                               (None, jnp.bfloat16)])
def test_cell_dtypes_match_linen(name, dtype, param_dtype):
    # jax's QR has no bfloat16 kernel on CPU: draw the recurrent kernel in float32 first.
    cell = make_cell(name, dtype=dtype, param_dtype=param_dtype,
                     recurrent_kernel_init=nnx.nn.recurrent.modified_orthogonal)
    assert {v.dtype for _, v in nnx.to_flat_state(nnx.state(cell))} == {jnp.dtype(param_dtype)}
    carry = jax.tree.map(lambda c: c.astype(param_dtype), random_carry(cell, (2,)))
    x = normal(4, (2, IN))
    ref = getattr(linen, name)(HIDDEN, dtype=dtype, param_dtype=param_dtype).apply(
        {"params": linen_params(cell)}, carry, x)
    out = cell(carry, x)
    assert jax.tree.map(lambda a: a.dtype, out) == jax.tree.map(lambda a: a.dtype, ref)
    close(jax.tree.map(lambda a: a.astype(jnp.float32), out),
          jax.tree.map(lambda a: a.astype(jnp.float32), ref), tol=2e-2)


def test_simple_cell_residual_matches_definition():
    cell = make_cell("SimpleCell", residual=True)
    h = random_carry(cell, (2,))
    x = normal(4, (2, IN))
    pre = x @ cell.dense_i.kernel[...] + cell.dense_i.bias[...] + h @ cell.dense_h.kernel[...]
    close(cell(h, x)[1], jnp.tanh(pre + h))
    close(make_cell("SimpleCell")(h, x)[1], jnp.tanh(pre))


def test_gate_and_activation_fns_are_used():
    cell = make_cell("LSTMCell", gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.relu)
    carry = random_carry(cell, (2,))
    x = normal(4, (2, IN))
    ref = linen.LSTMCell(HIDDEN, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.relu).apply(
        {"params": linen_params(cell)}, carry, x)
    close(cell(carry, x), ref)


# ------------------------------------------------------------------ RNN vs linen
RNN_OPTIONS = [
    {},
    {"return_carry": True},
    {"seq_lengths": LENGTHS, "return_carry": True},
    {"reverse": True},
    {"reverse": True, "keep_order": True, "seq_lengths": LENGTHS, "return_carry": True},
    {"time_major": True, "return_carry": True},
]


# The loop logic does not depend on the cell beyond the carry's structure: every option
# for a tuple carry (LSTM) and an array carry (GRU); the hardest option set for the rest.
RNN_CASES = ([("LSTMCell", o) for o in RNN_OPTIONS] + [("GRUCell", o) for o in RNN_OPTIONS]
             + [(name, RNN_OPTIONS[4]) for name in ("OptimizedLSTMCell", "SimpleCell")])


@pytest.mark.parametrize("name,options", RNN_CASES,
                         ids=[f"{n}-{'-'.join(o) or 'plain'}" for n, o in RNN_CASES])
def test_rnn_matches_linen(name, options):
    cell = make_cell(name)
    x = jnp.swapaxes(X, 0, 1) if options.get("time_major") else X
    carry0 = random_carry(cell, (2,))
    rnn = nnx.RNN(cell)
    ref = linen.RNN(getattr(linen, name)(HIDDEN)).apply(
        {"params": {"cell": linen_params(cell)}}, x, initial_carry=carry0, **options)
    close(rnn(x, initial_carry=carry0, **options), ref)
    if name != "LSTMCell":
        return
    # The same options given to the constructor instead of the call.
    ctor = {k: v for k, v in options.items() if k != "seq_lengths"}
    call = {k: v for k, v in options.items() if k == "seq_lengths"}
    close(nnx.RNN(cell, **ctor)(x, initial_carry=carry0, **call), ref)


def test_rnn_default_carry_and_unroll_match_linen():
    cell = make_cell("LSTMCell")
    ref = linen.RNN(linen.LSTMCell(HIDDEN)).apply({"params": {"cell": linen_params(cell)}}, X)
    close(nnx.RNN(cell)(X), ref)
    close(nnx.RNN(cell, unroll=2)(X), ref)


def test_rnn_several_batch_axes_and_no_batch():
    cell = make_cell("GRUCell")
    params = {"params": {"cell": linen_params(cell)}}
    x = normal(5, (2, 3, 4, IN))
    close(nnx.RNN(cell)(x), linen.RNN(linen.GRUCell(HIDDEN)).apply(params, x))
    # No batch axis: (time, features).
    close(nnx.RNN(cell)(x[0, 0]), nnx.RNN(cell)(x[:1, :1])[0, 0])
    # seq_lengths over two batch axes: the same as the batch flattened into one axis
    # (the one-axis case is checked against linen above), reshaped back.
    lengths = jnp.array([[4, 1, 2], [3, 4, 1]])
    carry, ys = nnx.RNN(cell)(x, seq_lengths=lengths, return_carry=True, reverse=True)
    flat_carry, flat_ys = linen.RNN(linen.GRUCell(HIDDEN)).apply(
        params, x.reshape(6, 4, IN), seq_lengths=lengths.reshape(6), return_carry=True,
        reverse=True)
    close(carry, flat_carry.reshape(2, 3, HIDDEN))
    close(ys, flat_ys.reshape(2, 3, 4, HIDDEN))


def test_bidirectional_matches_linen():
    fwd, bwd = make_cell("LSTMCell"), make_cell("GRUCell", rngs=nnx.Rngs(1))
    layer = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd))
    params = {"params": {"forward_rnn": {"cell": linen_params(fwd)},
                         "backward_rnn": {"cell": linen_params(bwd)}}}
    ref_layer = linen.Bidirectional(linen.RNN(linen.LSTMCell(HIDDEN)),
                                    linen.RNN(linen.GRUCell(HIDDEN)))
    for options in [{}, {"seq_lengths": LENGTHS, "return_carry": True}]:
        ref = ref_layer.apply(params, X, **options)
        close(layer(X, **options), ref)
    xt = jnp.swapaxes(X, 0, 1)
    close(nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd), time_major=True)(xt),
          ref_layer.apply(params, xt, time_major=True))
    carries = (random_carry(fwd, (2,)), random_carry(bwd, (2,), seed=8))
    close(layer(X, initial_carry=carries), ref_layer.apply(params, X, initial_carry=carries))
    summed = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd), merge_fn=jnp.add)
    close(summed(X), ref_layer.apply(params, X)[..., :HIDDEN]
          + ref_layer.apply(params, X)[..., HIDDEN:])


@pytest.mark.parametrize("time_major", [False, True])
def test_flip_sequences_matches_linen(time_major):
    x = normal(0, (2, 5, 3))
    if time_major:
        x = jnp.swapaxes(x, 0, 1)
    for lengths in [None, LENGTHS]:
        np.testing.assert_array_equal(flip_sequences(x, lengths, 1, time_major),
                                      linen_flip_sequences(x, lengths, 1, time_major))


# ------------------------------------------------------------------ same seed as flax.nnx
@pytest.mark.parametrize("name", CELLS)
def test_same_state_as_flax_nnx(name):
    ours_cell = getattr(nnx, name)(IN, HIDDEN, rngs=nnx.Rngs(0))
    ref_cell = getattr(flax_nnx, name)(IN, HIDDEN, rngs=flax_nnx.Rngs(0))
    assert_same_state(ours_cell, ref_cell)
    # The RNN's own carry stream (seeded 0, or forked from Rngs), then after two calls.
    for ours, ref in [(nnx.RNN(ours_cell), flax_nnx.RNN(ref_cell)),
                      (nnx.RNN(ours_cell, rngs=nnx.Rngs(5)),
                       flax_nnx.RNN(ref_cell, rngs=flax_nnx.Rngs(5)))]:
        assert_same_state(ours, ref)
        for _ in range(2):
            close(ours(X), ref(X))
        assert_same_state(ours, ref)
    # A random carry initializer draws the same keys from the same streams.
    init = nnx.initializers.normal(1.0)
    ours_carry = ours_cell.initialize_carry((2, IN), nnx.Rngs(carry=3), carry_init=init)
    ref_carry = ref_cell.initialize_carry((2, IN), flax_nnx.Rngs(carry=3), carry_init=init)
    jax.tree.map(np.testing.assert_array_equal, ours_carry, ref_carry)


def test_same_state_as_flax_nnx_with_options():
    kw = dict(param_dtype=jnp.bfloat16, bias_init=nnx.initializers.normal(1.0),
              kernel_metadata={"note": "input"}, recurrent_kernel_metadata={"note": "rec"},
              bias_metadata={"note": "bias"})
    with pytest.warns(UserWarning, match="keep_rngs"):
        ours = nnx.LSTMCell(IN, HIDDEN, keep_rngs=True, rngs=nnx.Rngs(0, carry=2), **kw)
    with pytest.warns(UserWarning):
        ref = flax_nnx.LSTMCell(IN, HIDDEN, keep_rngs=True,
                                rngs=flax_nnx.Rngs(0, carry=2), **kw)
    assert_same_state(ours, ref)
    for layer, name in [("ii", "kernel"), ("ho", "kernel"), ("hf", "bias")]:
        ours_var, ref_var = getattr(getattr(ours, layer), name), getattr(getattr(ref, layer), name)
        assert ours_var.note == ref_var.note
    assert (ours.ii.kernel.note, ours.hi.kernel.note, ours.hi.bias.note) == ("input", "rec", "bias")
    np.testing.assert_array_equal(ours.initialize_carry((IN,), carry_init=nnx.initializers.ones)[0],
                                  jnp.ones(HIDDEN, jnp.bfloat16))
    a = nnx.Bidirectional(nnx.RNN(nnx.GRUCell(IN, 2, rngs=nnx.Rngs(0))),
                          nnx.RNN(nnx.GRUCell(IN, 2, rngs=nnx.Rngs(1))), rngs=nnx.Rngs(4))
    b = flax_nnx.Bidirectional(flax_nnx.RNN(flax_nnx.GRUCell(IN, 2, rngs=flax_nnx.Rngs(0))),
                               flax_nnx.RNN(flax_nnx.GRUCell(IN, 2, rngs=flax_nnx.Rngs(1))),
                               rngs=flax_nnx.Rngs(4))
    assert_same_state(a, b)
    close(a(X, seq_lengths=LENGTHS), b(X, seq_lengths=LENGTHS))
    assert_same_state(a, b)


def test_broadcast_rngs_and_state_axes_match_flax_nnx():
    """A cell with dropout: carried streams draw a new mask per step, broadcast ones not."""
    def build(lib):
        class DropCell(lib.RNNCellBase):
            def __init__(self, rngs):
                self.cell = lib.SimpleCell(IN, HIDDEN, rngs=rngs)
                self.drop = lib.Dropout(0.5, rngs=rngs)

            def __call__(self, carry, x):
                carry, y = self.cell(carry, x)
                return carry, self.drop(y)

            def initialize_carry(self, input_shape, rngs=None, carry_init=None):
                return self.cell.initialize_carry(input_shape, rngs, carry_init)

            @property
            def num_feature_axes(self):
                return 1
        return DropCell

    x = jnp.ones((1, 6, IN))
    for broadcast in [None, "dropout"]:
        ours = nnx.RNN(build(nnx)(nnx.Rngs(0, dropout=1)), broadcast_rngs=broadcast)
        ref = flax_nnx.RNN(build(flax_nnx)(flax_nnx.Rngs(0, dropout=1)),
                           broadcast_rngs=broadcast)
        for _ in range(2):
            y = ours(x)
            close(y, ref(x))
            assert_same_state(ours, ref)
        masks = {tuple(np.asarray(y[0, t] == 0)) for t in range(6)}
        # one mask for all steps when broadcast (ignoring an all-kept coincidence)
        assert (len(masks) == 1) == (broadcast == "dropout")


# ------------------------------------------------------------------ compiled program size
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("options", RNN_OPTIONS[:3] + RNN_OPTIONS[4:5],
                         ids=lambda o: "-".join(o) or "plain")
def test_jaxpr_no_bigger_than_linen(name, options):
    rnn = nnx.RNN(getattr(nnx, name)(IN, HIDDEN, rngs=nnx.Rngs(0)))
    ref = linen.RNN(getattr(linen, name)(HIDDEN))
    # Abstract variables: tracing needs shapes only, and nothing gets compiled.
    variables = jax.eval_shape(lambda: ref.init(jax.random.key(0), X, **options))
    linen_jaxpr = jax.make_jaxpr(lambda v, x: ref.apply(v, x, **options))(variables, X)
    graphdef, state = nnx.split(rnn)
    ours = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, **options))(state, X)
    assert len(ours.eqns) <= len(linen_jaxpr.eqns)
    assert count_equations(ours) <= count_equations(linen_jaxpr)
    # nnx.jit runs the same program.
    traced = nnx.jit(lambda m, x: m(x, **options)).trace(rnn, X)
    assert count_equations(traced.jaxpr) <= count_equations(linen_jaxpr)


# ------------------------------------------------------------------ transforms
def test_jit_matches_eager_and_advances_the_stream():
    rnn = nnx.RNN(make_cell("LSTMCell"))
    eager_twin = nnx.clone(rnn)
    f = nnx.jit(lambda m, x: m(x, seq_lengths=LENGTHS, return_carry=True))
    for _ in range(2):
        close(f(rnn, X), eager_twin(X, seq_lengths=LENGTHS, return_carry=True))
    assert int(rnn.rngs.count[...]) == int(eager_twin.rngs.count[...]) == 4


def test_eager_calls_reuse_one_compiled_loop():
    traces = []

    class CountingCell(nnx.SimpleCell):
        def __call__(self, carry, x):
            traces.append(1)  # runs only while the loop body is traced
            return super().__call__(carry, x)

    rnn = nnx.RNN(CountingCell(IN, HIDDEN, rngs=nnx.Rngs(0)))
    first = rnn(X)
    traced = len(traces)
    for _ in range(3):
        close(rnn(X), first)
    assert len(traces) == traced
    assert int(rnn.rngs.count[...]) == 4  # the carry stream still advances on every call


def test_grad_matches_linen():
    cell = make_cell("OptimizedLSTMCell")
    rnn = nnx.RNN(cell, reverse=True, keep_order=True)
    target = normal(9, (2, 5, HIDDEN))

    def loss(model):
        return jnp.mean((model(X, seq_lengths=LENGTHS) - target) ** 2)

    grads = nnx.grad(loss)(rnn)
    ref_rnn = linen.RNN(linen.OptimizedLSTMCell(HIDDEN), reverse=True, keep_order=True)
    ref_grads = jax.grad(lambda p: jnp.mean(
        (ref_rnn.apply({"params": {"cell": p}}, X, seq_lengths=LENGTHS) - target) ** 2))(
        linen_params(cell))
    as_module = nnx.clone(rnn)
    nnx.update(as_module, grads)
    close(linen_params(as_module.cell), ref_grads)


# ------------------------------------------------------------------ errors
def unchanged(model):
    before = flat(model, nnx)

    def check():
        after = flat(model, nnx)
        assert [p for p, *_ in after] == [p for p, *_ in before]
        for (_, _, a), (_, _, b) in zip(after, before):
            np.testing.assert_array_equal(a, b)
    return check


@pytest.mark.parametrize("name", CELLS)
def test_wrong_initial_carry_shape(name):
    rnn = nnx.RNN(make_cell(name))
    check = unchanged(rnn)
    good = random_carry(rnn.cell, (2,))
    bad = jax.tree.map(lambda c: c[:, :-1], good)
    with pytest.raises(nnx.errors.ShapeMismatchError) as info:
        rnn(X, initial_carry=bad)
    msg = str(info.value)
    leaf = "initial_carry[0]" if isinstance(good, tuple) else "initial_carry"
    assert "RNN.cell" in msg and leaf in msg and "(2, 4)" in msg and "(2, 3)" in msg
    assert "Hint" in msg
    with pytest.raises(ValueError, match="structured like"):
        rnn(X, initial_carry=(good, good))
    check()


def test_wrong_input_features():
    rnn = nnx.RNN(make_cell("LSTMCell"))
    check = unchanged(rnn)
    with pytest.raises(nnx.errors.ShapeMismatchError) as info:
        rnn(jnp.ones((2, 5, 7)))
    msg = str(info.value)
    assert "RNN.cell.ii.kernel" in msg and "(3, 4)" in msg and "(2, 5, 7)" in msg
    assert "Hint" in msg
    # Under nnx.jit the check runs at trace time: same error, model left as it was.
    with pytest.raises(nnx.errors.ShapeMismatchError, match="RNN.cell.ii.kernel"):
        nnx.jit(lambda m, x: m(x))(rnn, jnp.ones((2, 5, 7)))
    check()
    with pytest.raises(ValueError, match=r"GRUCell.dense_i.kernel .*\(3, 12\).*\(2, 7\)"):
        make_cell("GRUCell")(jnp.zeros((2, HIDDEN)), jnp.ones((2, 7)))
    with pytest.raises(ValueError, match=r"SimpleCell \(SimpleCell\): carry .*\(4,\).*\(2, 5\)"):
        make_cell("SimpleCell")(jnp.zeros((2, 5)), jnp.ones((2, IN)))
    with pytest.raises(ValueError, match="time axis"):
        rnn(jnp.ones(IN))


def test_wrong_seq_lengths():
    rnn = nnx.RNN(make_cell("GRUCell"))
    check = unchanged(rnn)
    with pytest.raises(nnx.errors.ShapeMismatchError) as info:
        rnn(X, seq_lengths=jnp.array([5, 2, 1]))
    msg = str(info.value)
    assert "RNN: seq_lengths" in msg and "(2,)" in msg and "(3,)" in msg and "Hint" in msg
    with pytest.raises(TypeError, match="integers"):
        rnn(X, seq_lengths=jnp.array([5.0, 2.0]))
    check()


def test_bidirectional_errors_name_the_direction():
    layer = nnx.Bidirectional(nnx.RNN(make_cell("LSTMCell")), nnx.RNN(make_cell("GRUCell")))
    check = unchanged(layer)
    fwd = random_carry(layer.forward_rnn.cell, (2,))
    with pytest.raises(ValueError, match=r"Bidirectional.backward_rnn.cell .*initial_carry"):
        layer(X, initial_carry=(fwd, jnp.zeros((2, 9))))
    with pytest.raises(ValueError, match="pair"):
        layer(X, initial_carry=fwd[0])
    with pytest.raises(ValueError, match="Bidirectional.forward_rnn: seq_lengths"):
        layer(X, seq_lengths=jnp.array([1]))
    check()


def test_missing_carry_stream():
    rnn = nnx.RNN(make_cell("SimpleCell"), rngs=False)
    assert rnn.rngs is None
    with pytest.raises(nnx.errors.MissingRngStreamError, match="initialize the carry"):
        rnn(X)
    assert rnn(X, rngs=nnx.Rngs(0)).shape == (2, 5, HIDDEN)
    assert rnn(X, initial_carry=jnp.zeros((2, HIDDEN))).shape == (2, 5, HIDDEN)
    with pytest.raises(TypeError, match="rngs must be"):
        nnx.RNN(make_cell("SimpleCell"), rngs="seed")


def test_rnn_runs_any_cell_shaped_module_as_flax():
    # A cell need not derive from RNNCellBase: __call__, initialize_carry and
    # num_feature_axes are enough (flax.nnx's duck typing).
    def build(lib):
        class Cell(lib.Module):
            def __init__(self, rngs):
                self.dense = lib.Linear(IN + HIDDEN, HIDDEN, rngs=rngs)

            def __call__(self, carry, x):
                h = jnp.tanh(self.dense(jnp.concatenate([x, carry], axis=-1)))
                return h, h

            def initialize_carry(self, input_shape, rngs=None):
                return jnp.zeros((*input_shape[:-1], HIDDEN))

            @property
            def num_feature_axes(self):
                return 1

        return lib.RNN(Cell(lib.Rngs(7)))

    x = jax.random.normal(jax.random.key(0), (2, 5, IN))
    ours, theirs = build(nnx)(x), build(flax_nnx)(x)
    assert ours.shape == (2, 5, HIDDEN)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
