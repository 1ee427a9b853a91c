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

# One table per flax test file ("Class::test" or "Class::test*" -> reason).
SUITE_FAILURES: dict[str, dict[str, str]] = {
    "tests/nnx/bridge/wrappers_test.py": {},
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
    "tests/nnx/rngs_test.py": {},
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
