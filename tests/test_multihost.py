"""Two processes, one global mesh: the same losses as one process with 8 devices.

``examples/sharded_training.py --distributed`` runs in two processes on this machine
(``jax.distributed.initialize`` with a coordinator on 127.0.0.1, 4 CPU devices each,
CPU collectives over gloo). They build one (data=2, model=4) mesh over the 8 devices,
create the tiny transformer sharded under ``nnx.jit``, and train a few steps on a batch
split over 'data' with weights split over 'model'. The test process itself (one
process, 8 devices) trains the same model on the same mesh shape; all must get the same
losses (float tolerance: the collectives differ).
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "sharded_training.py"
STEPS = 3
LAYERS = 1


def load_example():
    spec = importlib.util.spec_from_file_location("sharded_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(devices: int, nproc: int, index: int, port: int) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--steps", str(STEPS), "--layers", str(LAYERS),
         "--distributed", f"127.0.0.1:{port},{nproc},{index}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses_of(proc: subprocess.Popen) -> list[float]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    (line,) = re.findall(r"^losses (.*)$", out, re.M)
    return [float(x) for x in line.split()]


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_two_processes_train_like_one():
    start = time.perf_counter()
    port = free_port()
    procs = [launch(4, 2, i, port) for i in range(2)]
    try:
        example = load_example()
        example.LAYERS[0] = LAYERS
        single, _ = example.train(example.make_mesh(2, 4), STEPS)
        first, second = [losses_of(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    print(f"two-process training took {time.perf_counter() - start:.1f} s")
    assert len(first) == STEPS
    assert first == second  # every process sees the same global loss
    np.testing.assert_allclose(first, single, rtol=1e-5, atol=1e-6)
    assert first[-1] < first[0]
