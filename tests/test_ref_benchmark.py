"""benchmarks/ref_train_step.py runs, and its columns compute the same numbers."""

from tests.test_scripts import run_script


def test_ref_benchmark_runs():
    out = run_script("benchmarks/ref_train_step.py", "--quick", "--depths", "2")
    assert "numerics check passed" in out
    assert "target(s) missed" in out and "eager forward" in out
