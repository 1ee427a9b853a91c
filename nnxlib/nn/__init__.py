"""Neural-network building blocks: initializers, layers, activations, attention, recurrence.

Initializers live in their own namespace, as ``flax.nnx.initializers`` does:

>>> from nnxlib.nn import initializers
>>> initializers.zeros_init() is initializers.zeros
True
"""

from nnxlib.nn import initializers

__all__ = ["initializers"]
