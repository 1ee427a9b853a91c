"""Training utilities: ``Optimizer`` over optax.

>>> import optax
>>> import nnxlib as nnx
>>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
>>> nnx.training.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param).step[...]
Array(0, dtype=uint32)
"""

from nnxlib.training import metrics
from nnxlib.training.ema import EMA
from nnxlib.training.metrics import Metric, MultiMetric
from nnxlib.training.optimizer import (
    ModelAndOptimizer,
    OptArray,
    Optimizer,
    OptState,
    OptVariable,
)
from nnxlib.training.tabulate import tabulate
from nnxlib.training.train_state import TrainState

__all__ = ["ModelAndOptimizer", "OptArray", "OptState", "OptVariable", "Optimizer"]
__all__ += ["EMA", "Metric", "MultiMetric", "TrainState", "metrics", "tabulate"]
