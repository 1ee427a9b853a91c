"""Tests for nnxlib.filters: every filter kind, alone and applied to module state."""

import jax
import jax.numpy as jnp
import pytest

import nnxlib as nnx
from nnxlib.filters import to_predicate


class Block(nnx.Module):
    def __init__(self):
        self.kernel = nnx.Param(jnp.ones((2, 2)))
        self.bias = nnx.Param(jnp.zeros(2))
        self.mean = nnx.BatchStat(jnp.zeros(2))
        self.cache = nnx.Cache(jnp.zeros(1))
        self.noise = nnx.Variable(jnp.zeros(1), tag="dropout")
        self.raw = jnp.ones(3)
        self.name = "block"


def paths(state):
    return [p for p, _ in nnx.to_flat_state(state)]


P = nnx.Param(1.0)
B = nnx.BatchStat(1.0)
TAGGED = nnx.Variable(1.0, tag="dropout")
RAW = jnp.ones(1)


class TestToPredicate:
    def test_type(self):
        pred = to_predicate(nnx.Param)
        assert pred((), P) and not pred((), B) and not pred((), RAW)

    def test_type_matches_subclasses(self):
        class MyParam(nnx.Param):
            pass

        assert to_predicate(nnx.Param)((), MyParam(1.0))
        assert not to_predicate(MyParam)((), P)

    def test_type_matches_raw_arrays(self):
        pred = to_predicate(jax.Array)
        assert pred((), RAW) and not pred((), P)

    @pytest.mark.parametrize("name,value", [
        ("params", nnx.Param(0.0)), ("batch_stats", nnx.BatchStat(0.0)),
        ("cache", nnx.Cache(0.0)), ("intermediates", nnx.Intermediate(0.0)),
        ("perturbations", nnx.Perturbation(0.0)),
    ])
    def test_collection_name_string(self, name, value):
        pred = to_predicate(name)
        assert pred((), value)
        assert not pred((), nnx.Variable(0.0, tag="other"))

    def test_string_matches_tag(self):
        pred = to_predicate("dropout")
        assert pred((), TAGGED)
        assert not pred((), P)
        assert not pred(("dropout",), RAW)  # strings do not match paths

    def test_string_of_unregistered_subclass_name(self):
        class Mine(nnx.Variable):
            pass

        assert to_predicate(nnx.variable_name_from_type(Mine))((), Mine(0.0))

    def test_path_contains(self):
        pred = nnx.PathContains("bias")
        assert pred(("layer", "bias"), P)
        assert not pred(("layer", "kernel"), P)
        assert not pred(("layer", "biased"), P)  # whole keys, not substrings
        assert nnx.PathContains(0)(("layers", 0, "w"), P)

    def test_with_tag(self):
        assert nnx.WithTag("dropout")((), TAGGED)
        assert not nnx.WithTag("params")((), TAGGED)
        assert not nnx.WithTag("dropout")((), RAW)

    def test_of_type(self):
        assert nnx.OfType(nnx.BatchStat)((), B)
        assert not nnx.OfType(nnx.BatchStat)((), P)
        assert to_predicate(nnx.Param) == nnx.OfType(nnx.Param)

    def test_any(self):
        f = nnx.Any(nnx.Param, "batch_stats")
        assert f((), P) and f((), B) and not f((), TAGGED)
        assert not nnx.Any()((), P)

    def test_all(self):
        f = nnx.All(nnx.Param, nnx.PathContains("bias"))
        assert f(("bias",), P)
        assert not f(("kernel",), P)
        assert not f(("bias",), B)
        assert nnx.All()((), P)

    def test_not(self):
        f = nnx.Not(nnx.Param)
        assert f((), B) and not f((), P)
        assert nnx.Not(nnx.Not(nnx.Param))((), P)

    @pytest.mark.parametrize("f", [..., True, nnx.Everything()])
    def test_everything(self, f):
        pred = to_predicate(f)
        assert pred((), P) and pred(("x",), RAW) and pred((), "static")

    @pytest.mark.parametrize("f", [None, False, nnx.Nothing()])
    def test_nothing(self, f):
        pred = to_predicate(f)
        assert not pred((), P) and not pred(("x",), RAW)

    def test_list_and_tuple_mean_any(self):
        for f in ([nnx.Param, nnx.BatchStat], (nnx.Param, nnx.BatchStat)):
            pred = to_predicate(f)
            assert isinstance(pred, nnx.Any)
            assert pred((), P) and pred((), B) and not pred((), TAGGED)

    def test_callable(self):
        def big(path, value):
            return isinstance(value, nnx.Variable) and value.size > 2

        pred = to_predicate(big)
        assert pred is big
        assert pred((), nnx.Param(jnp.ones(3))) and not pred((), nnx.Param(jnp.ones(2)))

    def test_filter_objects_pass_through(self):
        f = nnx.PathContains("a")
        assert to_predicate(f) is f

    def test_invalid_filter(self):
        with pytest.raises(TypeError, match="Invalid filter 3 of type int"):
            to_predicate(3)

    def test_nested_combinators(self):
        f = nnx.All(nnx.Any(nnx.Param, nnx.BatchStat), nnx.Not(nnx.PathContains("skip")))
        assert f(("a",), P) and f(("b",), B)
        assert not f(("skip",), P) and not f(("a",), TAGGED)


class TestFilterObjects:
    def test_equal_by_value_and_hashable(self):
        pairs = [
            (nnx.PathContains("a"), nnx.PathContains("a")),
            (nnx.WithTag("t"), nnx.WithTag("t")),
            (nnx.OfType(nnx.Param), nnx.OfType(nnx.Param)),
            (nnx.Any(nnx.Param, "x"), nnx.Any(nnx.Param, "x")),
            (nnx.All(nnx.Param, "x"), nnx.All(nnx.Param, "x")),
            (nnx.Not(nnx.Param), nnx.Not(nnx.Param)),
            (nnx.Everything(), nnx.Everything()),
            (nnx.Nothing(), nnx.Nothing()),
        ]
        for a, b in pairs:
            assert a == b and hash(a) == hash(b)
        assert len({a for a, _ in pairs} | {b for _, b in pairs}) == len(pairs)

    def test_unequal(self):
        assert nnx.PathContains("a") != nnx.PathContains("b")
        assert nnx.Any(nnx.Param) != nnx.All(nnx.Param)
        assert nnx.Not(nnx.Param) != nnx.Not(nnx.BatchStat)
        assert nnx.Everything() != nnx.Nothing()

    def test_frozen(self):
        f = nnx.PathContains("a")
        with pytest.raises(Exception):
            f.key = "b"

    def test_reprs(self):
        assert repr(nnx.OfType(nnx.Param)) == "OfType(Param)"
        assert repr(nnx.Everything()) == "Everything()"
        assert repr(nnx.Nothing()) == "Nothing()"
        assert repr(nnx.Not(nnx.Param)) == "Not(OfType(Param))"
        assert repr(nnx.Any(nnx.Param, "x")) == "Any(OfType(Param), 'x')"
        assert repr(nnx.All(nnx.Param)) == "All(OfType(Param))"


class TestFiltersOnModules:
    def test_state_by_type(self):
        assert paths(nnx.state(Block(), nnx.Param)) == [("bias",), ("kernel",)]

    def test_state_by_collection_name(self):
        assert paths(nnx.state(Block(), "batch_stats")) == [("mean",)]
        assert paths(nnx.state(Block(), "cache")) == [("cache",)]

    def test_state_by_tag(self):
        assert paths(nnx.state(Block(), "dropout")) == [("noise",)]
        assert paths(nnx.state(Block(), nnx.WithTag("dropout"))) == [("noise",)]

    def test_state_by_path(self):
        assert paths(nnx.state(Block(), nnx.PathContains("bias"))) == [("bias",)]

    def test_raw_arrays_selected_by_array_type(self):
        assert paths(nnx.state(Block(), jax.Array)) == [("raw",)]

    def test_not_param(self):
        got = paths(nnx.state(Block(), nnx.Not(nnx.Param)))
        assert got == [("cache",), ("mean",), ("noise",), ("raw",)]

    def test_split_first_match_wins(self):
        _, first, rest = nnx.split(Block(), nnx.PathContains("bias"), ...)
        assert paths(first) == [("bias",)]
        assert ("bias",) not in paths(rest)
        _, params, stats, rest = nnx.split(Block(), nnx.Param, nnx.BatchStat, ...)
        assert paths(params) == [("bias",), ("kernel",)]
        assert paths(stats) == [("mean",)]
        assert paths(rest) == [("cache",), ("noise",), ("raw",)]

    def test_split_with_everything_and_nothing(self):
        _, none_, everything = nnx.split(Block(), nnx.Nothing(), nnx.Everything())
        assert len(paths(none_)) == 0 and len(paths(everything)) == 6

    def test_split_with_callable(self):
        def scalar_like(path, value):
            return value.size == 1

        _, small, rest = nnx.split(Block(), scalar_like, ...)
        assert paths(small) == [("cache",), ("noise",)]

    def test_split_with_list_filter(self):
        _, chosen, rest = nnx.split(Block(), [nnx.Param, nnx.Cache], ...)
        assert paths(chosen) == [("bias",), ("cache",), ("kernel",)]

    def test_state_with_several_filters_returns_tuple(self):
        params, stats = nnx.state(Block(), nnx.Param, nnx.BatchStat)
        assert paths(params) == [("bias",), ("kernel",)] and paths(stats) == [("mean",)]

    def test_unhashable_callable_filter_still_works(self):
        class Pred:
            __hash__ = None

            def __call__(self, path, value):
                return isinstance(value, nnx.BatchStat)

        _, stats, rest = nnx.split(Block(), Pred(), ...)
        assert paths(stats) == [("mean",)]


def test_path_contains_exact_and_partial_like_flax():
    from flax import nnx as flax_nnx

    cases = [("ker", ("linear", "kernel")), ("kernel", ("linear", "kernel")),
             (0, ("layers", 0, "w")), ("0", ("layers", 0, "w")), ("ear/ker", ("linear", "kernel"))]
    for key, path in cases:
        for exact in (True, False):
            ours = nnx.PathContains(key, exact=exact)(path, nnx.Param(0.0))
            theirs = flax_nnx.PathContains(key, exact=exact)(path, flax_nnx.Param(0.0))
            assert ours == theirs, (key, path, exact)
