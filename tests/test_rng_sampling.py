"""Rngs/RngStream sampling methods, split/broadcast, with_rngs and backup_keys, checked
against jax.random with the same keys and against flax.nnx for the same seed."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from nnxlib._rng_sampling import INITIALIZERS, SAMPLERS

# Arguments for each sampler (after the key), small shapes.
ARGS = {
    "ball": (3,), "bernoulli": (0.5, (3,)), "beta": (2.0, 3.0, (3,)),
    "binomial": (5, 0.5, (3,)), "bits": ((3,),), "categorical": (jnp.zeros(4), -1, (3,)),
    "choice": (5, (3,)), "dirichlet": (jnp.ones(3),), "gamma": (2.0, (3,)),
    "generalized_normal": (2.0, (3,)), "geometric": (0.5, (3,)), "loggamma": (2.0, (3,)),
    "multinomial": (5, jnp.ones(3) / 3), "multivariate_normal": (jnp.zeros(2), jnp.eye(2)),
    "orthogonal": (3,), "pareto": (2.0, (3,)), "permutation": (5,), "poisson": (2.0, (3,)),
    "randint": ((3,), 0, 5), "t": (3.0, (3,)), "triangular": (0.0, 0.5, 1.0, (3,)),
    "truncated_normal": (-1.0, 1.0, (3,)), "wald": (1.0, (3,)), "weibull_min": (1.0, 2.0, (3,)),
    "chisquare": (2.0, (3,)), "f": (2.0, 3.0, (3,)),
    "double_sided_maxwell": (0.0, 1.0, (3,)), "rayleigh": (1.0, (3,)),
    "lognormal": (1.0, (3,)),
}
# Every sampler is the same generated method; drawing from each would compile ~40 JAX
# programs, so values are checked for a representative few (scalar, shape and array
# arguments, keyword-only options) and the signatures for all.
CHECKED = ("normal", "uniform", "bernoulli", "choice", "randint", "multivariate_normal",
           "permutation", "gamma")


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_takes_jax_random_arguments_without_the_key(name):
    import inspect

    ours = list(inspect.signature(getattr(nnx.RngStream, name)).parameters)
    theirs = list(inspect.signature(getattr(jax.random, name)).parameters)
    assert ours == ["self", *theirs[1:]]
    assert callable(getattr(nnx.Rngs(0), name))


@pytest.mark.parametrize("name", CHECKED)
def test_sampler_draws_with_the_next_key(name):
    args = ARGS.get(name, ((3,),))
    rngs, reference = nnx.Rngs(0, params=1), nnx.Rngs(0, params=1)
    ours = getattr(rngs.params, name)(*args)
    expected = getattr(jax.random, name)(reference.params(), *args)
    assert jnp.array_equal(ours, expected)
    assert int(rngs.params.count[...]) == 1
    assert jnp.array_equal(getattr(rngs, name)(*args),
                           getattr(jax.random, name)(reference(), *args))


@pytest.mark.parametrize("name", ["normal", "uniform", "bernoulli", "randint"])
def test_sampler_matches_flax_for_the_same_seed(name):
    args = ARGS.get(name, ((3,),))
    ours = getattr(nnx.Rngs(0, dropout=3).dropout, name)(*args)
    theirs = getattr(flax_nnx.Rngs(0, dropout=3).dropout, name)(*args)
    assert jnp.array_equal(ours, theirs)


@pytest.mark.parametrize("name", INITIALIZERS)
def test_every_initializer_method_exists(name):
    assert callable(getattr(nnx.Rngs(0).default, name))


@pytest.mark.parametrize("name, args", [("lecun_normal", ()), ("glorot_uniform", ()),
                                        ("variance_scaling", (2.0, "fan_in", "normal"))])
def test_initializer_method_draws_when_called(name, args):
    rngs, reference = nnx.Rngs(0), nnx.Rngs(0)
    shape = (4, 4)
    init = getattr(rngs, name)(*args)
    assert int(rngs.default.count[...]) == 0  # no key drawn yet
    expected = getattr(jax.nn.initializers, name)(*args)(reference(), shape)
    assert jnp.array_equal(init(shape), expected)
    assert int(rngs.default.count[...]) == 1


def test_split_and_broadcast_match_flax_shapes():
    ours = nnx.Rngs(params=1, dropout=2, noise=3).split({"params": 5, "dropout": None,
                                                         ...: (2, 5)})
    theirs = flax_nnx.Rngs(params=1, dropout=2, noise=3).split({"params": 5, "dropout": None,
                                                                ...: (2, 5)})
    for name in ("params", "dropout", "noise"):
        assert ours[name].key.shape == theirs[name].key.shape
    keys = nnx.Rngs(0).broadcast(5).default.key[...]
    assert keys.shape == (5,) and bool(jnp.all(jax.random.key_data(keys) ==
                                               jax.random.key_data(keys[0])))
    assert nnx.RngStream(0, tag="a").split(3).key.shape == (3,)


def test_with_rngs_splits_forks_and_broadcasts():
    rngs = nnx.Rngs(params=0, dropout=1, noise=2)
    new = nnx.with_rngs(rngs, split={"params": 4}, fork=nnx.Not("params"))
    assert new.params.key.shape == (4,) and new.dropout.key.shape == ()
    assert new is not rngs and rngs.params.key.shape == ()
    assert int(rngs.dropout.count[...]) == 1  # forking drew from the original
    assert not bool(jax.random.key_data(new.dropout.key[...]).tolist() ==
                    jax.random.key_data(rngs.dropout.key[...]).tolist())
    untouched = nnx.with_rngs(rngs, split={"params": 2})
    assert jnp.array_equal(jax.random.key_data(untouched.noise.key[...]),
                           jax.random.key_data(rngs.noise.key[...]))
    assert nnx.with_rngs(rngs, broadcast=3, only="noise").noise.key.shape == (3,)


def test_with_rngs_on_a_module():
    model = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    copy = nnx.with_rngs(model, split=3)
    streams = [s for _, s in nnx.iter_graph(copy) if isinstance(s, nnx.RngStream)]
    assert streams and all(s.key.shape == (3,) for s in streams)


def test_backup_keys_restore():
    rngs = nnx.Rngs(0)
    backups = nnx.rnglib.backup_keys(rngs)
    rngs(), rngs()
    nnx.restore_rngs(backups)
    assert int(rngs.default.count[...]) == 0
    with nnx.rnglib.backup_keys(rngs):
        rngs()
    assert int(rngs.default.count[...]) == 0
