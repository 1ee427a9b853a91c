"""Neural-network building blocks: initializers, layers, activations, attention, recurrence.

Initializers live in their own namespace, as ``flax.nnx.initializers`` does:

>>> from nnxlib.nn import initializers
>>> initializers.zeros_init() is initializers.zeros
True

Layers and activations are re-exported at the top level (``nnx.Linear``, ``nnx.relu``):

>>> import nnxlib as nnx
>>> nnx.nn.Linear is nnx.Linear
True
"""

from nnxlib.nn import activations, initializers
from nnxlib.nn import dtypes as dtypes  # nnx.nn.dtypes, as in flax (not star-exported)
from nnxlib.nn import recurrent as recurrent  # nnx.nn.recurrent, as in flax
from nnxlib.nn.activations import *  # noqa: F403  (names listed in activations.__all__)
from nnxlib.nn.attention import (
    MultiHeadAttention,
    combine_masks,
    dot_product_attention,
    dot_product_attention_weights,
    make_attention_mask,
    make_causal_mask,
)
from nnxlib.nn.conv import Conv, ConvTranspose
from nnxlib.nn.embed import Embed
from nnxlib.nn.linear import Einsum, Linear, LinearGeneral
from nnxlib.nn.lora import LoRA, LoRALinear, LoRAParam
from nnxlib.nn.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from nnxlib.nn.pooling import avg_pool, max_pool, min_pool, pool
from nnxlib.nn.recurrent import (
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    OptimizedLSTMCell,
    RNNCellBase,
    SimpleCell,
)
from nnxlib.nn.stochastic import Dropout
from nnxlib.nn.weight_norm import SpectralNorm, WeightNorm

__all__ = [
    "initializers",
    # layers
    "BatchNorm",
    "Dropout",
    "LayerNorm",
    "Linear",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "SpectralNorm",
    "WeightNorm",
    # attention
    "MultiHeadAttention",
    "combine_masks",
    "dot_product_attention",
    "dot_product_attention_weights",
    "make_attention_mask",
    "make_causal_mask",
    "Conv",
    "ConvTranspose",
    "Embed",
    "Einsum",
    "LinearGeneral",
    "LoRA",
    "LoRALinear",
    "LoRAParam",
    # pooling
    "avg_pool",
    "max_pool",
    "min_pool",
    "pool",
    # recurrent
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "RNN",
    "RNNCellBase",
    "SimpleCell",
    # activations, PReLU included
    *activations.__all__,
]
