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
    >>> reason_for("tests/nnx/graph_utils_test.py", "TestGraphUtils::test_flatten") is None
    True
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

FLAX_ERROR_CLASS = (
    "catches flax.errors.TraceContextError, flax's own class: nnxlib raises "
    "nnxlib.errors.TraceContextError (same name, flax's message phrase), which cannot "
    "subclass flax's without nnxlib importing flax")
UPDATE_SHAPES = (
    "stores vmap-stacked params of shape (4, 3) into a Linear(2, 3) with nnx.update; "
    "nnxlib's update refuses a state whose shapes differ from the model's "
    "(StateMismatchError naming the path), flax.nnx writes them in")

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
    "tests/nnx/graph_utils_test.py": {},
    "tests/nnx/helpers_test.py": {},
    "tests/nnx/integration_test.py": {},
    "tests/nnx/metrics_test.py": {},
    "tests/nnx/module_test.py": {},
    "tests/nnx/mutable_array_test.py": {},
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
    "tests/nnx/transforms_test.py": {},
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
