"""examples/plain_jax_training.py (plain jax.jit/jax.grad on ref variables) trains the
digits CNN to the same numbers as examples/train_digits.py (nnx.jit/nnx.grad)."""

import re

from tests.test_scripts import run_script


def test_plain_jax_training_matches_train_digits(tmp_path):
    plain = run_script("examples/plain_jax_training.py", "--epochs", "1")
    nnx_out = run_script("examples/train_digits.py", "--epochs", "1", "--no-progress",
                         "--out-dir", str(tmp_path))
    accuracy = float(re.search(r"test accuracy ([\d.]+)", plain).group(1))
    assert accuracy > 0.6, plain
    assert accuracy == float(re.search(r"test accuracy ([\d.]+)", nnx_out).group(1))
    epoch = re.search(r"^epoch +1 .*$", plain, re.M).group(0)
    assert epoch in nnx_out  # the same train and test losses and accuracies
    assert re.search(r"for 44 steps", plain)
