"""Bad arguments raise at once, say where, what was expected, what was found and how to
fix it, and change nothing: jit's static arguments and options, pure-dict restores,
filter order, optimizer filters, RNG split sizes, dropout rates, missing RNG streams."""

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnxlib as nnx
from nnxlib.errors import (
    InvalidArgumentError,
    InvalidFilterError,
    MissingRngStreamError,
    NotSupportedError,
    StateMismatchError,
)
from tests.test_errors import assert_unchanged, snapshot


class Block(nnx.Module):
    def __init__(self, n):
        self.kernel = nnx.Param(jnp.ones((n, n)))
        self.mean = nnx.BatchStat(jnp.zeros(n))


class Model(nnx.Module):
    def __init__(self):
        self.blocks = [Block(2), Block(3)]
        self.head = nnx.Linear(2, 2, rngs=nnx.Rngs(0))


def counts(rngs):
    return {name: int(stream.count[...]) for name, stream in rngs.items()}


# ---------------------------------------------------------------- jit: static args
class TestJitStaticGraphObjects:
    def test_module_by_static_argnums(self):
        model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        before = snapshot(model)
        forward = nnx.jit(lambda model, x: model(x), static_argnums=0)
        with pytest.raises(InvalidArgumentError) as info:
            forward(model, jnp.ones((1, 2)))
        msg = str(info.value)
        assert isinstance(info.value, ValueError)  # what flax.nnx raises
        assert "static argument model is a Linear" in msg
        assert "hashable constants" in msg and "would be ignored" in msg
        assert "Hint: pass it as a regular argument" in msg
        with pytest.raises(InvalidArgumentError):  # every time, not only on the first call
            forward(model, jnp.ones((1, 2)))
        assert forward._entries == {}  # nothing was compiled with the module baked in
        assert_unchanged(model, before)

    def test_module_by_static_argnames_positional_and_keyword(self):
        model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        forward = nnx.jit(lambda model, x: model(x), static_argnames="model")
        for call in (lambda: forward(model, jnp.ones((1, 2))),
                     lambda: forward(model=model, x=jnp.ones((1, 2)))):
            with pytest.raises(InvalidArgumentError, match="static argument model is a Linear"):
                call()

    @pytest.mark.parametrize("make, where, kind", [
        (lambda m: (1, (m,)), r"cfg\[1\]\[0\]", "Linear"),
        (lambda m: (m.kernel,), r"cfg\[0\]", "Param"),
        (lambda m: nnx.List([m]), "cfg", "List"),
        (lambda m: (nnx.Dict(a=m),), r"cfg\[0\]", "Dict"),
    ])
    def test_nested_graph_objects(self, make, where, kind):
        model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        f = nnx.jit(lambda cfg, x: x, static_argnames="cfg")
        with pytest.raises(InvalidArgumentError, match=rf"static argument {where} is a {kind}\."):
            f(cfg=make(model), x=jnp.ones(2))

    def test_unnamed_position_and_ahead_of_time_entry_points(self):
        model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        f = nnx.jit(lambda *args: args[1], static_argnums=0)
        with pytest.raises(InvalidArgumentError, match=r"static argument args\[0\] is a Linear"):
            f(model, jnp.ones(2))
        g = nnx.jit(lambda model, x: model(x), static_argnums=0)
        for entry_point in (g.trace, g.lower):
            with pytest.raises(InvalidArgumentError, match="static argument model"):
                entry_point(model, jnp.ones((1, 2)))

    def test_the_fix_the_hint_names_sees_new_weights(self):
        model = nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(0))
        forward = nnx.jit(lambda model, x, scale: model(x) * scale, static_argnums=2)
        x = jnp.ones((1, 2))
        first = forward(model, x, 1.0)
        model.kernel.value = model.kernel.value * 2
        np.testing.assert_allclose(forward(model, x, 1.0), 2 * first, rtol=1e-6)
        np.testing.assert_allclose(forward(model, x, 3.0), 6 * first, rtol=1e-6)


# --------------------------------------------------------- jit: abstracted_axes
class TestJitAbstractedAxes:
    def test_raises_at_decoration(self):
        # why nnxlib cannot pass it on: jax.jit itself has no such option any more
        assert "abstracted_axes" not in inspect.signature(jax.jit).parameters
        calls = []
        for decorate in (lambda f: nnx.jit(f, abstracted_axes=({0: "n"},)),
                         lambda f: nnx.jit(abstracted_axes=({0: "n"},))(f),
                         lambda f: nnx.JitWrapped(f, abstracted_axes=({0: "n"},))):
            with pytest.raises(NotSupportedError) as info:
                decorate(lambda x: calls.append(x))
            assert isinstance(info.value, NotImplementedError)
            msg = str(info.value)
            assert "abstracted_axes=({0: 'n'},) is not supported" in msg
            assert "Hint: remove abstracted_axes" in msg
        assert calls == []

    def test_decorator_factory_raises_before_a_function_is_given(self):
        with pytest.raises(NotSupportedError):
            nnx.jit(abstracted_axes=({0: "n"},))

    def test_none_is_fine(self):
        assert int(nnx.jit(lambda x: x + 1, abstracted_axes=None)(1)) == 2


# ---------------------------------------------------------- replace_by_pure_dict
class TestReplaceByPureDict:
    def test_missing_key_lists_path_and_changes_nothing(self):
        state = nnx.state(Model())
        pure = state.to_pure_dict()
        del pure["blocks"][1]["kernel"]
        before = list(nnx.to_flat_state(state))
        with pytest.raises(StateMismatchError) as info:
            state.replace_by_pure_dict(pure)
        msg = str(info.value)
        assert "blocks[1].kernel: missing from the pure dict" in msg
        assert "nothing was replaced" in msg and "Hint:" in msg and "partial=True" in msg
        after = list(nnx.to_flat_state(state))
        assert [p for p, _ in after] == [p for p, _ in before]
        assert all(a is b for (_, a), (_, b) in zip(after, before))

    def test_missing_key_in_abstract_state_raises_even_when_partial(self):
        abstract = nnx.eval_shape(lambda: Model())
        state = nnx.state(abstract)
        pure = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                            nnx.state(Model()).to_pure_dict())
        del pure["head"]["bias"]
        for partial in (False, True):
            with pytest.raises(StateMismatchError, match=r"head\.bias: missing"):
                state.replace_by_pure_dict(pure, partial=partial)
        assert isinstance(state["head"]["kernel"][...], jax.ShapeDtypeStruct)  # unchanged

    def test_partial_keeps_the_rest(self):
        state = nnx.state(Model())
        nnx.replace_by_pure_dict(state, {"head": {"bias": jnp.full(2, 7.0)}}, partial=True)
        np.testing.assert_array_equal(state["head"]["bias"][...], np.full(2, 7.0))
        np.testing.assert_array_equal(state["blocks"][0]["kernel"][...], np.ones((2, 2)))

    def test_every_mismatch_is_listed(self):
        state = nnx.state(Model())
        pure = state.to_pure_dict()
        pure["blocks"][0]["kernel"] = jnp.ones((3, 3))              # wrong shape
        pure["blocks"][1]["mean"] = jnp.zeros(3, jnp.int32)         # wrong dtype
        pure["head"]["scale"] = jnp.ones(2)                         # extra
        del pure["head"]["kernel"]                                  # missing
        old_leaves = [v for _, v in nnx.to_flat_state(state)]
        with pytest.raises(StateMismatchError) as info:
            nnx.replace_by_pure_dict(state, pure)
        msg = str(info.value)
        assert "at 4 path(s)" in msg
        assert "blocks[0].kernel: expected shape (2, 2), got (3, 3)" in msg
        assert "blocks[1].mean: expected dtype float32, got int32" in msg
        assert "head.scale: not in the state" in msg
        assert "head.kernel: missing from the pure dict" in msg
        assert [v for _, v in nnx.to_flat_state(state)] == old_leaves

    def test_scalar_in_place_of_an_array(self):
        state = nnx.State({"w": nnx.Param(jnp.ones(3))})
        with pytest.raises(StateMismatchError, match=r"w: expected shape \(3,\), got \(\)"):
            state.replace_by_pure_dict({"w": 1.0})

    def test_matching_values_still_work(self):
        state = nnx.state(Model())
        pure = state.to_pure_dict()
        pure = {"blocks": {str(i): b for i, b in pure["blocks"].items()},  # string keys
                "head": {"kernel": np.zeros((2, 2), np.float64),  # canonicalises to f32
                         "bias": pure["head"]["bias"]}}
        state.replace_by_pure_dict(pure)
        np.testing.assert_array_equal(state["head"]["kernel"][...], np.zeros((2, 2)))

    def test_custom_replace_fn_skips_value_checks(self):
        state = nnx.State({"w": nnx.Param(jnp.ones(3))})
        state.replace_by_pure_dict({"w": "packed"}, replace_fn=lambda old, new: new)
        assert state["w"] == "packed"
        with pytest.raises(StateMismatchError, match="w: missing"):
            state.replace_by_pure_dict({}, replace_fn=lambda old, new: new)


# ------------------------------------------------------------ split filter order
class TestCatchAllFilterOrder:
    @pytest.mark.parametrize("filters, index, shown", [
        ((..., nnx.BatchStat), 0, r"\.\.\."),
        ((True, nnx.Param), 0, "True"),
        ((nnx.Everything(), nnx.Param), 0, r"Everything\(\)"),
        ((nnx.Param, [nnx.BatchStat, ...], nnx.RngState), 1, r"\[BatchStat"),
        ((nnx.Any(nnx.Param, ...), nnx.BatchStat), 0, r"Any\("),
        ((nnx.Param, ..., nnx.BatchStat, ...), 1, r"\.\.\."),
    ])
    def test_split_raises_and_changes_nothing(self, filters, index, shown):
        model = Model()
        before = snapshot(model)
        with pytest.raises(InvalidFilterError) as info:
            nnx.split(model, *filters)
        msg = str(info.value)
        assert isinstance(info.value, ValueError)
        assert f"filter {index} (" in msg and "selects everything" in msg
        assert "would receive nothing" in msg and "Hint: put the catch-all last" in msg
        assert re.search(rf"filter {index} \({shown}", msg)
        assert_unchanged(model, before)

    def test_hint_gives_the_reordered_filters(self):
        with pytest.raises(InvalidFilterError, match=r"last: \(BatchStat, \.\.\.\)\."):
            nnx.split(Model(), ..., nnx.BatchStat)

    def test_split_state_and_state_split(self):
        state = nnx.state(Model())
        with pytest.raises(InvalidFilterError):
            nnx.split_state(state, ..., nnx.BatchStat)
        with pytest.raises(InvalidFilterError):
            state.split(..., nnx.BatchStat)

    def test_catch_all_last_is_fine_and_nothing_is_cached_wrongly(self):
        model = Model()
        with pytest.raises(InvalidFilterError):
            nnx.split(model, ..., nnx.BatchStat)
        _, stats, rest = nnx.split(model, nnx.BatchStat, ...)
        assert sorted(nnx.to_flat_state(stats).paths) == [
            ("blocks", 0, "mean"), ("blocks", 1, "mean")]
        assert len(nnx.to_flat_state(rest)) == 4
        _, everything = nnx.split(model, nnx.Everything())
        assert len(nnx.to_flat_state(everything)) == 6

    def test_not_nothing_counts_as_catch_all(self):
        with pytest.raises(InvalidFilterError):
            nnx.split(Model(), nnx.Not(nnx.Nothing()), nnx.Param)


# ----------------------------------------------------------- Optimizer wrt filter
class TestOptimizerWrt:
    @pytest.mark.parametrize("cls", [nnx.Optimizer, nnx.ModelAndOptimizer])
    def test_filter_selecting_nothing(self, cls):
        model = Model()
        before = snapshot(model)
        with pytest.raises(InvalidFilterError) as info:
            cls(model, optax.adam(1e-3), wrt=nnx.Intermediate)
        msg = str(info.value)
        assert "wrt=Intermediate selects no variable of the Model model" in msg
        assert "Expected at least one variable" in msg
        assert "4 Param (e.g. blocks[0].kernel)" in msg
        assert "2 BatchStat (e.g. blocks[0].mean)" in msg
        assert "Hint:" in msg and "wrt=nnx.Param" in msg
        assert_unchanged(model, before)

    def test_model_without_variables(self):
        with pytest.raises(InvalidFilterError, match="holds no variables at all"):
            nnx.Optimizer(nnx.Sequential(jax.nn.relu), optax.sgd(0.1))

    def test_path_filter_matching_nothing(self):
        with pytest.raises(InvalidFilterError, match=r"PathContains.*selects no variable"):
            nnx.Optimizer(Model(), optax.sgd(0.1), wrt=nnx.PathContains("nope"))


# ------------------------------------------------------------------ RNG splitting
class TestRngSplitSizes:
    @pytest.mark.parametrize("split", [-1, 0, (2, -1), (0,), 1.5, True, "4"])
    def test_rngs_fork_validates_before_drawing(self, split):
        rngs = nnx.Rngs(0, dropout=1)
        before = snapshot(rngs)
        with pytest.raises(InvalidArgumentError) as info:
            rngs.fork(split=split)
        msg = str(info.value)
        assert "Rngs.fork: split for stream 'default'" in msg and repr(split) in msg
        assert "Hint:" in msg
        assert counts(rngs) == {"default": 0, "dropout": 0}
        assert_unchanged(rngs, before)

    def test_rngs_fork_dict_bad_size_for_a_later_stream(self):
        rngs = nnx.Rngs(0, dropout=1)
        with pytest.raises(InvalidArgumentError, match="stream 'dropout'.*got -3"):
            rngs.fork(split={"dropout": -3, ...: 2})
        assert counts(rngs) == {"default": 0, "dropout": 0}  # 'default' was not drawn

    def test_stream_fork(self):
        stream = nnx.Rngs(0).default
        with pytest.raises(InvalidArgumentError, match=r"RngStream\.fork: split.*got 0"):
            stream.fork(split=0)
        assert int(stream.count[...]) == 0

    @pytest.mark.parametrize("splits", [0, -2, (3, 0)])
    def test_split_rngs(self, splits):
        rngs = nnx.Rngs(0)
        with pytest.raises(InvalidArgumentError, match=r"split_rngs: splits must be at least 1"):
            nnx.split_rngs(rngs, splits=splits)
        with pytest.raises(InvalidArgumentError):  # as a decorator: at decoration
            nnx.split_rngs(splits=splits)
        assert counts(rngs) == {"default": 0}
        assert rngs.default.key.shape == ()

    def test_fork_rngs(self):
        rngs = nnx.Rngs(0)
        with pytest.raises(InvalidArgumentError, match="fork_rngs: splits"):
            nnx.fork_rngs(rngs, split=-1)
        assert counts(rngs) == {"default": 0}

    def test_valid_sizes_still_work(self):
        rngs = nnx.Rngs(0)
        assert rngs.fork(split=(2, 3)).default.key.shape == (2, 3)
        assert rngs.fork(split=np.int64(4)).default.key.shape == (4,)
        with nnx.split_rngs(rngs, splits=1):
            assert rngs.default.key.shape == (1,)


# ------------------------------------------------------------------ Dropout rate
class TestDropoutRate:
    @pytest.mark.parametrize("rate", [-0.1, 1.5, 10, math.nan])
    def test_out_of_range_at_construction(self, rate):
        with pytest.raises(InvalidArgumentError) as info:
            nnx.Dropout(rate, rngs=nnx.Rngs(0))
        msg = str(info.value)
        assert "Dropout(rate) must be in [0, 1]" in msg and f"got {rate!r}" in msg
        assert "Hint:" in msg

    def test_not_a_number(self):
        with pytest.raises(TypeError, match="must be a number in"):
            nnx.Dropout("0.1")

    def test_rate_reassigned_out_of_range_raises_at_call(self):
        drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
        drop.rate = 2.0
        before = snapshot(drop)
        with pytest.raises(InvalidArgumentError, match=r"Dropout\.rate must be in \[0, 1\].*2\.0"):
            drop(jnp.ones(4))
        assert_unchanged(drop, before)  # no key was drawn

    @pytest.mark.parametrize("rate", [0, 0.0, 1.0, np.float32(0.5)])
    def test_edges_are_valid(self, rate):
        y = nnx.Dropout(rate, rngs=nnx.Rngs(0))(jnp.ones(8))
        assert y.shape == (8,)


# ------------------------------------------------------------ missing RNG streams
class TestMissingRngStream:
    def test_attribute_and_item_access(self):
        rngs = nnx.Rngs(params=0)
        before = snapshot(rngs)
        for get, attribute in ((lambda: rngs.dropout(), True),
                               (lambda: rngs["dropout"](), True), (lambda: rngs(), True)):
            with pytest.raises(MissingRngStreamError) as info:
                get()
            msg = str(info.value)
            assert "No RngStream named" in msg and "streams are ['params']" in msg
            assert "Hint:" in msg
            assert isinstance(info.value, KeyError)
            assert isinstance(info.value, AttributeError) == attribute
        assert not hasattr(rngs, "dropout") and getattr(rngs, "dropout", None) is None
        assert_unchanged(rngs, before)

    def test_from_a_layer(self):
        with pytest.raises(MissingRngStreamError, match=r"'params'.*\['dropout'\].*params=seed"):
            nnx.Linear(2, 3, rngs=nnx.Rngs(dropout=0))

    def test_default_fallback_is_not_an_error(self):
        assert nnx.Rngs(0).params().shape == ()
