"""Oracles shared by the layer tests: flax.nnx state equality, jaxpr size, linen apply."""

import jax
import jax.extend as jex
import numpy as np
from flax import nnx as flax_nnx

import nnxlib as nnx


def flat_variables(pairs) -> dict:
    """``{path: (variable type name, value)}`` from ``(path, variable)`` pairs."""
    return {tuple(path): (type(var).__name__, np.asarray(var[...])) for path, var in pairs}


def assert_same_state_as_flax(ours, theirs) -> None:
    """Same paths, same variable kinds, bit-identical values and dtypes."""
    mine = flat_variables(nnx.state(ours).flat_state())
    ref = flat_variables(flax_nnx.to_flat_state(flax_nnx.state(theirs)))
    assert sorted(mine) == sorted(ref)
    for path, (kind, value) in ref.items():
        assert mine[path][0] == kind, path
        assert mine[path][1].dtype == value.dtype, path
        np.testing.assert_array_equal(mine[path][1], value, err_msg=str(path))


def count_eqns(jaxpr) -> int:
    """Primitive equations of a jaxpr, looking inside nested calls (pjit, custom_jvp...)
    instead of counting the call itself, so wrapping does not change the count."""
    total = 0
    for eqn in jaxpr.eqns:
        subs = [p for p in eqn.params.values() if isinstance(p, (jex.core.Jaxpr,
                                                                    jex.core.ClosedJaxpr))]
        if subs:
            total += sum(count_eqns(getattr(s, "jaxpr", s)) for s in subs)
        else:
            total += 1
    return total


def layer_eqns(layer, *args, method="__call__", **kwargs) -> int:
    """Equations of calling ``layer`` as a pure function of its state and inputs."""
    graphdef, state = nnx.split(layer)

    def run(state, *args):
        return getattr(nnx.merge(graphdef, state), method)(*args, **kwargs)

    return count_eqns(jax.make_jaxpr(run)(state, *args).jaxpr)


def linen_eqns(module, variables, *args, **kwargs) -> int:
    """Equations of ``module.apply(variables, *args)`` as a pure function."""
    closed = jax.make_jaxpr(lambda v, *a: module.apply(v, *a, **kwargs))(variables, *args)
    return count_eqns(closed.jaxpr)


def normal(shape, seed: int = 0, dtype=np.float32) -> jax.Array:
    """Standard normal test data made by NumPy (no JAX compilation per shape: fast tests)."""
    return jax.numpy.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def randomize(layer, seed: int = 1) -> None:
    """Give every parameter of ``layer`` random normal values (a zero bias hides bugs)."""
    for i, (_, var) in enumerate(nnx.state(layer, nnx.Param).flat_state()):
        var[...] = normal(var.shape, seed * 1000 + i, var.dtype)


#: Constructor arguments that skip the (compile-heavy) default initializers in tests
#: that overwrite every parameter anyway.
FAST_INIT = {"kernel_init": jax.nn.initializers.zeros}


def randomize_norm(module, seed: int = 1) -> None:
    """Non-trivial scale and bias, so that forgetting either one fails the comparison."""
    keys = jax.random.split(jax.random.key(seed), 2)
    for key, name in zip(keys, ("scale", "bias")):
        var = getattr(module, name, None)
        if var is not None:
            var[...] = (1.0 + 0.5 * jax.random.normal(key, var.shape)).astype(var.dtype)


def norm_params(module) -> dict:
    """A norm layer's ``scale``/``bias`` arrays (those it has)."""
    return {n: getattr(module, n)[...] for n in ("scale", "bias")
            if getattr(module, n, None) is not None}
