"""``nnx.transforms.iteration``: the mapping and looping transforms under flax.nnx's
module path.

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.transforms.iteration import scan, vmap
    >>> (vmap, scan) == (nnx.vmap, nnx.scan)
    True
"""

from nnxlib.transforms.axes import Carry, StateAxes
from nnxlib.transforms.control_flow import fori_loop, while_loop
from nnxlib.transforms.metadata import transform_metadata
from nnxlib.transforms.pmap import pmap
from nnxlib.transforms.scan import scan
from nnxlib.transforms.vmap import vmap

__all__ = ["vmap", "scan", "pmap", "fori_loop", "while_loop", "Carry", "StateAxes",
           "transform_metadata"]
