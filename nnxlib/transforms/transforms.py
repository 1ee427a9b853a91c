"""``nnx.transforms.transforms``: the remaining transforms under flax.nnx's module path.

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.transforms.transforms import eval_shape
    >>> eval_shape is nnx.eval_shape
    True
"""

from nnxlib.transforms.checkify import checkify
from nnxlib.transforms.control_flow import cond, switch
from nnxlib.transforms.eval_shape import eval_shape
from nnxlib.transforms.make_jaxpr import make_jaxpr

__all__ = ["checkify", "cond", "switch", "eval_shape", "make_jaxpr"]
