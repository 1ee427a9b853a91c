"""Property-based tests of tree mode on random module graphs (shared references,
cycles, containers, raw arrays: the strategy of ``test_graph_properties``).

Oracle: the independent reference walker of ``test_graph_properties`` (it does not use
nnxlib's graph code) says whether a graph is a tree, i.e. whether some object is
reached twice.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import nnxlib as nnx
from nnxlib.errors import SharedReferenceError
from tests.test_graph_properties import SETTINGS, build, canon, graph_specs, walk


def is_tree(root) -> bool:
    return not any(event[0] == "ref" for _, event, _ in walk(root))


def follow(root, path):
    """The object at ``path`` from ``root`` (attribute, item or index)."""
    x = root
    for key in path:
        if isinstance(x, nnx.Module):
            x = vars(x)[key]
        else:
            x = x[key]
    return x


@SETTINGS
@given(graph_specs)
def test_tree_mode_raises_exactly_when_an_object_is_shared(spec):
    root = build(spec)
    before = canon(root)
    if is_tree(root):
        graphdef, state = nnx.split(root, graph=False)
        assert graphdef == nnx.graphdef(root)
        assert canon(nnx.merge(graphdef, state)) == before
    else:
        with pytest.raises(SharedReferenceError):
            nnx.split(root, graph=False)
        found = nnx.graphdef(root).shared_reference()
        typ, first, second = found
        assert first != second
        assert follow(root, first) is follow(root, second)  # really the same object
        assert type(follow(root, first)) is typ
    assert canon(root) == before  # the check changes nothing


@SETTINGS
@given(graph_specs)
def test_tree_mode_jit_matches_graph_mode_on_trees(spec):
    root, twin = build(spec), build(spec)
    if not is_tree(root):
        with pytest.raises(SharedReferenceError):
            nnx.jit(lambda m: None, graph=False)(root)
        return

    def bump(m):
        for _, v in nnx.iter_graph(m):
            if isinstance(v, nnx.Variable) and jnp.issubdtype(v[...].dtype, jnp.floating):
                v[...] = v[...] * 2 + 1

    nnx.jit(bump, graph=False)(root)
    nnx.jit(bump)(twin)
    assert canon(root) == canon(twin)
    for a, b in zip(jax.tree.leaves(nnx.state(root)), jax.tree.leaves(nnx.state(twin))):
        np.testing.assert_array_equal(a, b)
