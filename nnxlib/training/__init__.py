"""Training utilities: ``Optimizer`` over optax.

>>> import optax
>>> import nnxlib as nnx
>>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
>>> nnx.training.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param).step[...]
Array(0, dtype=uint32)
"""

# Checkpoint helpers stay under nnx.training (not in __all__, so not top level: there,
# nnx.checkpoint is remat).
from nnxlib.training import metrics
from nnxlib.training.checkpoint import (  # noqa: F401
    checkpoint_target,
    compare_structure,
    restore_checkpoint,
    save_checkpoint,
    to_checkpoint_dict,
)
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
