"""Test configuration: force JAX onto the CPU with 8 virtual devices before it is imported.

The repository-root ``conftest.py`` does the same for doctests; this file keeps ``tests/``
correct on its own (for example when run with ``--confcutdir=tests``).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
