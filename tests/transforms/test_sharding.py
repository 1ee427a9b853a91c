"""``nnx.jit`` with ``in_shardings``/``out_shardings`` on 8 simulated CPU devices.

A module argument's entry in ``in_shardings`` may be one sharding for all its arrays, an
``nnx.StateSharding`` mapping filters to shardings, or a ``State`` of shardings. Each is
checked for placement (the ``.sharding`` of updated variables and outputs) and for
numerics against the same computation without shardings. Both mesh flavours are
covered: ``Explicit`` axes (``jax.make_mesh``'s default) and ``Auto`` axes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import nnxlib as nnx

pytestmark = [
    pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices"),
    pytest.mark.filterwarnings("ignore:Some donated buffers were not usable"),
]

AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}


@pytest.fixture(params=sorted(AXIS_TYPES))
def axis_type(request):
    return AXIS_TYPES[request.param]


@pytest.fixture
def mesh1d(axis_type):
    return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


@pytest.fixture
def mesh2d(axis_type):
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)


class Layer(nnx.Module):
    def __init__(self, din=8, dout=16, seed=0):
        key = jax.random.key(seed)
        self.kernel = nnx.Param(jax.random.normal(key, (din, dout)))
        self.bias = nnx.Param(jnp.arange(dout, dtype=jnp.float32) / dout)
        self.mean = nnx.BatchStat(jnp.zeros((dout,)))

    def __call__(self, x):
        y = x @ self.kernel + self.bias
        self.mean[...] = 0.5 * self.mean + 0.5 * y.mean(0)
        return y


def step(model, x):
    """Changes every variable of the model: all of them are written back."""
    y = model(x)
    model.kernel[...] = model.kernel * 0.5
    model.bias[...] = model.bias + 1.0
    return y


X = jnp.arange(64 * 8, dtype=jnp.float32).reshape(64, 8) / 100.0


def assert_placed(array, sharding):
    assert isinstance(array.sharding, NamedSharding)
    assert array.sharding.is_equivalent_to(sharding, array.ndim), (array.sharding, sharding)


def reference():
    """The same computation without any sharding."""
    model = Layer()
    y = nnx.jit(step)(model, X)
    return model, y


def assert_same_numbers(model, y):
    want_model, want_y = reference()
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    for name in ("kernel", "bias", "mean"):
        np.testing.assert_allclose(getattr(model, name)[...], getattr(want_model, name)[...],
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- in_shardings
def test_one_sharding_for_the_whole_module(mesh1d):
    sharded = NamedSharding(mesh1d, P("data"))
    replicated = NamedSharding(mesh1d, P())
    model = Layer()
    f = nnx.jit(step, in_shardings=(sharded, replicated))
    y = f(model, X)
    for var in (model.kernel, model.bias, model.mean):
        assert_placed(var[...], sharded)
    assert_same_numbers(model, y)
    y2 = f(model, X)  # the placed arrays are accepted as they are
    assert_placed(model.kernel[...], sharded)
    assert y2.shape == (64, 16)


def test_state_sharding_maps_filters_to_shardings(mesh2d):
    kernel_sharding = NamedSharding(mesh2d, P("data", "model"))
    param_sharding = NamedSharding(mesh2d, P("model"))
    replicated = NamedSharding(mesh2d, P())
    spec = nnx.StateSharding({
        nnx.PathContains("kernel"): kernel_sharding,  # first match wins
        nnx.Param: param_sharding,
        ...: replicated,
    })
    model = Layer()
    y = nnx.jit(step, in_shardings=(spec, NamedSharding(mesh2d, P("data"))))(model, X)
    assert_placed(model.kernel[...], kernel_sharding)
    assert_placed(model.bias[...], param_sharding)
    assert_placed(model.mean[...], replicated)
    assert_same_numbers(model, y)


def test_state_of_shardings(mesh2d):
    # (Consistent under Explicit axes too: y.mean(0) is sharded over "model", as mean.)
    shardings = nnx.State({
        "kernel": NamedSharding(mesh2d, P(None, "model")),
        "bias": NamedSharding(mesh2d, P("model")),
        "mean": NamedSharding(mesh2d, P("model")),
    })
    model = Layer()
    f = nnx.jit(step, in_shardings=(shardings, None))
    y = f(model, X)
    assert_placed(model.kernel[...], shardings["kernel"])
    assert_placed(model.bias[...], shardings["bias"])
    assert_placed(model.mean[...], shardings["mean"])
    assert_same_numbers(model, y)
    # The first call already saw the arrays placed (and typed, under Explicit axes),
    # so a second call traces the same program.
    f(model, X)
    assert_placed(model.mean[...], shardings["mean"])


def test_state_of_shardings_from_nnx_state_tree_map(mesh1d):
    model = Layer()
    # built the usual way: map the model's state to shardings
    shardings = jax.tree.map(
        lambda v: NamedSharding(mesh1d, P("data") if v.ndim == 1 else P(None, "data")),
        nnx.state(model))
    y = nnx.jit(step, in_shardings=(shardings, None))(model, X)
    assert_placed(model.kernel[...], NamedSharding(mesh1d, P(None, "data")))
    assert_placed(model.mean[...], NamedSharding(mesh1d, P("data")))
    assert_same_numbers(model, y)


def test_shardings_for_a_nested_module_and_array_arguments(mesh2d):
    class Net(nnx.Module):
        def __init__(self):
            self.first = Layer(8, 16, seed=0)
            self.second = Layer(16, 4, seed=1)

        def __call__(self, x):
            return self.second(jax.nn.relu(self.first(x)))

    spec = nnx.StateSharding({
        nnx.All(nnx.PathContains("first"), nnx.PathContains("kernel")):
            NamedSharding(mesh2d, P(None, "model")),
        nnx.BatchStat: NamedSharding(mesh2d, P()),
        ...: None,  # no constraint
    })
    data = NamedSharding(mesh2d, P("data"))
    model, plain = Net(), Net()

    @nnx.jit(in_shardings=(spec, data))
    def train(model, x):
        y = model(x)
        model.first.kernel[...] = model.first.kernel - 0.01 * y.sum()
        return y

    y = train(model, X)
    want = nnx.jit(train.fun)(plain, X)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert_placed(model.first.kernel[...], NamedSharding(mesh2d, P(None, "model")))
    assert_placed(model.first.mean[...], NamedSharding(mesh2d, P()))
    assert_placed(model.second.mean[...], NamedSharding(mesh2d, P()))
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(plain))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_in_shardings_for_pytree_argument(mesh1d):
    data = NamedSharding(mesh1d, P("data"))
    model = Layer()

    @nnx.jit(in_shardings=(None, {"x": data, "w": None}))
    def f(model, batch):
        return model(batch["x"]) * batch["w"]

    y = f(model, {"x": X, "w": jnp.float32(2.0)})
    np.testing.assert_allclose(y, 2 * Layer()(X), rtol=1e-5, atol=1e-5)


def test_in_shardings_with_donation(mesh1d):
    sharded = NamedSharding(mesh1d, P("data"))
    model = Layer()
    f = nnx.jit(step, in_shardings=(sharded, None), donate_argnums=0)
    y = f(model, X)
    for var in (model.kernel, model.bias, model.mean):
        assert not var[...].is_deleted()
        assert_placed(var[...], sharded)
    assert_same_numbers(model, y)


def test_wrong_sharding_spec_type_is_a_clear_error(mesh1d):
    with pytest.raises(TypeError, match="Invalid sharding spec"):
        nnx.jit(step, in_shardings=("data", None))(Layer(), X)


# --------------------------------------------------------------------- out_shardings
def test_out_shardings_constrain_outputs(mesh2d):
    rows = NamedSharding(mesh2d, P("data"))
    cols = NamedSharding(mesh2d, P(None, "model"))
    model = Layer()

    @nnx.jit(out_shardings=(rows, cols))
    def f(model, x):
        y = model(x)
        return y, y * 2

    a, b = f(model, X)
    assert_placed(a, rows)
    assert_placed(b, cols)
    want = Layer()(X)
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, 2 * want, rtol=1e-5, atol=1e-5)


def test_out_shardings_single_sharding_and_prefix(mesh1d):
    replicated = NamedSharding(mesh1d, P())
    rows = NamedSharding(mesh1d, P("data"))
    model = Layer()
    out = nnx.jit(lambda m, x: {"y": m(x), "s": m(x).sum()}, out_shardings=replicated)(
        model, X)
    assert_placed(out["y"], replicated)
    assert_placed(out["s"], replicated)
    y, (s, t) = nnx.jit(lambda m, x: (m(x), (m(x).sum(), x)), out_shardings=(rows, None))(
        model, X)
    assert_placed(y, rows)
    np.testing.assert_allclose(t, X)


def test_in_and_out_shardings_together(mesh2d):
    spec = nnx.StateSharding({nnx.Param: NamedSharding(mesh2d, P("model")), ...: None})
    model = Layer(16, 8)
    out_sharding = NamedSharding(mesh2d, P("data", "model"))
    x = jnp.ones((4, 16))

    @nnx.jit(in_shardings=(spec, None), out_shardings=out_sharding)
    def f(model, x):
        model.bias[...] = model.bias * 2
        return model(x)

    y = f(model, x)
    assert_placed(y, out_sharding)
    assert_placed(model.bias[...], NamedSharding(mesh2d, P("model")))
    plain = Layer(16, 8)
    np.testing.assert_allclose(y, nnx.jit(f.fun)(plain, x), rtol=1e-5, atol=1e-5)


def test_sharding_metadata_on_variables_survives(mesh1d):
    model = Layer()
    model.kernel.set_metadata(out_sharding=(None, "data"))
    sharded = NamedSharding(mesh1d, P(None, "data"))
    spec = nnx.StateSharding({nnx.PathContains("kernel"): sharded, ...: None})
    nnx.jit(step, in_shardings=(spec, None))(model, X)
    assert model.kernel.out_sharding == (None, "data")
    assert_placed(model.kernel[...], sharded)


def test_state_sharding_from_a_state_or_from_pairs():
    mesh = jax.make_mesh((1,), ("model",))
    kernel_sharding = jax.sharding.NamedSharding(mesh, jax.P(None, "model"))
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    by_pairs = nnx.StateSharding([(nnx.PathContains("kernel"), kernel_sharding),
                                  (..., replicated)])
    by_state = nnx.StateSharding(nnx.State({"kernel": kernel_sharding, "bias": replicated}))
    for spec in (by_pairs, by_state):
        assert spec.resolve(("kernel",), nnx.Param(0.0)) is kernel_sharding
        assert spec.resolve(("bias",), nnx.Param(0.0)) is replicated
