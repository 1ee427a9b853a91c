"""Shardings of module state in ``jit`` and ``shard_map``, compared with flax.nnx 0.12.

``nnx.prefix`` builds a ``StateAxes`` whose entries are shardings or ``PartitionSpec`` s;
``jit`` takes it (like ``StateSharding``) in ``in_shardings`` and ``out_shardings``,
``shard_map`` in ``in_specs``. ``jit`` with ``graph_updates`` leaves the caller's
variables on their ``in_shardings`` (flax.nnx returns and writes back the whole state),
and state the function changes or creates comes back constrained to them, whether or
not the module's structure changed. On 8 simulated CPU devices.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import nnxlib as nnx

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


@pytest.fixture
def mesh():
    return jax.make_mesh((2, 4), ("a", "b"), axis_types=(AxisType.Auto,) * 2)


def specs_of(module):
    return {path: v[...].sharding.spec for path, v in nnx.iter_graph(module)
            if isinstance(v, nnx.Variable)}


def flax_specs_of(module):
    return {path: v[...].sharding.spec for path, v in fnnx.iter_graph(module)
            if isinstance(v, fnnx.Variable)}


def test_prefix_entries_may_be_shardings(mesh):
    m = nnx.Linear(16, 32, rngs=nnx.Rngs(0))
    kernel, bias = NamedSharding(mesh, P("a", "b")), NamedSharding(mesh, P("b"))
    spec = nnx.prefix(m, {nnx.PathContains("kernel"): kernel, nnx.PathContains("bias"): bias})
    assert spec.axis_for(("kernel",), m.kernel) is kernel
    pair = nnx.prefix((m, m), {...: P("a")})
    assert type(pair) is tuple and len(pair) == 2 and pair[1].axis_for(("bias",), m.bias) \
        == P("a")
    # vmap still wants axes: a sharding where an axis is expected is refused there.
    with pytest.raises(TypeError, match="expected an int or None"):
        nnx.vmap(lambda m: m.kernel[...], in_axes=(spec,))(m)


@pytest.mark.parametrize("graph", [True, False])
def test_out_shardings_for_a_returned_module_like_flax(mesh, graph):
    entries = lambda ns: {ns.PathContains("kernel"): NamedSharding(mesh, P("a", "b")),  # noqa
                          ns.PathContains("bias"): NamedSharding(mesh, P("b"))}
    ours_spec = nnx.prefix(nnx.Linear(16, 32, rngs=nnx.Rngs(0)), entries(nnx), graph=graph)
    theirs_spec = fnnx.prefix(fnnx.Linear(16, 32, rngs=fnnx.Rngs(0)), entries(fnnx),
                              graph=graph)
    ours = nnx.jit(lambda: nnx.Linear(16, 32, rngs=nnx.Rngs(0)), out_shardings=ours_spec,
                   graph=graph, graph_updates=False)()
    theirs = fnnx.jit(lambda: fnnx.Linear(16, 32, rngs=fnnx.Rngs(0)),
                      out_shardings=theirs_spec, graph=graph, graph_updates=False)()
    assert specs_of(ours) == flax_specs_of(theirs) == {("kernel",): P("a", "b"),
                                                      ("bias",): P("b")}
    np.testing.assert_array_equal(ours.kernel[...], theirs.kernel[...])


def test_out_shardings_mix_module_and_array_entries(mesh):
    rows = NamedSharding(mesh, P("a"))
    spec = nnx.StateSharding({nnx.PathContains("bias"): None,  # first match wins
                              ...: NamedSharding(mesh, P(None, "b"))})

    @nnx.jit(out_shardings=(spec, rows))
    def make(x):
        m = nnx.Linear(8, 16, rngs=nnx.Rngs(0))
        return m, m(x)

    m, y = make(jnp.ones((4, 8)))
    assert m.kernel.sharding.spec == P(None, "b") and y.sharding.spec == P("a")


def test_in_shardings_place_the_callers_state_in_graph_updates_mode_like_flax(mesh):
    def run(ns, graph_updates):
        spec = ns.StateSharding({ns.PathContains("kernel"): NamedSharding(mesh, P("a", "b")),
                                 ns.PathContains("bias"): NamedSharding(mesh, P("b"))})
        m = ns.Linear(16, 32, rngs=ns.Rngs(0))
        ns.jit(lambda m: None, in_shardings=(spec,), graph=True,
               graph_updates=graph_updates)(m)
        return m

    ours, theirs = run(nnx, True), run(fnnx, True)
    assert specs_of(ours) == flax_specs_of(theirs) == {("kernel",): P("a", "b"),
                                                      ("bias",): P("b")}
    # Without graph_updates a StateSharding is refused (as flax.nnx does), and with one
    # sharding for the whole module nothing is written back.
    with pytest.raises(ValueError, match="cannot contain `StateSharding` objects"):
        run(nnx, False)
    for ns in (nnx, fnnx):
        m = ns.Linear(16, 32, rngs=ns.Rngs(0))
        ns.jit(lambda m: None, in_shardings=(NamedSharding(mesh, P("a")),), graph=True,
               graph_updates=False)(m)
        assert not isinstance(m.kernel.sharding, NamedSharding)


def test_placed_inputs_are_not_moved_again(mesh):
    sharding = NamedSharding(mesh, P("a"))
    m = nnx.Linear(16, 32, rngs=nnx.Rngs(0))
    f = nnx.jit(lambda m, x: m(x), in_shardings=(sharding, None))
    f(m, jnp.ones((2, 16)))
    placed = m.kernel[...]
    f(m, jnp.ones((2, 16)))
    assert m.kernel[...] is placed  # nothing changed inside, nothing replaced outside


def test_changed_state_comes_back_on_in_shardings_even_after_a_structural_change(mesh):
    # A new Param object (with_sharding_constraint maps over the variable) in place of
    # the old one changes the module's structure (the slow path); its value is still
    # constrained to the in_sharding, as in flax.nnx.
    def run(ns):
        spec = ns.StateSharding({ns.PathContains("kernel"): NamedSharding(mesh, P("a", "b")),
                                 ns.PathContains("bias"): NamedSharding(mesh, P("b"))})
        m = ns.Linear(16, 32, rngs=ns.Rngs(0))

        @ns.jit(in_shardings=(spec,), graph=True, graph_updates=True)
        def f(m):
            m.kernel = jax.lax.with_sharding_constraint(m.kernel,
                                                        NamedSharding(mesh, P("b", "a")))
            if ns is nnx:  # flax.nnx raises for a new variable no filter matches
                m.extra = ns.Param(jnp.ones(8))  # nnxlib leaves it unconstrained

        f(m)
        return m

    ours, theirs = run(nnx), run(fnnx)
    assert ours.kernel[...].sharding.spec == theirs.kernel[...].sharding.spec == P("a", "b")
    np.testing.assert_allclose(ours.kernel[...], theirs.kernel[...])
    np.testing.assert_array_equal(ours.extra[...], np.ones(8))


@pytest.mark.parametrize("graph", [True, False])
def test_shard_map_in_specs_from_prefix_like_flax(graph):
    mesh = jax.sharding.Mesh(jax.devices(), ("model",))

    def run(ns):
        m = ns.Linear(4, 16, rngs=ns.Rngs(0))
        specs = ns.prefix(m, {ns.PathContains("kernel"): P(None, "model"),
                              ns.PathContains("bias"): P("model")}, graph=graph)

        @ns.shard_map(mesh=mesh, in_specs=(specs, P()), out_specs=P(None, "model"),
                      graph=graph, graph_updates=False)
        def f(m, x):
            assert m.kernel.shape == (4, 2) and m.bias.shape == (2,)
            return m(x)

        return f(m, jnp.ones((3, 4)))

    ours, theirs = run(nnx), run(fnnx)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours.sharding.spec == theirs.sharding.spec == P(None, "model")


def test_shard_map_state_spec_is_a_prefix_of_a_state_argument():
    mesh = jax.sharding.Mesh(jax.devices(), ("a",))
    graphdef, state = nnx.split(nnx.Linear(4, 16, rngs=nnx.Rngs(0)))
    specs = nnx.State({"kernel": P(None, "a"), "bias": P()})

    @nnx.shard_map(mesh=mesh, in_specs=(specs,), out_specs=P(None, "a"))
    def f(state):
        m = nnx.merge(graphdef, state)
        assert m.kernel.shape == (4, 2) and m.bias.shape == (16,)
        return m.kernel[...]

    np.testing.assert_array_equal(f(state), state["kernel"][...])


def test_shard_map_outputs_keep_out_specs_as_written():
    mesh = jax.sharding.Mesh(jax.devices(), ("model",))
    f = nnx.shard_map(lambda x: x * 2, mesh=mesh, in_specs=(P(None),), out_specs=P(None))
    eager = jax.shard_map(lambda x: x * 2, mesh=mesh, in_specs=(P(None),), out_specs=P(None))
    x = jnp.ones((32, 3))
    assert f(x).sharding.spec == eager(x).sharding.spec == P(None)
