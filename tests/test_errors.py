"""Misuse gets an exception that says what, where, expected vs. actual, and how to fix it;
and the model is left exactly as it was."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Block(nnx.Module):
    def __init__(self, n):
        self.kernel = nnx.Param(jnp.ones((n, n)))
        self.mean = nnx.BatchStat(jnp.zeros(n))


class Model(nnx.Module):
    def __init__(self):
        self.blocks = [Block(2), Block(3)]
        self.head = Block(2)
        self.count = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        self.count[...] += 1
        return x @ self.head.kernel


class Noisy(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (2,)))
        self.rngs = rngs

    def __call__(self, x):
        self.w[...] = self.w + 1  # a change made before the failure
        return x + jax.random.normal(self.rngs.dropout(), x.shape)


def snapshot(node):
    """Everything an error must not change: structure, leaf identities and values."""
    graphdef, state = nnx.split(node)
    flat = list(nnx.to_flat_state(state))
    return (graphdef, [p for p, _ in flat], [id(v) for _, v in flat],
            [_array(v[...] if isinstance(v, nnx.Variable) else v) for _, v in flat])


def _array(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.array(x)


def assert_unchanged(node, before):
    graphdef, paths, ids, values = snapshot(node)
    assert graphdef == before[0]
    assert paths == before[1]
    assert ids == before[2]
    for got, want in zip(values, before[3]):
        np.testing.assert_array_equal(got, want)


@pytest.fixture
def model():
    return Model()


# -------------------------------------------------------------------------- merge
class TestMerge:
    def test_missing_paths(self, model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.merge(graphdef, params)
        msg = str(info.value)
        assert "merge" in msg and "missing paths" in msg
        assert "blocks[0].mean" in msg  # where
        assert "Expected 7 leaves, got 3" in msg  # expected vs actual
        assert "Hint:" in msg and "merge(graphdef, params, rest)" in msg
        assert_unchanged(model, before)

    def test_extra_paths(self, model):
        graphdef, state = nnx.split(model)
        state["head"]["bogus"] = nnx.Param(jnp.ones(1))
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.merge(graphdef, state)
        msg = str(info.value)
        assert "unexpected paths ['head.bogus']" in msg
        assert "Expected 7 leaves, got 8" in msg and "Hint:" in msg
        assert_unchanged(model, before)

    def test_state_of_another_model(self, model):
        graphdef = nnx.graphdef(model)
        other = nnx.state(Block(2))
        with pytest.raises(ValueError, match="missing paths.*unexpected paths"):
            nnx.merge(graphdef, other)

    def test_not_a_graphdef(self, model):
        _, state = nnx.split(model)
        with pytest.raises(TypeError, match=r"expected a GraphDef.*got State.*Hint"):
            nnx.merge(state, state)


# ------------------------------------------------------------------------- update
class TestUpdate:
    def test_wrong_path(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.update(model, {"head": {"kernal": jnp.zeros((2, 2))}})
        msg = str(info.value)
        assert "'head.kernal' is not in the Model" in msg  # what and where
        assert "known paths include" in msg and "Hint:" in msg
        assert_unchanged(model, before)

    def test_wrong_shape(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.update(model, {"blocks": {1: {"kernel": jnp.zeros((2, 2))}}})
        msg = str(info.value)
        assert "shape mismatch at 'blocks[1].kernel'" in msg
        assert "expected (3, 3), got (2, 2)" in msg and "Hint:" in msg
        assert_unchanged(model, before)

    def test_wrong_dtype(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.update(model, {"head": {"mean": jnp.zeros(2, jnp.int32)}})
        msg = str(info.value)
        assert "dtype mismatch at 'head.mean'" in msg
        assert "expected float32, got int32" in msg
        assert "Hint:" in msg and "astype(float32)" in msg
        assert_unchanged(model, before)

    def test_nothing_written_when_a_later_entry_is_bad(self, model):
        before = snapshot(model)
        good = {"blocks": {0: {"kernel": jnp.full((2, 2), 9.0)}}}
        bad = {"head": {"kernel": jnp.zeros((5, 5))}}
        with pytest.raises(ValueError, match="shape mismatch at 'head.kernel'"):
            nnx.update(model, good, bad)
        assert_unchanged(model, before)
        with pytest.raises(ValueError, match="not in the Model"):
            nnx.update(model, {**good, "nope": jnp.zeros(1)})
        assert_unchanged(model, before)

    def test_wrong_shape_in_variable(self, model):
        before = snapshot(model)
        state = nnx.state(model)
        state["count"] = nnx.Variable(jnp.zeros(3, jnp.int32))
        with pytest.raises(ValueError, match=r"shape mismatch at 'count': expected \(\)"):
            nnx.update(model, state)
        assert_unchanged(model, before)


# -------------------------------------------------------------------------- split
class TestFilters:
    def test_split_with_non_exhaustive_filters(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            nnx.split(model, nnx.Param, nnx.BatchStat)
        msg = str(info.value)
        assert "'count'" in msg and "(Variable)" in msg  # where, what
        assert "matches none of the filters" in msg  # expected
        assert "Hint: add `...`" in msg
        assert_unchanged(model, before)

    def test_state_split_with_non_exhaustive_filters(self, model):
        with pytest.raises(ValueError, match=r"'blocks\[0\]\.mean' \(BatchStat\) matches none"):
            nnx.state(model).split(nnx.Param)

    @pytest.mark.parametrize("bad", [3, 2.5, b"params", object()])
    def test_bad_filter_type(self, model, bad):
        before = snapshot(model)
        for call in (lambda: nnx.split(model, bad, ...), lambda: nnx.state(model, bad),
                     lambda: nnx.pop(model, bad), lambda: nnx.state(model).filter(bad)):
            with pytest.raises(TypeError) as info:
                call()
            msg = str(info.value)
            assert "Invalid filter" in msg and type(bad).__name__ in msg
            assert "Expected a type, a collection name" in msg
        assert_unchanged(model, before)

    def test_bad_filter_inside_combinator(self):
        with pytest.raises(TypeError, match="Invalid filter 1.5"):
            nnx.All(nnx.Param, 1.5)

    def test_set_attributes_matching_nothing(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            model.set_attributes(deterministic=True)
        msg = str(info.value)
        assert "no submodule of Model has attribute(s) ['deterministic']" in msg
        assert "raise_if_not_found=False" in msg
        assert_unchanged(model, before)

    def test_pop_without_filter(self, model):
        before = snapshot(model)
        with pytest.raises(TypeError, match=r"at least one filter.*nnx.Intermediate"):
            nnx.pop(model)
        assert_unchanged(model, before)


# --------------------------------------------------------------------------- rngs
class TestRngs:
    def test_missing_stream(self):
        rngs = nnx.Rngs(params=0)
        before = snapshot(rngs)
        for get in (lambda: rngs.dropout, lambda: rngs["dropout"]):
            with pytest.raises(AttributeError) as info:
                get()
            msg = str(info.value)
            assert "No RngStream named 'dropout'" in msg
            assert "streams are ['params']" in msg
            assert "Hint:" in msg and "dropout=seed" in msg
        with pytest.raises(AttributeError, match="No RngStream named 'default'"):
            rngs()
        assert_unchanged(rngs, before)

    def test_missing_stream_inside_a_model(self):
        model = Noisy(nnx.Rngs(params=0))
        graphdef, state = nnx.split(model)
        with pytest.raises(AttributeError, match="'dropout'"):
            nnx.merge(graphdef, jax.tree.map(lambda x: x, state))(jnp.zeros(2))
        # the failed call ran on a copy; the model itself is as it was
        np.testing.assert_array_equal(model.w[...], state["w"][...])

    def test_bad_seed(self):
        with pytest.raises(TypeError, match=r"Cannot make an RNG key.*float32.*int seed"):
            nnx.Rngs(jnp.ones(2))


# ------------------------------------------------------------- attribute values
@functools.partial(jax.tree_util.register_dataclass, data_fields=["item"], meta_fields=[])
@dataclasses.dataclass
class PytreeBox:
    item: object


class PlainBox:
    def __init__(self, item):
        self.item = item


class TestAttributeValues:
    @pytest.mark.parametrize("make,kind", [
        (lambda: {Block(2)}, "set"),
        (lambda: frozenset([nnx.Param(1.0)]), "frozenset"),
        (lambda: PytreeBox(nnx.Param(1.0)), "PytreeBox"),
        (lambda: PytreeBox(jnp.ones(2)), "PytreeBox"),
        (lambda: PlainBox(nnx.Param(1.0)), "PlainBox"),
        (lambda: PlainBox(Block(2)), "PlainBox"),
    ], ids=["set-of-modules", "frozenset", "pytree-param", "pytree-array", "object-param",
            "object-module"])
    def test_unsupported_container(self, model, make, kind):
        graphdef = nnx.graphdef(model)
        before = snapshot(model)
        with pytest.raises(ValueError) as info:
            model.hidden = make()
        msg = str(info.value)
        assert "Cannot assign Model.hidden" in msg  # where
        assert f"the {kind} value contains" in msg  # what
        assert "Hint: hold them in a list, dict, tuple" in msg
        assert not hasattr(model, "hidden")
        assert nnx.graphdef(model) is graphdef  # not even a structural change
        assert_unchanged(model, before)

    def test_replacing_an_attribute_keeps_the_old_value(self, model):
        head = model.head
        with pytest.raises(ValueError):
            model.head = {head}
        assert model.head is head

    def test_static_containers_are_fine(self, model):
        model.tags = {"a", "b"}
        model.box = PlainBox(3)
        model.fn = jax.nn.relu
        assert nnx.merge(*nnx.split(model)).tags == {"a", "b"}

    def test_sow_into_wrong_type(self, model):
        before = snapshot(model)
        with pytest.raises(ValueError, match=r"Model.count holds a Variable, expected a "
                                             r"Intermediate.*Hint"):
            model.sow(nnx.Intermediate, "count", 1)
        assert_unchanged(model, before)


# --------------------------------------------------------------------- trace errors
class TestTraceContext:
    def test_assign_variable_of_captured_module(self, model):
        before = snapshot(model)

        @jax.jit
        def f(x):
            model.head.kernel[...] = x
            return x

        with pytest.raises(nnx.TraceContextError) as info:
            f(jnp.zeros((2, 2)))
        msg = str(info.value)
        assert "Param" in msg and "captured from an outer trace" in msg
        assert "Hint: pass the module" in msg
        assert_unchanged(model, before)

    @pytest.mark.parametrize("mutation", [
        "value_attr", "set_value", "inplace", "call", "setattr", "delattr", "list_append",
        "dict_setitem", "metadata",
    ])
    def test_every_mutation_of_captured_state(self, mutation):
        model = Model()
        model.table = {"a": nnx.Param(1.0)}
        before = snapshot(model)

        def body(x):
            if mutation == "value_attr":
                model.count.value = x
            elif mutation == "set_value":
                model.count.set_value(x)
            elif mutation == "inplace":
                model.count += x
            elif mutation == "call":
                model(jnp.ones((1, 2)))
            elif mutation == "setattr":
                model.extra = x
            elif mutation == "delattr":
                del model.head
            elif mutation == "list_append":
                model.blocks.append(Block(1))
            elif mutation == "dict_setitem":
                model.table["b"] = nnx.Param(x)
            elif mutation == "metadata":
                model.count.set_metadata(note="inside")
            return x

        with pytest.raises(nnx.TraceContextError, match="Hint"):
            jax.jit(body)(jnp.array(1))
        assert_unchanged(model, before)

    def test_reading_captured_state_is_fine(self, model):
        out = jax.jit(lambda x: x @ model.head.kernel)(jnp.ones((1, 2)))
        np.testing.assert_array_equal(out, [[2.0, 2.0]])

    def test_passing_state_explicitly_is_the_fix(self, model):
        graphdef, state = nnx.split(model)

        @jax.jit
        def f(state, x):
            m = nnx.merge(graphdef, state)
            m.head.kernel[...] = x  # objects built inside the trace may be mutated
            return nnx.state(m)

        nnx.update(model, f(state, jnp.zeros((2, 2))))
        np.testing.assert_array_equal(model.head.kernel[...], np.zeros((2, 2)))

    def test_grad_also_guards(self, model):
        def loss(x):
            model.count.value = x
            return x

        with pytest.raises(nnx.TraceContextError):
            jax.grad(loss)(1.0)
        assert int(model.count[...]) == 0


# -------------------------------------------------------------------- misc misuse
class TestMisc:
    def test_missing_variable_metadata(self):
        p = nnx.Param(jnp.ones(2), out_sharding=("a",))
        with pytest.raises(AttributeError) as info:
            p.mesh_axes
        msg = str(info.value)
        assert "'mesh_axes'" in msg and "['out_sharding']" in msg and "Hint" in msg

    def test_unknown_collection_name(self):
        with pytest.raises(ValueError, match=r"'not_a_collection'.*known names.*Hint"):
            nnx.variable_type_from_name("not_a_collection")

    def test_replace_by_pure_dict_unknown_path(self):
        state = nnx.state(Model())
        with pytest.raises(ValueError, match=r"head\.nope: not in the state(.|\n)*Hint"):
            state.replace_by_pure_dict({"head": {"nope": 1.0}})

    def test_empty_sequential_is_the_identity(self):  # as flax.nnx's
        x = jnp.ones(1)
        assert nnx.Sequential()(x) is x and nnx.Sequential()() is None


class TestFlaxKeyPhrases:
    """Our messages carry the phrase flax.nnx's message has, for users searching it."""

    def test_partition_filters(self):
        m = nnx.Dict(a=nnx.Param(1.0), b=nnx.BatchStat(2.0))
        with pytest.raises(ValueError, match=r"'b'.*Non-exhaustive filters, got a "
                                             r"non-empty remainder.*Hint"):
            nnx.split(m, nnx.Param)
        with pytest.raises(ValueError, match=r"`\.\.\.` or `True` can only be used as "
                                             r"the last filters.*Hint"):
            nnx.split(m, ..., nnx.Param)

    def test_merge_and_unflatten(self):
        graphdef, _ = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        with pytest.raises(TypeError, match=r"merge\(\) missing 1 required positional "
                                            r"argument: 'state'\. Hint"):
            nnx.merge(graphdef)
        with pytest.raises(ValueError, match=r"Expected 2 leaves, got 0 \(Incorrect "
                                             r"number of leaves\)"):
            nnx.graphlib.unflatten(graphdef, nnx.State({}))

    def test_static_markers(self):
        with pytest.raises(ValueError, match="Found data in value of type"):
            nnx.static(jnp.ones(2))

        @nnx.dataclass
        class Config(nnx.Pytree):
            a: jax.Array = nnx.static()

        with pytest.raises(ValueError, match=r"Config\.a \(marked static\).*Found "
                                             "unexpected data on value of type"):
            Config(a=jnp.array(3))

    def test_sow_into_a_taken_name(self):
        m = nnx.Module()
        m.y = 10
        with pytest.raises(ValueError, match=r"m?.*Expected 'y' to be a Variable, got int"):
            m.sow(nnx.Intermediate, "y", 1)
        m.z = nnx.Param(1.0)
        with pytest.raises(ValueError, match="Expected 'z' to be of type 'Intermediate', "
                                             "got 'Param'"):
            m.sow(nnx.Intermediate, "z", 1)
        assert m.y == 10 and m.z[...] == 1.0

    def test_views_and_attribute_setters(self):
        model = nnx.Sequential(nnx.Dropout(0.5))
        with pytest.raises(ValueError, match=r"Could not find at least one instance of "
                                             r"the following attributes: \['nope'\]"):
            model.set_attributes(nope=True)
        with pytest.raises(ValueError, match=r"Could not find at least one instance"):
            nnx.with_attributes(model, nope=True)
        with pytest.raises(ValueError, match=r"Unused keys found in nnx.view: \['nope'\]"):
            nnx.view(model, nope=True)

    def test_trace_level(self):
        m = nnx.Dict(a=nnx.Param(1))

        @jax.jit
        def f():
            m.a = 2

        with pytest.raises(nnx.errors.TraceContextError,
                           match="Cannot mutate Dict from a different trace level"):
            f()

