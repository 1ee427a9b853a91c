"""bridge.functional / Functional / sort_variable_types and the nnx.wrappers paths,
checked against flax.nnx.bridge's behaviour."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx


class Counter:
    """Defined for both libraries: a parameter, a batch stat bumped per call, a method."""

    @staticmethod
    def make(lib):
        class C(lib.Module):
            def __init__(self, scale, rngs=None):
                self.count = lib.BatchStat(jnp.array(0))
                self.w = lib.Param(jnp.full(2, scale))

            def __call__(self, x):
                self.count[...] += 1
                return x * self.w

            def shifted(self, x, by=1.0):
                return x - by

        return C


@pytest.mark.parametrize("lib", [nnx, flax_nnx], ids=["nnxlib", "flax"])
def test_init_apply_like_flax(lib):
    bridge = nnx.bridge if lib is nnx else flax_nnx.bridge
    f = bridge.functional(Counter.make(lib))(3.0)
    assert (f.graphdef, f.args, f.kwargs) == (None, (3.0,), {})
    state = f.init()
    assert f.graphdef is not None
    assert sorted(state) == ["count", "w"]
    y, (graphdef, new) = f.apply(state)(jnp.ones(2))
    np.testing.assert_array_equal(y, [3.0, 3.0])
    assert int(new["count"].value) == 1
    z, _ = f.apply(new).shifted(jnp.ones(2), by=2.0)
    np.testing.assert_array_equal(z, [-1.0, -1.0])
    params, stats = lib.split_state(new, lib.Param, lib.BatchStat)
    _, (_, again) = f.apply(params, stats)(jnp.ones(2))
    assert int(again["count"].value) == 2


def test_init_passes_rngs_and_matches_direct_construction():
    f = nnx.bridge.functional(nnx.Linear)(2, 3)
    state = f.init(rngs=nnx.Rngs(0))
    direct = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(state["kernel"].value, direct.kernel.value)
    x = jnp.ones((4, 2))
    y, _ = f.apply(state)(x)
    np.testing.assert_allclose(y, direct(x))
    # jit of the pure function
    y_jit = jax.jit(lambda s, x: f.apply(s)(x)[0])(state, x)
    np.testing.assert_allclose(y_jit, y, rtol=1e-6)


def test_apply_leaves_the_given_state_unchanged():
    f = nnx.bridge.functional(Counter.make(nnx))(1.0)
    state = f.init()
    f.apply(state)(jnp.ones(2))
    assert int(state["count"].value) == 0


def test_apply_before_init_raises_a_named_error():
    f = nnx.bridge.functional(nnx.Linear)(2, 3)
    with pytest.raises(nnx.errors.LazyInitError, match="init"):
        f.apply({})
    with pytest.raises(AssertionError):  # flax asserts
        flax_nnx.bridge.functional(flax_nnx.Linear)(2, 3).apply({})


def test_sort_variable_types_like_flax():
    def cases(lib):
        class Fast(lib.Param):
            pass

        class Other(lib.Variable):
            pass

        return [
            [lib.Variable, Other, Fast, lib.Param],
            [lib.Param, Fast, lib.Variable, Other],
            [lib.Intermediate, lib.Cache, Other, lib.Param, lib.BatchStat],
            [lib.Variable, lib.Param],
        ]

    ours = [[t.__name__ for t in nnx.bridge.variables.sort_variable_types(c)]
            for c in cases(nnx)]
    theirs = [[t.__name__ for t in flax_nnx.bridge.variables.sort_variable_types(c)]
              for c in cases(flax_nnx)]
    assert ours == theirs
    assert ours[0] == ["Fast", "Other", "Param", "Variable"]


def test_wrappers_paths_are_the_bridge_package():
    assert nnx.wrappers is nnx.bridge
    assert nnx.bridge.wrappers is nnx.bridge
    for name in ("ToNNX", "ToLinen", "lazy_init", "to_linen", "to_linen_class",
                 "linen_rngs_dict", "current_linen_module", "functional", "Functional"):
        assert getattr(nnx.wrappers, name) is getattr(nnx.bridge, name)


def test_wrappers_path_is_lazy():
    code = ("import sys, nnxlib; assert 'flax' not in sys.modules; "
            "nnxlib.wrappers.ToNNX; assert 'flax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
