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

from nnxlib.nn import dtypes as dtypes  # nnx.nn.dtypes, as in flax (not star-exported)
from nnxlib.nn import initializers
from nnxlib.nn.activations import (
    PReLU,
    celu,
    elu,
    gelu,
    glu,
    hard_sigmoid,
    hard_silu,
    hard_swish,
    hard_tanh,
    identity,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    logsumexp,
    one_hot,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    soft_sign,
    softmax,
    softplus,
    standardize,
    swish,
    tanh,
)
from nnxlib.nn.linear import Linear
from nnxlib.nn.normalization import BatchNorm, LayerNorm, RMSNorm
from nnxlib.nn.stochastic import Dropout

__all__ = [
    "initializers",
    # layers
    "BatchNorm",
    "Dropout",
    "LayerNorm",
    "Linear",
    "PReLU",
    "RMSNorm",
    # activations
    "celu",
    "elu",
    "gelu",
    "glu",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "identity",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_sign",
    "softmax",
    "softplus",
    "standardize",
    "swish",
    "tanh",
]
