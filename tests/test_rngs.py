"""Tests for nnxlib.rngs: streams, fallback, state, fork, split_rngs, reseed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


def data(key):
    return np.asarray(jax.random.key_data(key))


def same(a, b):
    return np.array_equal(data(a), data(b))


class Noisy(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (3,)))
        self.rngs = rngs

    def __call__(self, x):
        return x + jax.random.normal(self.rngs.dropout(), x.shape)


class TestStreams:
    def test_default_stream(self):
        rngs = nnx.Rngs(0)
        assert list(rngs) == ["default"] and len(rngs) == 1 and "default" in rngs
        key = rngs()
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()

    def test_named_streams(self):
        rngs = nnx.Rngs(params=0, dropout=1)
        assert sorted(rngs) == ["dropout", "params"] and "default" not in rngs
        assert sorted(name for name, _ in rngs.items()) == ["dropout", "params"]
        assert isinstance(rngs.params, nnx.RngStream)
        assert rngs["dropout"] is rngs.dropout

    def test_access_forms_draw_from_the_same_stream(self):
        a, b = nnx.Rngs(params=0, dropout=1), nnx.Rngs(params=0, dropout=1)
        assert same(a.params(), b["params"]())
        assert same(a["dropout"](), b.dropout())
        assert same(nnx.Rngs(0)(), nnx.Rngs(0).default())

    def test_streams_with_different_seeds_differ(self):
        rngs = nnx.Rngs(params=0, dropout=1)
        assert not same(rngs.params(), rngs.dropout())

    def test_successive_keys_differ(self):
        rngs = nnx.Rngs(0)
        keys = [rngs() for _ in range(5)]
        assert len({tuple(data(k)) for k in keys}) == 5

    def test_same_seed_same_keys(self):
        a, b = nnx.Rngs(42), nnx.Rngs(42)
        for _ in range(3):
            assert same(a(), b())
        assert same(nnx.Rngs(params=7).params(), nnx.Rngs(7).params())

    def test_keys_are_fold_in_of_count(self):
        rngs = nnx.Rngs(3)
        base = jax.random.key(3)
        assert same(rngs(), jax.random.fold_in(base, 0))
        assert same(rngs(), jax.random.fold_in(base, 1))

    def test_unknown_stream_falls_back_to_default(self):
        rngs = nnx.Rngs(0, dropout=1)
        reference = nnx.Rngs(0)
        assert same(rngs.params(), reference())
        assert same(rngs["anything"](), reference())
        assert int(rngs.default.count[...]) == 2
        assert int(rngs.dropout.count[...]) == 0

    def test_seed_forms(self):
        reference = nnx.Rngs(5)()
        assert same(nnx.Rngs(jax.random.key(5))(), reference)
        assert same(nnx.Rngs(jnp.array(5))(), reference)
        assert same(nnx.Rngs(jax.random.key_data(jax.random.key(5)))(), reference)
        assert same(nnx.Rngs(default=5)(), reference)

    def test_existing_stream_is_reused(self):
        stream = nnx.RngStream(0, tag="noise")
        rngs = nnx.Rngs(noise=stream)
        assert rngs.noise is stream

    def test_bad_seed(self):
        with pytest.raises(TypeError, match="Cannot make an RNG key"):
            nnx.Rngs(jnp.ones(3))

    def test_rng_stream(self):
        stream = nnx.RngStream(0, tag="noise")
        assert stream.tag == "noise" and stream.key.tag == "noise"
        stream()
        assert int(stream.count[...]) == 1


class TestRngsAsState:
    def test_keys_and_counts_are_variables(self):
        rngs = nnx.Rngs(0, dropout=1)
        assert isinstance(rngs.default.key, nnx.RngKey)
        assert isinstance(rngs.default.count, nnx.RngCount)
        assert rngs.default.count.dtype == jnp.uint32
        paths = [p for p, _ in nnx.to_flat_state(nnx.state(rngs))]
        assert paths == [("default", "count"), ("default", "key"),
                         ("dropout", "count"), ("dropout", "key")]

    def test_filter_by_stream_tag(self):
        rngs = nnx.Rngs(0, dropout=1)
        dropout = nnx.state(rngs, "dropout")
        assert [p for p, _ in nnx.to_flat_state(dropout)] == [
            ("dropout", "count"), ("dropout", "key")]
        counts = nnx.state(rngs, nnx.RngCount)
        assert len(counts.flat_state()) == 2
        assert len(nnx.state(rngs, nnx.All(nnx.RngKey, nnx.WithTag("dropout")))
                   .flat_state()) == 1

    def test_drawing_is_not_structural(self):
        rngs = nnx.Rngs(0)
        g = nnx.graphdef(rngs)
        rngs()
        assert nnx.graphdef(rngs) is g

    def test_split_merge_continues_the_sequence(self):
        rngs = nnx.Rngs(0)
        reference = nnx.Rngs(0)
        rngs(), reference()
        copy = nnx.merge(*nnx.split(rngs))
        assert same(copy(), reference())

    def test_clone_is_independent(self):
        rngs = nnx.Rngs(0)
        twin = nnx.clone(rngs)
        assert same(twin(), rngs())
        twin()
        assert int(twin.default.count[...]) == 2 and int(rngs.default.count[...]) == 1

    def test_counts_advance_under_jit(self):
        model = Noisy(nnx.Rngs(params=0, dropout=1))
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, x):
            m = nnx.merge(graphdef, state)
            return m(x), nnx.state(m)

        y1, state = step(state, jnp.zeros(3))
        y2, state = step(state, jnp.zeros(3))
        assert not np.allclose(y1, y2)
        nnx.update(model, state)
        assert int(model.rngs.dropout.count[...]) == 2

    def test_same_params_eager_and_jit(self):
        eager = Noisy(nnx.Rngs(params=0, dropout=1))

        @jax.jit
        def create():
            return nnx.split(Noisy(nnx.Rngs(params=0, dropout=1)))[1]

        state = create()
        np.testing.assert_array_equal(state["w"][...], eager.w[...])
        np.testing.assert_array_equal(state["rngs"]["params"]["count"][...], 1)

    def test_same_params_eval_shape(self):
        abstract = jax.eval_shape(lambda: nnx.split(Noisy(nnx.Rngs(params=0)))[1])
        assert abstract["w"][...].shape == (3,)
        assert abstract["w"][...].dtype == jnp.float32


class TestFork:
    def test_fork_gives_new_streams(self):
        rngs = nnx.Rngs(0, dropout=1)
        forked = rngs.fork()
        assert isinstance(forked, nnx.Rngs) and sorted(forked) == ["default", "dropout"]
        assert int(rngs.default.count[...]) == 1 and int(rngs.dropout.count[...]) == 1
        assert not same(forked(), nnx.Rngs(0)())
        assert same(nnx.Rngs(0, dropout=1).fork()(), nnx.Rngs(0, dropout=1).fork()())

    def test_fork_split(self):
        forked = nnx.Rngs(0).fork(split=4)
        assert forked.default.key.shape == (4,)
        assert forked.default.count.shape == (4,)
        keys = jax.vmap(lambda key, count: jax.random.fold_in(key, count))(
            forked.default.key[...], forked.default.count[...])
        assert len({tuple(k) for k in data(keys)}) == 4
        assert nnx.Rngs(0).fork(split=(2, 3)).default.key.shape == (2, 3)

    def test_fork_split_per_stream(self):
        rngs = nnx.Rngs(params=0, dropout=1)
        forked = rngs.fork(split={"dropout": 4, ...: None})
        assert forked.dropout.key.shape == (4,)
        assert forked.params.key.shape == ()

    def test_stream_fork(self):
        stream = nnx.RngStream(0, tag="a")
        child = stream.fork()
        assert child.tag == "a" and int(stream.count[...]) == 1
        assert stream.fork(split=3).key.shape == (3,)

    def test_fork_rngs_function(self):
        model = Noisy(nnx.Rngs(params=0, dropout=1))
        old = data(model.rngs.dropout.key[...])
        backups = nnx.fork_rngs(model)
        assert len(backups) == 2
        assert not np.array_equal(data(model.rngs.dropout.key[...]), old)
        assert int(model.rngs.dropout.count[...]) == 0
        nnx.fork_rngs(model, split=2)
        assert model.rngs.dropout.key.shape == (2,)


class TestSplitRngs:
    def test_context_manager_splits_and_restores(self):
        rngs = nnx.Rngs(0, dropout=1)
        old_key = data(rngs.default.key[...])
        with nnx.split_rngs(rngs, splits=5) as backups:
            assert isinstance(backups, nnx.rnglib.SplitBackups) and len(backups) == 2
            assert rngs.default.key.shape == (5,) and rngs.dropout.key.shape == (5,)
            assert rngs.default.count.shape == (5,)
            keys = jax.vmap(lambda k: k)(rngs.default.key[...])
            assert keys.shape == (5,)
        assert rngs.default.key.shape == () and rngs.default.count.shape == ()
        np.testing.assert_array_equal(data(rngs.default.key[...]), old_key)
        # restored, but advanced past the key that was drawn to make the split
        assert int(rngs.default.count[...]) == 1
        reference = nnx.Rngs(0)
        reference()
        assert same(rngs(), reference())

    def test_only_filter(self):
        rngs = nnx.Rngs(params=0, dropout=1)
        with nnx.split_rngs(rngs, splits=3, only="dropout"):
            assert rngs.dropout.key.shape == (3,)
            assert rngs.params.key.shape == ()

    def test_tuple_splits(self):
        rngs = nnx.Rngs(0)
        with nnx.split_rngs(rngs, splits=(2, 3)):
            assert rngs.default.key.shape == (2, 3)

    def test_squeeze(self):
        rngs = nnx.Rngs(0)
        with nnx.split_rngs(rngs, splits=1, squeeze=True):
            assert rngs.default.key.shape == ()
            squeezed = data(rngs.default.key[...])
        # The key is the one key of a split into 1 (flax.nnx's draw), not the raw draw.
        expected = jax.random.split(nnx.Rngs(0).default(), 1)[0]
        np.testing.assert_array_equal(squeezed, data(expected))
        with pytest.raises(ValueError, match="splits=1"):
            with nnx.split_rngs(rngs, splits=2, squeeze=True):
                pass

    def test_split_keys_are_distinct(self):
        rngs = nnx.Rngs(0)
        with nnx.split_rngs(rngs, splits=4):
            keys = data(rngs.default.key[...])
        assert len({tuple(k) for k in keys}) == 4

    def test_restored_after_exception(self):
        rngs = nnx.Rngs(0)
        with pytest.raises(RuntimeError):
            with nnx.split_rngs(rngs, splits=2):
                raise RuntimeError("boom")
        assert rngs.default.key.shape == ()

    def test_decorator(self):
        model = Noisy(nnx.Rngs(params=0, dropout=1))
        seen = {}

        @nnx.split_rngs(splits=4)
        def batched(m, x):
            seen["shape"] = m.rngs.dropout.key.shape
            return x

        assert batched(model, 1) == 1
        assert seen["shape"] == (4,)
        assert model.rngs.dropout.key.shape == ()

    def test_decorator_with_vmap_over_split_state(self):
        model = Noisy(nnx.Rngs(params=0, dropout=1))

        @nnx.split_rngs(splits=3, only="dropout")
        def sample(model, x):
            graphdef, rng_state, rest = nnx.split(model, "dropout", ...)

            def one(rng_state):
                m = nnx.merge(graphdef, rng_state, rest)
                return m(x)

            return jax.vmap(one)(rng_state)

        ys = sample(model, jnp.zeros(2))
        assert ys.shape == (3, 2)
        assert not np.allclose(ys[0], ys[1])

    def test_the_call_splits_and_restore_rngs_undoes_it(self):
        rngs = nnx.Rngs(0)
        backups = nnx.split_rngs(rngs, splits=2)   # no `with` needed: split at the call
        assert rngs.default.key.shape == (2,)
        nnx.restore_rngs(backups)
        assert rngs.default.key.shape == () and int(rngs.default.count[...]) == 1


class TestReseed:
    def test_reseed_restarts_stream(self):
        rngs = nnx.Rngs(0, dropout=1)
        rngs.dropout()
        nnx.reseed(rngs, dropout=1)
        assert int(rngs.dropout.count[...]) == 0
        # the new key is the first key of a fresh stream seeded 1 (as flax.nnx draws it)
        assert same(rngs.dropout.key[...], nnx.RngStream(1, tag="dropout")())
        first = rngs.dropout()
        nnx.reseed(rngs, dropout=1)
        assert same(rngs.dropout(), first)

    def test_reseed_only_named_streams(self):
        rngs = nnx.Rngs(0, dropout=1)
        rngs()
        nnx.reseed(rngs, dropout=5)
        assert int(rngs.default.count[...]) == 1
        assert same(rngs.dropout.key[...], nnx.Rngs(dropout=5).dropout())

    def test_reseed_inside_module(self):
        model = Noisy(nnx.Rngs(params=0, dropout=1))
        x = jnp.zeros(3)
        nnx.reseed(model, dropout=1)
        y1 = model(x)
        model(x)
        nnx.reseed(model, dropout=1)
        np.testing.assert_array_equal(model(x), y1)

    def test_reseed_is_not_structural(self):
        rngs = nnx.Rngs(0)
        g = nnx.graphdef(rngs)
        nnx.reseed(rngs, default=3)
        assert nnx.graphdef(rngs) is g


def test_split_rngs_of_already_stacked_keys_is_a_clear_error_and_changes_nothing():
    class Holder(nnx.Module):
        def __init__(self):
            self.fresh = nnx.Rngs(1)
            self.stacked = nnx.Rngs(0)

    holder = Holder()
    with nnx.split_rngs(holder.stacked, splits=4):
        holder.stacked = nnx.clone(holder.stacked)  # keep a stacked copy past the block
    fresh_key = jax.random.key_data(holder.fresh.default.key[...])
    with pytest.raises(ValueError, match=r"stacked/default.*stack of keys.*shape \(4,\).*Hint"):
        with nnx.split_rngs(holder, splits=2):
            pass
    # the stream visited before the error was put back exactly
    np.testing.assert_array_equal(jax.random.key_data(holder.fresh.default.key[...]),
                                  fresh_key)
    assert int(holder.fresh.default.count[...]) == 0


class TestReseedPolicy:
    def stacked(self):
        rngs = nnx.Rngs(0, dropout=1)
        with nnx.split_rngs(rngs, splits=3, only="dropout"):
            return nnx.clone(rngs)

    def test_scalars_only_rejects_stacked_keys_and_changes_nothing(self):
        rngs = self.stacked()
        before = jax.random.key_data(rngs.default.key[...])
        with pytest.raises(ValueError, match=r"dropout.*shape \(3,\).*match_shape"):
            nnx.reseed(rngs, default=5, dropout=7)
        np.testing.assert_array_equal(jax.random.key_data(rngs.default.key[...]), before)

    def test_match_shape_splits_the_new_key(self):
        rngs = self.stacked()
        nnx.reseed(rngs, dropout=7, policy="match_shape")
        assert rngs.dropout.key.shape == (3,) and rngs.dropout.count.shape == (3,)
        expected = jax.random.split(nnx.RngStream(7, tag="dropout")(), 3)
        np.testing.assert_array_equal(jax.random.key_data(rngs.dropout.key[...]),
                                      jax.random.key_data(expected))

    def test_callable_policy(self):
        rngs = self.stacked()
        seen = []

        def policy(path, key, shape):
            seen.append((path, shape))
            return jax.random.split(key, shape)

        nnx.reseed(rngs, dropout=3, policy=policy)
        assert seen == [(("dropout",), (3,))] and rngs.dropout.key.shape == (3,)

    def test_unknown_policy(self):
        with pytest.raises(ValueError, match="unknown policy"):
            nnx.reseed(nnx.Rngs(0), default=1, policy="nope")


def test_streams_from_a_mapping_or_a_default_keyword():
    from_mapping = nnx.Rngs({"params": 0, "dropout": 1})
    assert sorted(name for name, _ in from_mapping.items()) == ["dropout", "params"]
    by_keyword = nnx.Rngs(default=3, params=1)
    assert sorted(name for name, _ in by_keyword.items()) == ["default", "params"]
    assert bool(by_keyword() == nnx.Rngs(3)())


def test_restore_rngs_after_fork_rngs_gives_the_keys_back_past_the_draw():
    rngs = nnx.Rngs(0, dropout=1)
    before = [(jax.random.key_data(s.key[...]), int(s.count[...])) for _, s in rngs.items()]
    backups = nnx.fork_rngs(rngs, split=3)
    assert rngs.dropout.key.shape == (3,)
    nnx.restore_rngs(backups)
    after = [(jax.random.key_data(s.key[...]), int(s.count[...])) for _, s in rngs.items()]
    for (key_a, count_a), (key_b, count_b) in zip(before, after, strict=True):
        np.testing.assert_array_equal(key_a, key_b)
        assert count_b == count_a + 1  # the key drawn to fork is not handed out again
