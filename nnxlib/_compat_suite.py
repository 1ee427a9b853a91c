"""flax.nnx 0.12.8's own test suite on nnxlib: the tests that still fail, and why.

``../shared/tools/flax_suite.py nnxlib`` runs google/flax's ``tests/nnx`` with the
imports rewritten to nnxlib. Every test that fails there is listed here with its
reason, one table per test file (keys are ``Class::test``, with a trailing ``*`` for
a parametrized family), and ``docs/compatibility.md`` renders these tables.
``python tools/flax_suite_report.py DIR`` compares a run's junit files with them.

The reasons are the same kinds as on the rest of the compatibility page: a flax
internal that nnxlib keeps private (tests that reach into ``graphlib.RefMap``,
``GraphDef.nodes``, ``_pytree__state``), or a deliberate difference.

Example:
    >>> from nnxlib._compat_suite import reason_for
    >>> reason_for("tests/nnx/graph_utils_test.py", "TestGraphUtils::test_unflatten") is None
    True
    >>> reason_for("tests/nnx/graph_utils_test.py", "TestGraphUtils::test_flatten")[:30]
    "reads flax's graph internals ("
"""

from __future__ import annotations

import fnmatch

GRAPH_INTERNALS = (
    "reads flax's graph internals (GraphDef.nodes, graphlib.RefMap, TreeNodeDef, ...); "
    "nnxlib's GraphDef has its own private layout")
PYTREE_INTERNALS = ("reads flax's per-object internals (_pytree__state, ...), which nnxlib's "
                    "Object does not have")
EXTRACT_INTERNALS = ("reads flax's transform internals (extract.TreeState, "
                     "NodeStates.from_prefixes, ...)")

PLAIN_LISTS_TRACKED = (
    "deliberate: a plain list or dict assigned to a module becomes an nnx.List/nnx.Dict "
    "(tracked graph nodes), so arrays, variables or modules put in it are state; flax "
    "keeps such a list static and rejects data in it")
TYPE_DECIDES_DATA = (
    "deliberate: whether an attribute is data or static follows the value assigned "
    "(arrays, variables, nodes are data; nnx.data makes a scalar an array); flax keeps a "
    "per-attribute status that later assignments inherit")
GRAPHDEF_NODES = GRAPH_INTERNALS + "; the behaviour itself is covered by nnxlib's tests"
NO_SILENT_DROP = (
    "deliberate: a function under graph_updates=False (or graph=False) that changes its "
    "input's structure (m.z += 1 on a static int, swapping submodules) raises "
    "GraphStructureError naming the path; flax drops the change silently")
FLAX_ERROR_CLASS = (
    "catches flax.errors.TraceContextError, flax's own class: nnxlib raises "
    "nnxlib.errors.TraceContextError (same name, flax's message phrase), which cannot "
    "subclass flax's without nnxlib importing flax")
UPDATE_SHAPES = (
    "stores vmap-stacked params of shape (4, 3) into a Linear(2, 3) with nnx.update; "
    "nnxlib's update refuses a state whose shapes differ from the model's "
    "(StateMismatchError naming the path), flax.nnx writes them in")

HIJAX_ONE_CLASS = (
    "deliberate: asserts type(v) is HijaxVariable; nnxlib keeps a variable's own kind "
    "(type(v) is Param) in every mode, and hijax=True is the ref-backed mode of it "
    "(isinstance(v, nnx.variablelib.HijaxVariable) is v.hijax)")
HIJAX_IS_REF = (
    "deliberate: hijax=True, ref=False expects a raw value that is not a jax.Ref; in "
    "nnxlib hijax=True is the ref-backed mode (the same as ref=True), so it is one")

# One table per flax test file ("Class::test" or "Class::test*" -> reason).
SUITE_FAILURES: dict[str, dict[str, str]] = {
    "tests/nnx/bridge/wrappers_test.py": {
        "TestCompatibility::test_linen_to_nnx_noncall_method": (
            "reads flax's internal attribute name to_nnx__rngs; nnxlib's ToNNX keeps its "
            "streams in .rngs (the ScopeParamNotFoundError part passes)"),
    },
    "tests/nnx/containers_test.py": {},
    "tests/nnx/ema_test.py": {},
    "tests/nnx/filters_test.py": {},
    "tests/nnx/graph_utils_test.py": {
        "TestGraphUtils::test_cached_unflatten*": GRAPH_INTERNALS,
        "TestGraphUtils::test_flatten": GRAPH_INTERNALS,
        "TestGraphUtils::test_flatten_no_paths": GRAPH_INTERNALS,
        "TestGraphUtils::test_pytree_flatten": GRAPH_INTERNALS,
        "TestGraphUtils::test_object_state_propagation": PYTREE_INTERNALS,
        "TestGraphUtils::test_simple_vmap": EXTRACT_INTERNALS,
        "TestGraphUtils::test_split_variable*": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_filter_variable*": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_update_variable*": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_update_filter_variable*": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_merge_context": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_merge_context_nested": GRAPHDEF_NODES,
        "TestGraphUtils::test_split_merge_update_context": GRAPHDEF_NODES,
        "TestGraphUtils::test_to_tree_simple": GRAPHDEF_NODES,
        "TestGraphUtils::test_to_tree_update_context": GRAPHDEF_NODES,
        "TestTreeFlatten::test_tree_flatten_no_paths": GRAPHDEF_NODES,
        "TestTreeFlatten::test_tree_flatten_unflatten": GRAPHDEF_NODES,
        "TestTreeFlatten::test_tree_flatten_unflatten_ordering": GRAPHDEF_NODES,
        "TestTreeFlatten::test_tree_split_merge_module": GRAPHDEF_NODES,
        "TestTreeFlatten::test_prefix_with_jax_vmap": (
            "deliberate (" + TYPE_DECIDES_DATA[len("deliberate: "):] + "): nnx.prefix's "
            "tree-mode copy holds plain ints where the variables were, which are static "
            "in nnxlib, so it is not a JAX prefix of the module for a raw jax.vmap "
            "(nnx.vmap takes it)"),
        "TestGraphUtils::test_data_after_init": PLAIN_LISTS_TRACKED,
        "TestGraphUtils::test_graph_flatten_with_data_wrapper": TYPE_DECIDES_DATA,
        "TestTreeFlatten::test_tree_flatten_nested_mixed": (
            "deliberate: tree mode walks a graph as graph mode does, so a Python scalar in "
            "a tuple or list stays static (it is not traced by transforms); flax's tree "
            "mode makes every JAX leaf state"),
        "TestTreeFlatten::test_tree_shared_refs_raises": (
            "a bare jax.Ref as a graph leaf (outside a Variable) is held as a static "
            "value, so tree mode sees no shared leaf; nnxlib's refs live in ref=True "
            "variables (docs/plain_jax.md), whose sharing tree mode does report"),
    },
    "tests/nnx/helpers_test.py": {},
    "tests/nnx/integration_test.py": {},
    "tests/nnx/metrics_test.py": {},
    "tests/nnx/module_test.py": {
        "PytreeTest::test_assing_pytree_with_data": PLAIN_LISTS_TRACKED,
        "PytreeTest::test_consistent_attrs": TYPE_DECIDES_DATA,
        "PytreeTest::test_consistent_attrs_dataclass_annotations": TYPE_DECIDES_DATA,
        "PytreeTest::test_explicit_dont_change": TYPE_DECIDES_DATA,
        "TestModule::test_has_module_state": PYTREE_INTERNALS,
        "TestModule::test_sow_pop": PYTREE_INTERNALS,
        "TestModule::test_trace_level": FLAX_ERROR_CLASS,
        "TestModuleDataclass::test_module_in_static_list": PLAIN_LISTS_TRACKED,
        "TestModuleDataclass::test_variable_in_static_list": PLAIN_LISTS_TRACKED,
        "TestModuleDef::test_children_modules_iterator*": (
            "deliberate: a plain list of modules becomes an nnx.List graph node, so "
            "iter_children yields it (flax yields only graph-node attributes, and a plain "
            "list is not one there)"),
        "TestModuleDef::test_derefed_mod_apply": GRAPHDEF_NODES,
    },
    "tests/nnx/mutable_array_test.py": {
        "TestVariableRefMode::test_mutable_array_split": GRAPH_INTERNALS,
        "TestVariableRefMode::test_mutable_array_split_freeze": GRAPH_INTERNALS,
        "TestVariableRefMode::test_mutable_array_split_merge_in_variable": GRAPH_INTERNALS,
        "TestVariableRefMode::test_mutable_array_split_merge_in_variable_shared_array": (
            GRAPH_INTERNALS),
        "TestVariableRefMode::test_update_context*": (
            "reads flax's update-context internals (graphlib.NoUpdate, ArrayRefOutput, "
            "SplitContext.flatten, to_tree's .states); nnxlib's contexts keep their "
            "records private"),
        "TestVariableRefMode::test_object_state": FLAX_ERROR_CLASS,
        "TestHijaxVariables::test_use_hijax": HIJAX_ONE_CLASS,
        "TestHijaxVariables::test_hijax_rngs": HIJAX_ONE_CLASS,
        "TestHijaxVariables::test_variable_properties1": HIJAX_IS_REF,
        "TestHijaxVariables::test_variable_copy_properties1": HIJAX_IS_REF,
        "TestHijaxVariables::test_variable_vars_as_properties1": HIJAX_IS_REF,
    },
    "tests/nnx/nn/attention_test.py": {},
    "tests/nnx/nn/conv_test.py": {},
    "tests/nnx/nn/embed_test.py": {},
    "tests/nnx/nn/linear_test.py": {},
    "tests/nnx/nn/lora_test.py": {},
    "tests/nnx/nn/normalization_test.py": {},
    "tests/nnx/nn/recurrent_test.py": {},
    "tests/nnx/nn/stochastic_test.py": {},
    "tests/nnx/optimizer_test.py": {},
    "tests/nnx/partitioning_test.py": {},
    "tests/nnx/rngs_test.py": {
        "TestRngs::test_rng_trace_level_constraints": FLAX_ERROR_CLASS,
        "TestRngs::test_lifting_rng_state": UPDATE_SHAPES,
    },
    "tests/nnx/spmd_test.py": {},
    "tests/nnx/state_test.py": {},
    "tests/nnx/summary_test.py": {},
    "tests/nnx/transforms_test.py": {
        "TestJIT::test_mutable_array_input_output": (
            "a bare jax.Ref (not held by a Variable) returned from nnx.jit: nnxlib hands "
            "refs to jax.jit as they are, and JAX refuses to return one (its ValueError "
            "names the output); flax maps it back to the input ref. Hold refs in "
            "Variables (ref=True), which nnx.jit updates in place"),
        "TestJIT::test_cache_args": (
            "deliberate: nnx.cached_partial binds the objects themselves (flax binds "
            "clones that share their Variables), so a later structural change of the "
            "bound module is seen; nnxlib's structure cache makes the clone unneeded"),
        "TestJIT::test_objects_in_pytree1": NO_SILENT_DROP,
        "TestCustomVJP::test_jax_example_with_remat_functional*": NO_SILENT_DROP,
        "TestCustomVJP::test_non_diff_args1": NO_SILENT_DROP,
        "TestCustomVJP::test_non_diff_args2": NO_SILENT_DROP,
        "TestCustomVJP::test_two_args_functional*": NO_SILENT_DROP,
        "TestMakeJaxpr::test_make_jaxpr_graph_updates_error": (
            "deliberate: nnx.make_jaxpr supports graph_updates=True (the jaxpr of the "
            "lifted function, structural changes included); flax raises ValueError"),
    },
    "tests/nnx/variable_test.py": {},
}


def reason_for(test_file: str, test_id: str) -> str | None:
    """Why the flax test ``test_id`` (``Class::test``) of ``test_file`` fails on
    nnxlib, or ``None`` when it is not listed (it is expected to pass).

    Example:
        >>> reason_for("tests/nnx/rngs_test.py", "TestRngs::test_call") is None
        True
    """
    for pattern, reason in SUITE_FAILURES.get(test_file, {}).items():
        if fnmatch.fnmatchcase(test_id, pattern):
            return reason
    return None
