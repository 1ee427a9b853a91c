"""split_rngs, fork_rngs, with_rngs, reseed and Rngs.split/broadcast: the same keys,
shapes and counts as flax.nnx for the same seeds, in place (graph updates) and as
copies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx

import nnxlib as nnx


def data(key):
    return np.asarray(jax.random.key_data(key))


def streams(node, lib):
    """{path: (key data, count)} of every RNG stream in ``node``."""
    return {path: (data(s.key[...]), np.asarray(s.count[...]))
            for path, s in lib.iter_graph(node) if isinstance(s, lib.RngStream)}


def assert_same_streams(a, b):
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path][0], b[path][0], err_msg=str(path))
        np.testing.assert_array_equal(a[path][1], b[path][1], err_msg=str(path))


def both(build, run):
    """``run(lib, build(lib))`` for nnxlib and flax.nnx; returns both results."""
    return [run(lib, node) for lib in (nnx, fnnx) for node in [build(lib)]]


def model(lib):
    class Model(lib.Module):
        def __init__(self, rngs):
            self.linear = lib.Linear(2, 3, rngs=rngs)
            self.drop1 = lib.Dropout(0.5, rngs=rngs)
            self.drop2 = lib.Dropout(0.5, rngs=rngs)
            self.rngs = rngs

    return Model(lib.Rngs(params=0, dropout=1, noise=2))


@pytest.mark.parametrize("kwargs", [dict(splits=5), dict(splits=(2, 3)),
                                    dict(splits=4, only="dropout"),
                                    dict(splits=1, squeeze=True)])
def test_split_rngs_in_place_and_restored_as_flax(kwargs):
    def run(lib, m):
        backups = lib.split_rngs(m, **kwargs)
        inside = streams(m, lib)
        lib.restore_rngs(backups)
        return inside, streams(m, lib)

    (ours_in, ours_out), (flax_in, flax_out) = both(model, run)
    assert_same_streams(ours_in, flax_in)
    assert_same_streams(ours_out, flax_out)


@pytest.mark.parametrize("mode", [dict(graph_updates=False), dict(graph=False)])
def test_split_rngs_copy_as_flax(mode):
    def run(lib, m):
        kernel = m.linear.kernel
        copy = lib.split_rngs(m, splits=3, only="dropout", **mode)
        assert copy is not m and copy.linear.kernel is kernel  # other variables shared
        assert m.drop1.rngs.key.shape == ()                    # the original keeps its keys
        return streams(copy, lib), streams(m, lib)

    (ours_copy, ours_orig), (flax_copy, flax_orig) = both(model, run)
    assert_same_streams(ours_copy, flax_copy)
    assert_same_streams(ours_orig, flax_orig)                  # counts advanced alike


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # flax: fork(split=...)
@pytest.mark.parametrize("mode", [dict(), dict(graph_updates=False), dict(graph=False)])
@pytest.mark.parametrize("split", [None, 4, {"dropout": 3}])
def test_fork_rngs_as_flax(mode, split):
    def run(lib, m):
        result = lib.fork_rngs(m, split=split, **mode)
        if mode:
            return streams(result, lib), streams(m, lib)
        forked = streams(m, lib)
        lib.restore_rngs(result)
        return forked, streams(m, lib)

    (ours_a, ours_b), (flax_a, flax_b) = both(model, run)
    assert_same_streams(ours_a, flax_a)
    assert_same_streams(ours_b, flax_b)


def test_fork_rngs_with_a_mapping_leaves_unmatched_streams_alone():
    m = model(nnx)
    before = streams(m, nnx)
    nnx.fork_rngs(m, split={"dropout": 3})
    after = streams(m, nnx)
    for path in before:
        changed = not np.array_equal(before[path][0], after[path][0])
        assert changed == ("drop" in path[0] or path == ("rngs", "dropout")), path


@pytest.mark.parametrize("rules", [
    lambda lib: dict(split=4), lambda lib: dict(split=(2, 3)), lambda lib: dict(fork=...),
    lambda lib: dict(broadcast=5), lambda lib: dict(split={"params": 4, ...: (2, 3)}),
    lambda lib: dict(split={"params": 4}, fork=...),
    lambda lib: dict(broadcast={"dropout": 2}, fork=lib.Not("dropout")),
    lambda lib: dict(split=2, only="noise"),
])
@pytest.mark.parametrize("graph", [True, False])
def test_with_rngs_as_flax(rules, graph):
    def run(lib, m):
        copy = lib.with_rngs(m, graph=graph, graph_updates=False, **rules(lib))
        assert copy.linear.kernel is m.linear.kernel
        return streams(copy, lib), streams(m, lib)

    (ours_copy, ours_orig), (flax_copy, flax_orig) = both(model, run)
    assert_same_streams(ours_copy, flax_copy)
    assert_same_streams(ours_orig, flax_orig)


def test_with_rngs_ambiguous_rules_raise_and_change_nothing():
    rngs = nnx.Rngs(params=0, dropout=1)
    before = streams(rngs, nnx)
    with pytest.raises(ValueError, match=r"'params'.*multiple rules.*split.*fork.*Hint"):
        nnx.with_rngs(rngs, split={"params": 4}, fork="params")
    assert_same_streams(streams(rngs, nnx), before)
    # a catch-all next to a specific filter is not ambiguous: split wins
    new = nnx.with_rngs(rngs, split={"params": 4}, fork=...)
    assert new.params.key.shape == (4,) and new.dropout.key.shape == ()


def test_with_rngs_decorator_passes_copies():
    rngs = nnx.Rngs(params=0, dropout=1)

    @nnx.with_rngs(split={"dropout": 4})
    def f(r, *, other):
        return r.dropout.key.shape, other.dropout.key.shape, r is rngs

    assert f(rngs, other=rngs) == ((4,), (4,), False)
    assert rngs.dropout.key.shape == ()


@pytest.mark.parametrize("graph_updates", [True, False])
def test_split_rngs_decorator(graph_updates):
    rngs = nnx.Rngs(params=0, dropout=1)
    seen = []

    @nnx.split_rngs(splits=3, only="params", graph_updates=graph_updates)
    def f(r):
        seen.append((r is rngs, r.params.key.shape, r.dropout.key.shape))

    f(rngs)
    assert seen == [(graph_updates, (3,), ())]
    assert rngs.params.key.shape == () and int(rngs.params.count[...]) == 1


def test_reseed_as_flax_for_streams_sharing_a_tag():
    def run(lib, m):
        m.drop1(jnp.ones(4), deterministic=False)
        lib.reseed(m, dropout=7, params=3)
        return streams(m, lib)

    ours, theirs = both(model, run)
    assert_same_streams(ours, theirs)
    # successive keys of one fresh stream: the two layers do not share masks
    assert not np.array_equal(ours[("drop1", "rngs")][0], ours[("drop2", "rngs")][0])


def test_reseed_match_shape_as_flax():
    def run(lib, m):
        backups = lib.split_rngs(m, splits=4, only="dropout")
        lib.reseed(m, dropout=5, policy="match_shape")
        result = streams(m, lib)
        lib.restore_rngs(backups)
        return result

    ours, theirs = both(model, run)
    assert_same_streams(ours, theirs)


def test_rngs_split_broadcast_fork_as_flax():
    def run(lib, rngs):
        rngs.dropout()
        out = {}
        for name, make in (("split", lambda: rngs.split({"params": 4})),
                           ("split2", lambda: rngs.split((2, 2))),
                           ("broadcast", lambda: rngs.broadcast({"params": 3})),
                           ("fork", lambda: rngs.fork())):
            new = make()
            out[name] = {n: data(s.key[...]) for n, s in new.items()}
        out["stream"] = data(rngs.noise.broadcast((2, 3)).key[...])
        return out

    ours, theirs = both(lambda lib: lib.Rngs(params=0, dropout=1, noise=2), run)
    for name in ours:
        if name == "stream":
            np.testing.assert_array_equal(ours[name], theirs[name])
            continue
        for stream in ours[name]:
            if name in ("split", "broadcast") and stream != "params":
                continue  # carried over as is: see the next test
            np.testing.assert_array_equal(ours[name][stream], theirs[name][stream])


def test_rngs_split_carries_unsplit_streams_over_as_the_same_stream():
    rngs = nnx.Rngs(params=0, dropout=1)
    rngs.dropout()
    new = rngs.split({"params": 4, "dropout": None})
    # the same stream: its next key is not one the original already handed out
    assert new.dropout is rngs.dropout and int(new.dropout.count[...]) == 1


def test_stream_escaped_from_a_jax_trace_is_a_trace_error():
    leaked = []

    @jax.jit
    def make():
        leaked.append(nnx.Rngs(1))

    make()
    with pytest.raises(nnx.errors.TraceContextError,
                       match="Cannot mutate RngCount from a different trace level"):
        leaked[0].params()


def test_bad_sizes_raise_before_any_draw():
    rngs = nnx.Rngs(params=0, dropout=1)
    before = streams(rngs, nnx)
    for call in (lambda: nnx.with_rngs(rngs, split={"params": 4, "dropout": 0}),
                 lambda: nnx.fork_rngs(rngs, split={"params": -1}),
                 lambda: nnx.split_rngs(rngs, splits=(2, 0), graph_updates=False),
                 lambda: rngs.broadcast({"params": 0})):
        with pytest.raises(nnx.errors.InvalidArgumentError, match="at least 1"):
            call()
    assert_same_streams(streams(rngs, nnx), before)
