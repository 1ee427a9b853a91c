"""LoRA, LoRALinear, LoRAParam. flax.linen has no LoRA layer: the oracles are linen.Dense
plus the low-rank product in NumPy (same parameters) and flax.nnx (same seed)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from tests.nn.layer_oracles import (
    assert_same_state_as_flax,
    count_eqns,
    layer_eqns,
    normal,
    randomize,
)

FAST = dict(a_initializer=jax.nn.initializers.zeros)


def test_lora_linear_matches_linen_dense_plus_low_rank_product():
    layer = nnx.LoRALinear(5, 3, lora_rank=2, rngs=nnx.Rngs(0), **FAST,
                           kernel_init=jax.nn.initializers.zeros)
    randomize(layer)
    x = normal((4, 5), seed=1)
    dense = linen.Dense(3).apply({"params": {"kernel": layer.kernel[...],
                                             "bias": layer.bias[...]}}, x)
    low_rank = np.asarray(x) @ np.asarray(layer.lora.lora_a[...]) @ np.asarray(
        layer.lora.lora_b[...])
    np.testing.assert_allclose(layer(x), dense + low_rank, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_base", [False, True])
def test_lora_output(with_base):
    base = nnx.Linear(4, 3, rngs=nnx.Rngs(0), kernel_init=jax.nn.initializers.zeros)
    layer = nnx.LoRA(4, 2, 3, base_module=base if with_base else None, rngs=nnx.Rngs(1),
                     **FAST)
    randomize(layer)
    x = normal((2, 4), seed=2)
    expected = np.asarray(x) @ np.asarray(layer.lora_a[...]) @ np.asarray(layer.lora_b[...])
    if with_base:
        expected = expected + np.asarray(base(x))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_passes_keyword_arguments_to_the_base_module():
    seen = {}

    class Base(nnx.Module):
        def __call__(self, x, *, scale):
            seen["scale"] = scale
            return x[..., :2] * scale

    layer = nnx.LoRA(3, 1, 2, base_module=Base(), rngs=nnx.Rngs(0))
    out = layer(jnp.ones((1, 3)), scale=3.0)
    assert seen == {"scale": 3.0}
    np.testing.assert_allclose(out, jnp.full((1, 2), 3.0))  # lora_b starts at zero


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(lora_param_dtype=jnp.bfloat16, param_dtype=jnp.float16),
     dict(b_initializer=jax.nn.initializers.normal(1.0), use_bias=False),
     dict(lora_param_type=nnx.Param)],
)
def test_lora_linear_same_state_and_output_as_flax_nnx(kwargs):
    flax_kwargs = dict(kwargs)
    if kwargs.get("lora_param_type") is nnx.Param:
        flax_kwargs["lora_param_type"] = flax_nnx.Param
    ours = nnx.LoRALinear(6, 4, lora_rank=3, rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.LoRALinear(6, 4, lora_rank=3, rngs=flax_nnx.Rngs(0), **flax_kwargs)
    assert_same_state_as_flax(ours, theirs)
    x = normal((2, 6))
    np.testing.assert_allclose(np.asarray(ours(x), np.float32),
                               np.asarray(theirs(x), np.float32), rtol=1e-6, atol=1e-6)


def test_lora_same_state_as_flax_nnx_with_base():
    ours = nnx.LoRA(6, 2, 4, base_module=nnx.Linear(6, 4, rngs=nnx.Rngs(5)),
                    b_initializer=jax.nn.initializers.normal(), rngs=nnx.Rngs(0))
    theirs = flax_nnx.LoRA(6, 2, 4, base_module=flax_nnx.Linear(6, 4, rngs=flax_nnx.Rngs(5)),
                           b_initializer=jax.nn.initializers.normal(), rngs=flax_nnx.Rngs(0))
    assert_same_state_as_flax(ours, theirs)
    x = normal((3, 6))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


def test_lora_param_is_a_param_and_filters_apart():
    layer = nnx.LoRALinear(3, 2, lora_rank=1, rngs=nnx.Rngs(0), **FAST)
    assert issubclass(nnx.LoRAParam, nnx.Param)
    assert type(layer.lora.lora_a) is nnx.LoRAParam
    lora_paths = [p for p, _ in nnx.state(layer, nnx.LoRAParam).flat_state()]
    assert sorted(lora_paths) == [("lora", "lora_a"), ("lora", "lora_b")]
    assert len(nnx.state(layer, nnx.Param).flat_state()) == 4  # LoRAParam is a Param
    # Training only the adapter: gradients with respect to LoRAParam leave the rest.
    grads = nnx.grad(lambda m: m(jnp.ones((1, 3))).sum(),
                     argnums=nnx.DiffState(0, nnx.LoRAParam))(layer)
    assert sorted(p for p, _ in grads.flat_state()) == lora_paths


def test_lora_linear_dtypes():
    layer = nnx.LoRALinear(3, 2, lora_rank=1, dtype=jnp.bfloat16, lora_dtype=jnp.float16,
                           lora_param_dtype=jnp.float16, rngs=nnx.Rngs(0), **FAST)
    assert layer.lora.lora_a.dtype == jnp.float16 and layer.kernel.dtype == jnp.float32
    # bf16 (Linear) + f16 (adapter) promote to f32, as in flax.nnx.
    assert layer(jnp.ones((1, 3))).dtype == jnp.float32


def test_lora_jaxpr_is_the_plain_computation():
    # The adapter costs two matmuls and an add over Linear, nothing more.
    layer = nnx.LoRALinear(4, 3, lora_rank=2, rngs=nnx.Rngs(0), **FAST)
    x = jnp.ones((2, 4))
    by_hand = count_eqns(jax.make_jaxpr(lambda k, b, a, c, x: x @ k + b + x @ a @ c)(
        layer.kernel[...], layer.bias[...], layer.lora.lora_a[...], layer.lora.lora_b[...],
        x).jaxpr)
    assert layer_eqns(layer, x) <= by_hand


def test_lora_wrong_input_size_and_bad_base():
    layer = nnx.LoRA(3, 2, 4, rngs=nnx.Rngs(0), **FAST)
    with pytest.raises(nnx.errors.ShapeMismatchError,
                       match=r"LoRA\(3, 2, 4\): expected inputs whose last axis has 3 entries"
                             r".*shape \(2, 5\).*Hint"):
        layer(jnp.ones((2, 5)))
    lora_linear = nnx.LoRALinear(3, 2, lora_rank=1, rngs=nnx.Rngs(0), **FAST)
    with pytest.raises(ValueError, match=r"LoRALinear\(3, 2\).*3 entries.*shape \(4,\)"):
        lora_linear(jnp.ones(4))
    with pytest.raises(ValueError, match=r"callable base_module.*got a int.*Hint"):
        nnx.LoRA(3, 2, 4, base_module=3, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["LoRAParam", "Param"])
def test_lora_param_type_decides_the_split_as_flax(kind):
    for lib in (nnx, flax_nnx):
        model = lib.LoRA(3, 4, 2, lora_param_type=getattr(lib, kind), rngs=lib.Rngs(0))
        _, first, second = lib.split(model, getattr(lib, kind),
                                     lib.Param if kind == "LoRAParam" else lib.LoRAParam)
        assert sorted(first) == ["lora_a", "lora_b"] and second == {}
