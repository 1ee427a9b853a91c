"""Pytest setup shared by every collected path (tests, doctests in nnxlib/, docs pages).

JAX reads these variables when it is first imported, so they are set here, before any
test module or doctest imports it: CPU only, with 8 virtual devices so that sharding
code can be exercised on one machine. Values already in the environment win.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# examples/ and benchmarks/ are scripts, not test modules: never import them for doctests,
# even when pytest is pointed at the repository root.
collect_ignore = ["examples", "benchmarks", "build", ".venv"]
