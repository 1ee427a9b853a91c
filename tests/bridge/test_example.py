"""Smoke test: examples/linen_interop.py runs and both of its models learn."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_linen_interop_example_trains():
    # PYTHONPATH: the checkout's nnxlib and bridge, not an installed copy.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "examples/linen_interop.py", "--steps", "60"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "LinearToLinen_0" in result.stdout  # the nnxlib head is named like a Linen layer
    accuracy = float(re.search(r"final test accuracy ([\d.]+)", result.stdout).group(1))
    assert accuracy > 0.8, result.stdout
