"""Smoke tests of examples/char_lm.py: it trains a few steps and samples, its decode
cache reproduces the full forward pass, and --help documents every flag."""

import importlib.util
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "char_lm.py"
TINY = ["--steps", "3", "--layers", "2", "--dim", "16", "--heads", "2", "--context", "16",
        "--batch", "4", "--max-chars", "20000", "--sample-chars", "8", "--log-every", "1"]


@pytest.fixture(scope="module")
def char_lm():
    spec = importlib.util.spec_from_file_location("char_lm_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trains_a_few_steps_and_samples_with_the_cache(char_lm, capsys):
    result = char_lm.main(TINY)
    out = capsys.readouterr().out
    assert np.isfinite(result["loss"]) and np.isfinite(result["held_out_loss"])
    # Untrained, the loss is about log(vocabulary size); it cannot be far above.
    vocab = int(re.search(r"(\d+) symbols", out).group(1))
    assert result["loss"] < np.log(vocab) + 1.0
    assert re.findall(r"step +(\d+)  train loss", out) == ["1", "2", "3"]
    sample = result["sample"]
    assert sample.startswith("def ") and len(sample) == 4 + 8
    assert sample in out


def test_the_text_is_the_standard_library_read_deterministically(char_lm):
    text = char_lm.load_stdlib_text(5000)
    assert len(text) == 5000 and text == char_lm.load_stdlib_text(5000)
    vocab = char_lm.Vocabulary(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.decode(vocab.encode("\u00e9")) == char_lm.UNKNOWN


def test_decoding_with_the_cache_gives_the_full_forward_logits(char_lm):
    # The sizes of TINY, so that most shapes (and their compiled kernels) are shared.
    model = char_lm.CharLM(11, dim=16, heads=2, layers=2, context=16, rngs=nnx.Rngs(0))
    assert model.blocks.attn.query.kernel.shape == (2, 16, 2, 8)  # stacked over layers
    tokens = jnp.array([[1, 4, 2, 9, 0, 3], [5, 5, 7, 1, 10, 2]])
    full = model(tokens)
    model.init_cache(batch_size=2)
    assert model.blocks.attn.cached_key.shape == (2, 2, 16, 2, 8)  # [layer, batch, ...]
    step = nnx.jit(lambda m, t, p: m(t, p, decode=True))
    decoded = [step(model, tokens[:, i:i + 1], jnp.full((2, 1), i)) for i in range(6)]
    np.testing.assert_allclose(jnp.concatenate(decoded, axis=1), full, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.blocks.attn.cache_index[...], [6, 6])


def test_help_documents_every_flag(char_lm, capsys):
    with pytest.raises(SystemExit):
        char_lm.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    actions = [a for a in char_lm.build_parser()._actions if a.dest != "help"]
    assert len(actions) >= 10
    for action in actions:
        assert action.help and len(action.help) > 10, action.option_strings
        assert action.option_strings[0] in help_text and action.help in help_text


def test_lm_step_benchmark_runs_and_its_numerics_check_passes(capsys):
    spec = importlib.util.spec_from_file_location(
        "lm_step_benchmark", EXAMPLE.parents[1] / "benchmarks" / "lm_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--layers", "1", "--dim", "16", "--heads", "2",
                       "--context", "16", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "numerics check passed" in out and "target(s) missed" in out
