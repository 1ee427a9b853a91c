"""Conv and ConvTranspose against flax.linen (same parameters) and flax.nnx (same seed)."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as flax_nnx

import nnxlib as nnx
from tests.nn.layer_oracles import (
    FAST_INIT,
    assert_same_state_as_flax,
    layer_eqns,
    linen_eqns,
    normal,
    randomize,
)


def _params(layer) -> dict:
    params = {"kernel": layer.kernel[...]}
    if layer.bias is not None:
        params["bias"] = layer.bias[...]
    return {"params": params}


def _mask(shape, seed=7):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape) > 0.4, jnp.float32)


# (kernel_size, input spatial shape) pairs covering 1D, 2D, non-square.
SHAPES = [((3,), (7,)), ((3, 3), (6, 5)), ((2, 3), (5, 6))]


@pytest.mark.parametrize("kernel_size,spatial", SHAPES)
@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR", "REFLECT", 1, "pairs"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_matches_linen_padding_and_strides(kernel_size, spatial, padding, strides):
    if padding == "pairs":
        padding = [(1, 0)] + [(0, 2)] * (len(kernel_size) - 1)
    layer = nnx.Conv(3, 4, kernel_size, strides, padding=padding, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((2, *spatial, 3))
    ref = linen.Conv(4, kernel_size, strides, padding=padding).apply(_params(layer), x)
    out = layer(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(kernel_dilation=2),
        dict(input_dilation=2, padding=[(1, 1), (0, 1)]),
        dict(input_dilation=(2, 1), kernel_dilation=(1, 2), strides=(1, 2), padding=2),
        dict(feature_group_count=2),
        dict(feature_group_count=4, padding="CIRCULAR"),
        dict(use_bias=False, padding="VALID"),
        dict(mask="random"),
        dict(mask="random", feature_group_count=2, kernel_dilation=2, padding="REFLECT"),
    ],
)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_conv_matches_linen_options(options, batch):
    options = dict(options)
    kernel_shape = (3, 2, 4 // options.get("feature_group_count", 1), 8)
    if options.get("mask") == "random":
        options["mask"] = _mask(kernel_shape)
    layer = nnx.Conv(4, 8, (3, 2), rngs=nnx.Rngs(0), **options, **FAST_INIT)
    randomize(layer)
    x = normal((*batch, 6, 5, 4))
    ref = linen.Conv(8, (3, 2), **options).apply(_params(layer), x)
    out = layer(x)
    assert out.shape == ref.shape and out.shape[: len(batch)] == batch
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(kernel_dilation=2),
                                     dict(input_dilation=2),
                                     dict(strides=2, kernel_dilation=3)])
def test_conv_causal_matches_linen_and_is_causal(options):
    layer = nnx.Conv(2, 3, 3, padding="CAUSAL", rngs=nnx.Rngs(0), **options, **FAST_INIT)
    randomize(layer)
    x = normal((2, 9, 2))
    if "input_dilation" in options:
        # lax rejects string padding with input dilation (so linen's CAUSAL fails): the
        # oracle pads the undilated input on the left, then convolves without padding.
        left = 2 * options.get("kernel_dilation", 1)
        ref = linen.Conv(3, (3,), padding=[(0, 0)], **options).apply(
            _params(layer), jnp.pad(x, [(0, 0), (left, 0), (0, 0)]))
    else:
        ref = linen.Conv(3, (3,), padding="CAUSAL", **options).apply(_params(layer), x)
    out = layer(x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if not options:
        # Changing the input from position 5 on leaves outputs 0..4 unchanged.
        changed = layer(x.at[:, 5:].add(10.0))
        np.testing.assert_array_equal(changed[:, :5], out[:, :5])
        assert not np.allclose(changed[:, 5:], out[:, 5:])


@pytest.mark.parametrize(
    "dtype,param_dtype",
    [(None, jnp.float32), (jnp.bfloat16, jnp.float32), (None, jnp.bfloat16),
     (jnp.float32, jnp.bfloat16), (jnp.float16, jnp.float16)],
)
def test_conv_dtypes_match_linen(dtype, param_dtype):
    layer = nnx.Conv(3, 4, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), **FAST_INIT)
    assert layer.kernel.dtype == param_dtype and layer.bias.dtype == param_dtype
    randomize(layer)
    x = normal((2, 5, 5, 3))
    ref = linen.Conv(4, (3, 3), dtype=dtype, param_dtype=param_dtype).apply(_params(layer), x)
    out = layer(x)
    assert out.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=1e-2, atol=1e-2)


# One kernel shape for most cases: each new shape costs an initializer compilation.
@pytest.mark.parametrize(
    "args,kwargs",
    [((3, 4, (3, 3)), {}),
     ((3, 4, (3, 3)), dict(use_bias=False, strides=2, padding="CIRCULAR")),
     ((6, 4, (3, 3)), dict(feature_group_count=2, param_dtype=jnp.bfloat16)),
     ((3, 4, (3, 3)), dict(bias_init=jax.nn.initializers.normal(1.0),
                           mask=np.tril(np.ones((3, 3, 3, 4))).astype(np.float32))),
     ((3, 4, 5), dict(kernel_init=jax.nn.initializers.he_uniform()))],
)
def test_conv_same_state_as_flax_nnx(args, kwargs):
    ours = nnx.Conv(*args, rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.Conv(*args, rngs=flax_nnx.Rngs(0), **kwargs)
    assert_same_state_as_flax(ours, theirs)


@pytest.mark.parametrize(
    "args,kwargs",
    [((3, 4, (3, 3)), dict(strides=2)),
     ((4, 3, (3, 3)), dict(transpose_kernel=True, use_bias=False)),
     ((3, 4, (3, 3)), dict(mask=np.ones((3, 3, 3, 4), np.float32), param_dtype=jnp.float16,
                          bias_init=jax.nn.initializers.normal(1.0)))],
)
def test_conv_transpose_same_state_as_flax_nnx(args, kwargs):
    ours = nnx.ConvTranspose(*args, rngs=nnx.Rngs(0), **kwargs)
    theirs = flax_nnx.ConvTranspose(*args, rngs=flax_nnx.Rngs(0), **kwargs)
    assert_same_state_as_flax(ours, theirs)


def test_conv_outputs_equal_flax_nnx_for_the_same_seed():
    x = normal((2, 7, 3))
    for padding in ["SAME", "CIRCULAR", "CAUSAL"]:
        ours = nnx.Conv(3, 4, 3, padding=padding, rngs=nnx.Rngs(1))
        theirs = flax_nnx.Conv(3, 4, 3, padding=padding, rngs=flax_nnx.Rngs(1))
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,batch",
    [(dict(), (2,)), (dict(padding="CIRCULAR"), (2,)), (dict(padding="CAUSAL"), ()),
     (dict(mask="ones", feature_group_count=2), (2, 3)), (dict(use_bias=False), ())],
)
def test_conv_jaxpr_no_larger_than_linen(kwargs, batch):
    kwargs = dict(kwargs)
    if kwargs.get("mask") == "ones":
        kwargs["mask"] = jnp.ones((3, 2, 4))
    layer = nnx.Conv(4, 4, (3,), rngs=nnx.Rngs(0), **kwargs, **FAST_INIT)
    x = jnp.ones((*batch, 8, 4))
    ours = layer_eqns(layer, x)
    theirs = linen_eqns(linen.Conv(4, (3,), **kwargs), _params(layer), x)
    assert ours <= theirs, (ours, theirs)


def test_conv_overrides_are_used():
    seen = {}

    def conv(lhs, rhs, strides, padding, **kwargs):
        seen.update(kwargs, strides=strides, padding=padding)
        return jax.lax.conv_general_dilated(lhs, rhs, strides, padding, **kwargs)

    def promote(args, *, dtype=None):
        seen["promote_dtype"] = dtype
        return nnx.nn.dtypes.promote_dtype(args, dtype=dtype)

    layer = nnx.Conv(2, 3, (3,), 2, padding=[(2, 0)], conv_general_dilated=conv,
                     promote_dtype=promote, dtype=jnp.float32,
                     precision=jax.lax.Precision.HIGHEST,
                     preferred_element_type=jnp.float32, rngs=nnx.Rngs(0), **FAST_INIT)
    layer(jnp.ones((1, 6, 2)))
    assert seen["strides"] == (2,) and seen["padding"] == ((2, 0),)
    assert seen["precision"] == jax.lax.Precision.HIGHEST
    assert seen["preferred_element_type"] == jnp.float32
    assert seen["feature_group_count"] == 1 and "out_sharding" not in seen
    assert seen["promote_dtype"] == jnp.float32


def test_conv_metadata_and_attributes():
    layer = nnx.Conv(2, 3, (3, 3), kernel_metadata={"out_sharding": (None, None, "in", "out")},
                     bias_metadata={"out_sharding": ("out",)}, rngs=nnx.Rngs(0), **FAST_INIT)
    assert layer.kernel.out_sharding == (None, None, "in", "out")
    assert layer.bias.out_sharding == ("out",)
    assert layer.kernel_size == (3, 3) and layer.kernel_shape == (3, 3, 2, 3)
    assert layer.strides == 1 and layer.padding == "SAME"


def test_conv_lowercase_padding_names():
    layer = nnx.Conv(1, 1, 3, padding="circular", rngs=nnx.Rngs(0), **FAST_INIT)
    ref = nnx.Conv(1, 1, 3, padding="CIRCULAR", rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    randomize(ref)
    x = normal((5, 1))
    np.testing.assert_array_equal(layer(x), ref(x))


# ---------------------------------------------------------------- ConvTranspose


@pytest.mark.parametrize("kernel_size,spatial", SHAPES)
@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR", 1, "pairs"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose_matches_linen(kernel_size, spatial, padding, strides,
                                      transpose_kernel):
    if padding == "pairs":
        padding = [(1, 0)] + [(0, 2)] * (len(kernel_size) - 1)
    layer = nnx.ConvTranspose(3, 4, kernel_size, strides, padding=padding,
                              transpose_kernel=transpose_kernel, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((2, *spatial, 3))
    ref = linen.ConvTranspose(4, kernel_size, strides, padding=padding,
                              transpose_kernel=transpose_kernel).apply(_params(layer), x)
    out = layer(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [dict(kernel_dilation=2), dict(kernel_dilation=(1, 2), strides=(2, 1)),
     dict(use_bias=False, padding="VALID"), dict(mask="random"),
     dict(mask="random", padding="CIRCULAR", strides=2, transpose_kernel=True),
     dict(kernel_dilation=2, padding="CIRCULAR", strides=(1, 2))],
)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_conv_transpose_matches_linen_options(options, batch):
    options = dict(options)
    if options.get("mask") == "random":
        options["mask"] = _mask((3, 2, 4, 5) if not options.get("transpose_kernel")
                                else (3, 2, 5, 4))
    layer = nnx.ConvTranspose(4, 5, (3, 2), rngs=nnx.Rngs(0), **options, **FAST_INIT)
    randomize(layer)
    x = normal((*batch, 4, 5, 4))
    ref = linen.ConvTranspose(5, (3, 2), **options).apply(_params(layer), x)
    out = layer(x)
    assert out.shape == ref.shape and out.shape[: len(batch)] == batch
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,param_dtype", [(jnp.bfloat16, jnp.float32),
                                               (None, jnp.bfloat16), (jnp.float16, None)])
def test_conv_transpose_dtypes_match_linen(dtype, param_dtype):
    param_dtype = param_dtype or jnp.float32
    layer = nnx.ConvTranspose(3, 2, (2, 2), 2, dtype=dtype, param_dtype=param_dtype,
                              rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((1, 3, 3, 3))
    ref = linen.ConvTranspose(2, (2, 2), 2, dtype=dtype, param_dtype=param_dtype).apply(
        _params(layer), x)
    out = layer(x)
    assert out.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("strides,kernel_dilation", [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_conv_transpose_causal(strides, kernel_dilation):
    layer = nnx.ConvTranspose(2, 3, 3, strides, padding="CAUSAL",
                              kernel_dilation=kernel_dilation, rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    n = 6
    x = normal((2, n, 2))
    out = layer(x)
    assert out.shape == (2, n * strides, 3)
    # Same as explicit zero padding: span - 1 before, stride - 1 after.
    span = 2 * kernel_dilation + 1
    ref = linen.ConvTranspose(3, (3,), strides, padding=[(span - 1, strides - 1)],
                              kernel_dilation=kernel_dilation).apply(_params(layer), x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Causal: output t depends only on inputs j with j * stride <= t.
    for j in range(n):
        moved = layer(x.at[:, j].add(5.0))
        np.testing.assert_array_equal(moved[:, : j * strides], out[:, : j * strides])
        assert not np.allclose(moved[:, j * strides], out[:, j * strides])


@pytest.mark.parametrize("kernel_size", [(3,), (3, 5)])
def test_circular_conv_transpose_is_the_adjoint_of_circular_conv(kernel_size):
    # <Conv(x), y> == <ConvTranspose(y), x> with one shared (odd-sized) kernel, no bias.
    # (Even sizes follow flax's alignment, which is shifted by one from the adjoint.)
    conv = nnx.Conv(2, 3, kernel_size, padding="CIRCULAR", use_bias=False, rngs=nnx.Rngs(0),
                    **FAST_INIT)
    randomize(conv)
    up = nnx.ConvTranspose(3, 2, kernel_size, padding="CIRCULAR", use_bias=False,
                           transpose_kernel=True, rngs=nnx.Rngs(1), **FAST_INIT)
    up.kernel[...] = conv.kernel[...]
    spatial = (5, 4)[: len(kernel_size)]
    x = normal((1, *spatial, 2))
    y = normal((1, *spatial, 3), seed=1)
    np.testing.assert_allclose(jnp.vdot(conv(x), y), jnp.vdot(up(y), x), rtol=1e-5)


@pytest.mark.parametrize("kwargs,batch", [(dict(), (2,)), (dict(padding="CIRCULAR",
                                                                  strides=2), (2,)),
                                          (dict(mask="ones"), (2, 3)),
                                          (dict(use_bias=False), ())])
def test_conv_transpose_jaxpr_no_larger_than_linen(kwargs, batch):
    kwargs = dict(kwargs)
    if kwargs.get("mask") == "ones":
        kwargs["mask"] = jnp.ones((3, 4, 2))
    layer = nnx.ConvTranspose(4, 2, (3,), rngs=nnx.Rngs(0), **kwargs, **FAST_INIT)
    x = jnp.ones((*batch, 8, 4))
    ours = layer_eqns(layer, x)
    theirs = linen_eqns(linen.ConvTranspose(2, (3,), **kwargs), _params(layer), x)
    assert ours <= theirs, (ours, theirs)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [nnx.Conv, nnx.ConvTranspose])
def test_wrong_channel_count_names_layer_expected_and_actual(cls):
    layer = cls(3, 4, (3, 3), rngs=nnx.Rngs(0), **FAST_INIT)
    before = layer.kernel[...]
    with pytest.raises(nnx.errors.ShapeMismatchError,
                       match=rf"{cls.__name__}\(3, 4, kernel_size=\(3, 3\)\): expected inputs "
                             r"with 3 features.*shape \(2, 5, 5, 1\).*Hint: channels come last"):
        layer(jnp.ones((2, 5, 5, 1)))
    assert layer.kernel[...] is before


@pytest.mark.parametrize("cls", [nnx.Conv, nnx.ConvTranspose])
def test_wrong_rank_is_reported(cls):
    layer = cls(3, 4, (3, 3), rngs=nnx.Rngs(0), **FAST_INIT)
    with pytest.raises(ValueError, match=r"rank at least 3.*shape \(5, 3\).*Hint"):
        layer(jnp.ones((5, 3)))


def test_grouped_conv_checks_full_channel_count():
    layer = nnx.Conv(4, 4, 3, feature_group_count=2, rngs=nnx.Rngs(0), **FAST_INIT)
    with pytest.raises(ValueError, match="4 features.*shape \\(6, 2\\)"):
        layer(jnp.ones((6, 2)))


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(padding="SAMEE"), r"expected padding as one of SAME.*got 'SAMEE'.*Hint"),
     (dict(padding=[(1, 1)]), r"2 entries.*got \[\(1, 1\)\]"),
     (dict(padding=[(1, 1, 1), 2]), r"padding"),
     (dict(kernel_size=(3, 0)), r"positive ints.*got \(3, 0\).*Hint"),
     (dict(kernel_size=()), r"kernel_size"),
     (dict(feature_group_count=3), r"feature_group_count.*got 3.*common divisor of 4 and 6"),
     (dict(strides=(1, 2, 3)), r"strides as one int or 2 ints.*got \(1, 2, 3\)"),
     (dict(kernel_dilation=0), r"kernel_dilation.*>= 1"),
     (dict(padding="CAUSAL"), r"CAUSAL.*1D kernel.*2D kernel"),
     (dict(mask=np.ones((3, 3, 4, 5))), r"mask of the kernel's shape \(3, 3, 4, 6\).*"
                                        r"shape \(3, 3, 4, 5\)")],
)
def test_bad_conv_arguments(kwargs, match):
    kwargs = {"kernel_size": (3, 3), **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        nnx.Conv(4, 6, rngs=nnx.Rngs(0), **kwargs)
    assert str(info.value).startswith("Conv(4, 6, kernel_size=")


@pytest.mark.parametrize("kwargs,match", [(dict(padding="REFLECT"), "REFLECT.*Conv only"),
                                          (dict(padding="CAUSAL"), "CAUSAL.*1D"),
                                          (dict(strides=(2,)), "strides"),
                                          (dict(mask=np.ones((3, 3, 6, 4))), "mask")])
def test_bad_conv_transpose_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nnx.ConvTranspose(4, 6, (3, 3), rngs=nnx.Rngs(0), **kwargs)


def test_exports_resolve_at_top_level():
    for name in ["Conv", "ConvTranspose", "Embed", "LinearGeneral", "Einsum", "LoRA",
                 "LoRALinear", "LoRAParam", "avg_pool", "max_pool", "min_pool", "pool"]:
        assert getattr(nnx, name) is getattr(nnx.nn, name)
        assert name in nnx.nn.__all__


def test_conv_under_nnx_jit_and_grad():
    layer = nnx.Conv(2, 3, (3,), padding="CIRCULAR", rngs=nnx.Rngs(0), **FAST_INIT)
    randomize(layer)
    x = normal((2, 6, 2))

    @nnx.jit
    def loss_and_grad(layer, x):
        return nnx.value_and_grad(lambda m: (m(x) ** 2).sum())(layer)

    loss, grads = loss_and_grad(layer, x)
    np.testing.assert_allclose(loss, (layer(x) ** 2).sum(), rtol=1e-5)
    ref = jax.grad(lambda p: (linen.Conv(3, (3,), padding="CIRCULAR").apply(
        {"params": p}, x) ** 2).sum())(_params(layer)["params"])
    np.testing.assert_allclose(grads["kernel"][...], ref["kernel"], rtol=1e-4, atol=1e-5)
