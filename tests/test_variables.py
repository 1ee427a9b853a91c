"""Tests for nnxlib.variables: value access, metadata, array protocol, pytrees, registry."""

import copy
import operator
import pickle
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx
from nnxlib.variables import VariableMetadata


def unique(prefix):
    """A collection name no other test uses (the registry is process-global)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------- value access
class TestValueAccess:
    def test_read_forms_agree(self):
        x = jnp.arange(3.0)
        p = nnx.Param(x)
        assert p[...] is x
        assert p.value is x
        assert p.get_value() is x

    def test_write_with_ellipsis(self):
        p = nnx.Param(jnp.zeros(2))
        box = p
        p[...] = jnp.ones(2)
        assert p is box
        np.testing.assert_array_equal(p[...], np.ones(2))

    def test_write_with_value_attribute(self):
        p = nnx.Param(jnp.zeros(2))
        p.value = jnp.full(2, 3.0)
        np.testing.assert_array_equal(p.value, [3.0, 3.0])

    def test_set_value(self):
        p = nnx.Param(1.0)
        p.set_value(2.0)
        assert p.get_value() == 2.0

    def test_set_value_unboxes_variables(self):
        p = nnx.Param(1.0)
        p.set_value(nnx.Param(5.0))
        assert p.value == 5.0 and not isinstance(p.value, nnx.Variable)

    def test_index_read(self):
        p = nnx.Param(jnp.arange(5.0))
        assert float(p[2]) == 2.0
        np.testing.assert_array_equal(p[1:3], [1.0, 2.0])

    def test_index_write_is_functional_on_jax_arrays(self):
        x = jnp.arange(4.0)
        p = nnx.Param(x)
        p[1] = 10.0
        np.testing.assert_array_equal(p[...], [0.0, 10.0, 2.0, 3.0])
        np.testing.assert_array_equal(x, [0.0, 1.0, 2.0, 3.0])  # original array untouched

    def test_index_write_on_numpy_value_copies(self):
        x = np.zeros(3)
        p = nnx.Variable(x)
        p[0] = 1.0
        np.testing.assert_array_equal(p[...], [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(x, [0.0, 0.0, 0.0])

    def test_replace_returns_new_variable(self):
        p = nnx.Param(1.0, tag="a")
        q = p.replace(2.0)
        assert type(q) is nnx.Param and q is not p
        assert (p.value, q.value) == (1.0, 2.0)
        assert q.tag == "a"

    def test_replace_metadata_only(self):
        p = nnx.Param(1.0, tag="a")
        q = p.replace(tag="b")
        assert q.value == 1.0 and q.tag == "b" and p.tag == "a"

    def test_copy_is_shallow_new_box(self):
        p = nnx.BatchStat(jnp.ones(2), note="n")
        q = p.copy()
        assert type(q) is nnx.BatchStat and q is not p
        assert q.get_metadata(exclude_required=True) == {"note": "n"}
        q[...] = jnp.zeros(2)
        np.testing.assert_array_equal(p[...], [1.0, 1.0])

    def test_variable_from_variable_merges_metadata(self):
        p = nnx.Param(jnp.ones(2), a=1)
        q = nnx.BatchStat(p, b=2)
        assert type(q) is nnx.BatchStat
        assert q.get_metadata(exclude_required=True) == {"a": 1, "b": 2}
        assert q[...] is p[...]

    def test_variable_from_variable_metadata(self):
        p = nnx.Param(VariableMetadata(jnp.zeros(2), metadata={"out_sharding": ("x",)}),
                      extra=3)
        assert p.out_sharding == ("x",) and p.extra == 3
        assert p.shape == (2,)

    def test_non_array_values(self):
        v = nnx.Variable((1, 2))
        assert v.value == (1, 2)
        v.value = "anything"
        assert v[...] == "anything"


# --------------------------------------------------------------------------- metadata
class TestMetadata:
    def test_keyword_metadata_reads_as_attributes(self):
        p = nnx.Param(0.0, out_sharding=("embed",), note="hello")
        assert p.out_sharding == ("embed",)
        assert p.note == "hello"

    def test_get_metadata_returns_a_copy(self):
        p = nnx.Param(0.0, a=1)
        meta = p.get_metadata()
        meta["a"] = 2
        assert p.a == 1

    def test_get_metadata_by_name_and_default(self):
        p = nnx.Param(0.0, a=1)
        assert p.get_metadata("a") == 1
        assert p.get_metadata("missing", None) is None
        with pytest.raises(KeyError):
            p.get_metadata("missing")

    def test_set_metadata_keywords_update_and_dict_replaces(self):
        p = nnx.Param(0.0, a=1)
        p.set_metadata(b=2)
        p.set_metadata("c", 3)
        assert p.get_metadata(exclude_required=True) == {"a": 1, "b": 2, "c": 3}
        p.set_metadata({"d": 4, "hijax": False})
        assert p.get_metadata() == {"d": 4, "hijax": False, "ref": False,
                                    "eager_sharding": True}

    def test_set_metadata_cannot_mix_or_change_the_mode(self):
        p = nnx.Param(0.0, a=1)
        with pytest.raises(TypeError, match="Cannot mix positional and keyword"):
            p.set_metadata({"b": 2}, c=3)
        with pytest.raises(ValueError, match="Cannot change `eager_sharding` metadata"):
            p.set_metadata({"eager_sharding": False})
        assert p.get_metadata(exclude_required=True) == {"a": 1}

    def test_set_metadata_rejects_bad_positional(self):
        p = nnx.Param(0.0)
        with pytest.raises(TypeError, match="set_metadata"):
            p.set_metadata("a")  # a name without a value (flax's form is (name, value))
        with pytest.raises(TypeError):
            p.set_metadata({"a": 1}, {"b": 2})

    def test_attribute_assignment_sets_metadata(self):
        p = nnx.Param(0.0)
        p.note = "x"
        assert p.get_metadata("note") == "x"

    def test_delete_metadata(self):
        p = nnx.Param(0.0, a=1, b=2)
        del p.a
        assert p.get_metadata(exclude_required=True) == {"b": 2}
        with pytest.raises(AttributeError):
            del p.a

    def test_missing_attribute_error_lists_metadata(self):
        p = nnx.Param(jnp.ones(2), a=1)
        with pytest.raises(AttributeError, match=r"no metadata.*'nothing_here'.*\['a'\]"):
            p.nothing_here

    def test_value_attributes_are_forwarded(self):
        p = nnx.Param(jnp.arange(6.0).reshape(2, 3))
        assert p.T.shape == (3, 2)
        assert float(p.sum()) == 15.0
        assert p.reshape(3, 2).shape == (3, 2)

    def test_metadata_wins_over_value_attribute(self):
        p = nnx.Param(jnp.ones(2), size_hint=4, T="meta")
        assert p.T == "meta"

    def test_sharding_metadata_needs_no_mesh(self):
        p = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", "mlp"))
        assert p.out_sharding == ("embed", "mlp")
        assert p.sharding == p[...].sharding  # the value's own (one device here)
        q = nnx.Param(jnp.ones((2, 3)), out_sharding=("b",), mesh=None,
                      rules=(("a", "data"),))
        assert q.out_sharding == ("b",)
        assert q.mesh is None
        assert q.rules == (("a", "data"),)

    def test_with_metadata_initializer(self):
        init = nnx.with_metadata(nnx.initializers.ones, out_sharding=("embed", "mlp"), note=1)
        out = init(jax.random.key(0), (2, 3))
        assert isinstance(out, VariableMetadata)
        p = nnx.Param(out)
        assert p.shape == (2, 3)
        assert p.get_metadata(exclude_required=True) == {"out_sharding": ("embed", "mlp"),
                                                         "note": 1}
        np.testing.assert_array_equal(p[...], np.ones((2, 3)))
        assert init.__wrapped__ is nnx.initializers.ones

    def test_with_metadata_keyword_overrides_initializer(self):
        init = nnx.with_metadata(nnx.initializers.zeros, note="init")
        p = nnx.Param(init(jax.random.key(0), (1,)), note="explicit")
        assert p.note == "explicit"

    def test_with_partitioning(self):
        init = nnx.with_partitioning(nnx.initializers.zeros, ["embed", None], extra=1)
        p = nnx.Param(init(jax.random.key(0), (4, 2)))
        assert p.out_sharding == ("embed", None)
        assert p.extra == 1

    def test_variable_metadata_repr(self):
        assert "metadata={'a': 1}" in repr(VariableMetadata(1.0, metadata={"a": 1}))


# ---------------------------------------------------------------------- array protocol
BINARY_OPS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.mod, operator.pow,
]
INT_OPS = [operator.and_, operator.or_, operator.xor, operator.lshift, operator.rshift]


class TestArrayProtocol:
    def test_shape_dtype_ndim_size(self):
        p = nnx.Param(jnp.zeros((2, 3), jnp.int32))
        assert p.shape == (2, 3)
        assert p.dtype == jnp.int32
        assert p.ndim == 2
        assert p.size == 6
        assert len(p) == 2

    def test_scalar_python_value(self):
        p = nnx.Param(2.0)
        assert p.shape == () and p.ndim == 0 and p.size == 1

    def test_jax_array_protocol(self):
        p = nnx.Param(jnp.arange(3.0))
        np.testing.assert_array_equal(jnp.add(p, 1), [1.0, 2.0, 3.0])
        assert float(jnp.dot(p, p)) == 5.0
        np.testing.assert_array_equal(jnp.asarray(p), [0.0, 1.0, 2.0])
        assert p.__jax_array__() is p[...]

    def test_numpy_array_protocol(self):
        p = nnx.Param(jnp.arange(3.0))
        arr = np.asarray(p)
        assert isinstance(arr, np.ndarray)
        np.testing.assert_array_equal(arr, [0.0, 1.0, 2.0])
        assert np.asarray(p, dtype=np.int32).dtype == np.int32

    def test_scalar_conversions(self):
        assert bool(nnx.Param(jnp.array(1.0))) is True
        assert float(nnx.Param(jnp.array(2.5))) == 2.5
        assert int(nnx.Param(jnp.array(3))) == 3
        assert [10, 20, 30][nnx.Variable(jnp.array(1))] == 20

    def test_iteration(self):
        p = nnx.Param(jnp.arange(3))
        assert [int(x) for x in p] == [0, 1, 2]

    @pytest.mark.parametrize("op", BINARY_OPS, ids=lambda op: op.__name__)
    def test_binary_operators(self, op):
        x = jnp.array([1.0, 2.0, 3.0])
        y = jnp.array([2.0, 2.0, 2.0])
        p = nnx.Param(x)
        np.testing.assert_allclose(op(p, y), op(x, y))
        np.testing.assert_allclose(op(y, p), op(y, x))  # reflected
        np.testing.assert_allclose(op(p, nnx.Param(y)), op(x, y))  # both boxed
        np.testing.assert_allclose(op(p, 2.0), op(x, 2.0))
        np.testing.assert_allclose(op(2.0, p), op(2.0, x))

    @pytest.mark.parametrize("op", INT_OPS, ids=lambda op: op.__name__)
    def test_integer_operators(self, op):
        x = jnp.array([1, 2, 7])
        p = nnx.Variable(x)
        np.testing.assert_array_equal(op(p, 1), op(x, 1))
        np.testing.assert_array_equal(op(1, p), op(1, x))

    def test_matmul(self):
        a = jnp.arange(6.0).reshape(2, 3)
        b = jnp.ones((3, 2))
        np.testing.assert_allclose(nnx.Param(a) @ b, a @ b)
        np.testing.assert_allclose(b.T @ nnx.Param(a).T, b.T @ a.T)
        np.testing.assert_allclose(a @ nnx.Param(b), a @ b)

    def test_divmod(self):
        q, r = divmod(nnx.Variable(jnp.array(7)), 2)
        assert (int(q), int(r)) == (3, 1)
        q, r = divmod(7, nnx.Variable(jnp.array(2)))
        assert (int(q), int(r)) == (3, 1)

    def test_comparisons(self):
        p = nnx.Param(jnp.array([1.0, 2.0, 3.0]))
        np.testing.assert_array_equal(p < 2, [True, False, False])
        np.testing.assert_array_equal(p <= 2, [True, True, False])
        np.testing.assert_array_equal(p > 2, [False, False, True])
        np.testing.assert_array_equal(p >= 2, [False, True, True])
        np.testing.assert_array_equal(p == 2, [False, True, False])
        np.testing.assert_array_equal(p != 2, [True, False, True])
        np.testing.assert_array_equal(p == nnx.Param(jnp.array([1.0, 0.0, 3.0])),
                                      [True, False, True])

    def test_unary_operators(self):
        x = jnp.array([-1.0, 2.0])
        p = nnx.Param(x)
        np.testing.assert_array_equal(-p, -x)
        np.testing.assert_array_equal(+p, x)
        np.testing.assert_array_equal(abs(p), abs(x))
        np.testing.assert_array_equal(~nnx.Variable(jnp.array([0, 1])), ~jnp.array([0, 1]))

    def test_operator_results_are_plain_arrays(self):
        p = nnx.Param(jnp.ones(2))
        assert not isinstance(p + 1, nnx.Variable)
        assert not isinstance(-p, nnx.Variable)

    def test_hash_is_identity_and_eq_elementwise(self):
        p = nnx.Param(jnp.ones(2))
        q = nnx.Param(jnp.ones(2))
        assert hash(p) != hash(q) or p is q
        assert len({p, q}) == 2
        assert bool((p == q).all())

    def test_variables_under_jit(self):
        p = nnx.Param(jnp.arange(3.0), note="x")
        out = jax.jit(lambda v: v * 2)(p)
        np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
        out = jax.jit(lambda x: x + p)(jnp.ones(3))  # closed over: a constant
        np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------- in-place ops
INPLACE = [
    ("__iadd__", operator.iadd, operator.add), ("__isub__", operator.isub, operator.sub),
    ("__imul__", operator.imul, operator.mul),
    ("__itruediv__", operator.itruediv, operator.truediv),
    ("__ifloordiv__", operator.ifloordiv, operator.floordiv),
    ("__imod__", operator.imod, operator.mod), ("__ipow__", operator.ipow, operator.pow),
]


class TestInPlace:
    @pytest.mark.parametrize("name,iop,op", INPLACE, ids=[n for n, _, _ in INPLACE])
    def test_inplace_keeps_box_type_and_metadata(self, name, iop, op):
        x = jnp.array([1.0, 2.0, 4.0])
        p = nnx.Param(x, note="keep")
        box = p
        p = iop(p, 2.0)
        assert p is box
        assert type(p) is nnx.Param and p.note == "keep"
        np.testing.assert_allclose(p[...], op(x, 2.0))

    def test_augmented_assignment_statements(self):
        p = nnx.BatchStat(jnp.zeros(2))
        box = p
        p += 1
        p *= 3
        p -= jnp.array([1.0, 2.0])
        assert p is box
        np.testing.assert_array_equal(p[...], [2.0, 1.0])

    def test_inplace_integer_ops(self):
        v = nnx.Variable(jnp.array([6, 3]))
        v &= 2
        np.testing.assert_array_equal(v[...], [2, 2])
        v |= 1
        v ^= 2
        v <<= 1
        v >>= 1
        np.testing.assert_array_equal(v[...], [1, 1])

    def test_inplace_matmul(self):
        v = nnx.Variable(jnp.eye(2))
        v @= jnp.array([[1.0, 2.0], [3.0, 4.0]])
        np.testing.assert_array_equal(v[...], [[1.0, 2.0], [3.0, 4.0]])

    def test_value_plus_equals(self):
        p = nnx.Param(jnp.ones(2))
        p.value += 1
        p[...] += 1
        np.testing.assert_array_equal(p[...], [3.0, 3.0])

    def test_inplace_in_module_is_not_structural(self):
        class M(nnx.Module):
            def __init__(self):
                self.count = nnx.Variable(jnp.array(0))

        m = M()
        g = nnx.graphdef(m)
        m.count += 1
        assert nnx.graphdef(m) is g
        assert int(m.count[...]) == 1


# -------------------------------------------------------------------------- pytrees
class TestPytree:
    def test_leaves(self):
        x = jnp.ones(3)
        assert jax.tree.leaves(nnx.Param(x, a=1)) == [x]

    def test_tree_map_keeps_type_and_metadata(self):
        p = nnx.Param(jnp.ones(2), out_sharding=("embed",), note={"k": [1, 2]})
        q = jax.tree.map(lambda x: x * 3, p)
        assert type(q) is nnx.Param and q is not p
        assert q.get_metadata(exclude_required=True) == {"out_sharding": ("embed",),
                                                         "note": {"k": [1, 2]}}
        np.testing.assert_array_equal(q[...], [3.0, 3.0])
        np.testing.assert_array_equal(p[...], [1.0, 1.0])

    def test_custom_subclass_is_pytree(self):
        class MyStat(nnx.BatchStat):
            pass

        q = jax.tree.map(lambda x: -x, MyStat(jnp.ones(1), a=1))
        assert type(q) is MyStat and q.a == 1

    def test_key_path(self):
        ((path, leaf),), _ = jax.tree_util.tree_flatten_with_path(nnx.Param(1.0))
        assert path == (jax.tree_util.GetAttrKey("value"),)
        assert leaf == 1.0

    def test_treedef_depends_on_type_and_metadata(self):
        def treedef(v):
            return jax.tree.structure(v)

        assert treedef(nnx.Param(1.0, a=1)) == treedef(nnx.Param(2.0, a=1))
        assert treedef(nnx.Param(1.0, a=1)) != treedef(nnx.Param(1.0, a=2))
        assert treedef(nnx.Param(1.0)) != treedef(nnx.BatchStat(1.0))

    def test_metadata_order_does_not_matter(self):
        a = jax.tree.structure(nnx.Param(1.0, x=1, y=2))
        b = jax.tree.structure(nnx.Param(1.0, y=2, x=1))
        assert a == b and hash(a) == hash(b)

    def test_unhashable_metadata_is_fine(self):
        p = nnx.Param(1.0, rules=[("a", "b")], extra={"k": [1]})
        treedef = jax.tree.structure(p)
        hash(treedef)
        restored = jax.tree.unflatten(treedef, [5.0])
        assert restored.rules == [("a", "b")] and restored.value == 5.0

    def test_grad_through_variable(self):
        p = nnx.Param(jnp.array([1.0, 2.0]), note="w")
        g = jax.grad(lambda v: (v[...] ** 2).sum())(p)
        assert type(g) is nnx.Param and g.note == "w"
        np.testing.assert_allclose(g[...], [2.0, 4.0])

    def test_nested_in_containers(self):
        tree = {"w": nnx.Param(jnp.ones(2)), "b": [nnx.BatchStat(jnp.zeros(1))]}
        out = jax.tree.map(lambda x: x + 1, tree)
        assert type(out["w"]) is nnx.Param and type(out["b"][0]) is nnx.BatchStat
        assert float(out["b"][0][0]) == 1.0

    def test_jit_returns_variable(self):
        p = nnx.Param(jnp.ones(2), note="n")
        out = jax.jit(lambda v: jax.tree.map(lambda x: x + 1, v))(p)
        assert type(out) is nnx.Param and out.note == "n"


# ------------------------------------------------------------------- copy and pickle
class TestCopyPickle:
    def test_deepcopy(self):
        p = nnx.Param(jnp.ones(2), meta=[1, 2])
        q = copy.deepcopy(p)
        assert type(q) is nnx.Param and q is not p
        assert q.meta == [1, 2] and q.meta is not p.meta
        np.testing.assert_array_equal(q[...], p[...])

    def test_copy(self):
        p = nnx.Param(jnp.ones(2), meta=1)
        q = copy.copy(p)
        assert q is not p and q.meta == 1

    def test_pickle(self):
        p = nnx.Cache(jnp.arange(3), note="c")
        q = pickle.loads(pickle.dumps(p))
        assert type(q) is nnx.Cache and q.note == "c"
        np.testing.assert_array_equal(q[...], [0, 1, 2])
        q[...] = jnp.zeros(3, jnp.int32)  # usable after unpickling
        np.testing.assert_array_equal(p[...], [0, 1, 2])

    def test_deepcopy_preserves_shared_variable(self):
        p = nnx.Param(1.0)
        a, b = copy.deepcopy([p, p])
        assert a is b and a is not p


class TestRepr:
    def test_repr_shows_type_value_and_metadata(self):
        text = repr(nnx.Param(jnp.zeros(2), out_sharding=("embed",)))
        assert text.startswith("Param(")
        assert "value=" in text and "out_sharding=('embed',)" in text

    def test_large_values_are_summarised(self):
        text = repr(nnx.Param(jnp.zeros((10, 10))))
        assert "shape=(10, 10)" in text and "float32" in text


# ------------------------------------------------------------------ collection names
class TestRegistry:
    @pytest.mark.parametrize("typ,name", [
        (nnx.Param, "params"), (nnx.BatchStat, "batch_stats"), (nnx.Cache, "cache"),
        (nnx.Intermediate, "intermediates"), (nnx.Perturbation, "perturbations"),
    ])
    def test_builtin_names(self, typ, name):
        assert nnx.variable_name_from_type(typ) == name
        assert nnx.variable_type_from_name(name) is typ

    def test_kinds_are_variables(self):
        for typ in (nnx.Param, nnx.BatchStat, nnx.Cache, nnx.Intermediate,
                    nnx.Perturbation):
            assert issubclass(typ, nnx.Variable)

    def test_subclass_registered_under_class_name(self):
        name = unique("Kind")
        cls = type(name, (nnx.Variable,), {})
        assert nnx.variable_name_from_type(cls) == name
        assert nnx.variable_type_from_name(name) is cls

    def test_subclass_of_param_is_still_a_param(self):
        cls = type(unique("SpecialParam"), (nnx.Param,), {})
        assert isinstance(cls(1.0), nnx.Param)

    def test_register_variable_name_direct(self):
        name = unique("stats")
        cls = type(unique("Stat"), (nnx.Variable,), {})
        assert nnx.register_variable_name(name, cls) is cls
        assert nnx.variable_name_from_type(cls) == name
        assert nnx.variable_type_from_name(name) is cls

    def test_register_variable_name_decorator(self):
        name = unique("counters")

        @nnx.register_variable_name(name)
        class Counter(nnx.Variable):
            pass

        assert nnx.variable_name_from_type(Counter) == name
        assert nnx.variable_type_from_name(name) is Counter

    def test_renaming_frees_old_name(self):
        cls = type(unique("Renamed"), (nnx.Variable,), {})
        old = cls.__name__
        new = unique("renamed")
        nnx.register_variable_name(new, cls)
        assert nnx.variable_name_from_type(cls) == new
        with pytest.raises(ValueError):
            nnx.variable_type_from_name(old)

    def test_conflict_requires_overwrite(self):
        name = unique("taken")
        first = nnx.register_variable_name(name, type(unique("A"), (nnx.Variable,), {}))
        second = type(unique("B"), (nnx.Variable,), {})
        with pytest.raises(ValueError, match="already registered.*overwrite=True"):
            nnx.register_variable_name(name, second)
        assert nnx.variable_type_from_name(name) is first
        nnx.register_variable_name(name, second, overwrite=True)
        assert nnx.variable_type_from_name(name) is second

    def test_register_rejects_non_variable(self):
        with pytest.raises(TypeError, match="Variable subclass"):
            nnx.register_variable_name(unique("x"), int)

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="allow_register=True"):
            nnx.variable_type_from_name(unique("nope"))

    def test_allow_register_creates_subclass(self):
        name = unique("losses")
        cls = nnx.variable_type_from_name(name, allow_register=True)
        assert issubclass(cls, nnx.Variable) and cls.__name__ == name
        assert nnx.variable_type_from_name(name) is cls
        assert nnx.variable_name_from_type(cls) == name
        sub = nnx.variable_type_from_name(unique("p"), base=nnx.Param, allow_register=True)
        assert issubclass(sub, nnx.Param)

    def test_redefined_class_takes_over_its_auto_name(self):
        # A re-run notebook cell (or two test files) defines a class of the same name
        # twice: both keep the class name, and the name resolves to the newest.
        name = unique("Dup")
        first = type(name, (nnx.Variable,), {})
        second = type(name, (nnx.Variable,), {})
        assert nnx.variable_name_from_type(first) == name
        assert nnx.variable_name_from_type(second) == name
        assert nnx.variable_type_from_name(name) is second

    def test_explicit_name_is_not_taken_by_a_class_of_that_name(self):
        name = unique("explicit")
        owner = nnx.register_variable_name(name, type("Owner", (nnx.Variable,), {}))
        newcomer = type(name, (nnx.Variable,), {})
        assert nnx.variable_type_from_name(name) is owner
        assert nnx.variable_name_from_type(newcomer) == name  # its own label for display
        with pytest.raises(ValueError, match="already registered"):
            nnx.register_variable_name(name, newcomer)

    def test_base_variable_has_no_collection(self):
        with pytest.raises(ValueError, match="no collection name"):
            nnx.variable_name_from_type(nnx.Variable)

    def test_registered_name_works_as_filter(self):
        name = unique("aux")

        @nnx.register_variable_name(name)
        class Aux(nnx.Variable):
            pass

        state = nnx.State({"a": Aux(1.0), "b": nnx.Param(2.0)})
        assert list(state.filter(name)) == ["a"]


def test_with_partitioning_takes_a_mesh_positionally():
    mesh = jax.make_mesh((1,), ("model",))
    init = nnx.with_partitioning(nnx.initializers.ones, (None, "model"), mesh)
    p = nnx.Param(init(jax.random.key(0), (2, 3)))
    assert p.out_sharding == (None, "model") and p.get_metadata()["mesh"] is mesh
