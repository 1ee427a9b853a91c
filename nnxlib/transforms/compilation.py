"""``nnx.transforms.compilation``: the compiling transforms under flax.nnx's module path.

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.transforms.compilation import jit
    >>> jit is nnx.jit
    True
"""

from nnxlib.transforms.aot import Compiled, Lowered, Stage, Traced
from nnxlib.transforms.jit import JitWrapped, StateSharding, jit
from nnxlib.transforms.partial import jit_partial
from nnxlib.transforms.shard_map import shard_map

__all__ = ["jit", "JitWrapped", "StateSharding", "jit_partial", "shard_map", "Stage",
           "Traced", "Lowered", "Compiled"]
