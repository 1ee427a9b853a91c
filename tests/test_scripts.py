"""The README's quickstart, the main job and the benchmarks keep running.

These are smoke tests: they check that the scripts finish and that what they compute is
right (training reaches a good accuracy; the benchmark's numerics check against raw JAX
passes). Timings and targets are printed by the scripts and never asserted here.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_readme_quickstart_runs():
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"## Quickstart.*?```python\n(.*?)```", readme, re.S)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert float(namespace["loss"]) > 0.0
    assert namespace["model"].out.kernel.shape == (32, 1)


def test_main_job_trains_to_high_accuracy():
    out = run_script("examples/train_mlp.py", "--steps", "400")
    accuracy = float(re.search(r"final test accuracy ([\d.]+)", out).group(1))
    assert accuracy > 0.9, out


@pytest.mark.parametrize("script", ["graph_overhead.py", "train_step_overhead.py"])
def test_benchmark_runs(script):
    out = run_script(f"benchmarks/{script}", "--quick", "--depths", "2")
    assert "target(s) missed" in out
    if script == "train_step_overhead.py":
        assert "numerics check passed" in out
