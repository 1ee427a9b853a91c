"""Metrics that accumulate over batches: ``Average``, ``Accuracy``, ``Welford``, ``MultiMetric``.

A metric is a small graph object whose running sums are :class:`MetricState` variables,
so it can be passed to ``nnx.jit`` (its state is updated in place, like a model's) and
split, merged or checkpointed like any other object. Every metric has three methods:
``update(**batch_values)`` adds a batch, ``compute()`` returns the current value, and
``reset()`` starts over. An empty metric computes to NaN (0 / 0).

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
...                           accuracy=nnx.metrics.Accuracy())
>>> metrics.update(loss=jnp.array(0.5),
...                logits=jnp.array([[0.1, 0.9], [0.8, 0.2]]), labels=jnp.array([1, 1]))
>>> metrics.compute()
{'loss': Array(0.5, dtype=float32), 'accuracy': Array(0.5, dtype=float32)}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from nnxlib import graph as graphlib
from nnxlib.module import Pytree
from nnxlib.variables import A, Variable

__all__ = ["Accuracy", "Average", "Metric", "MetricState", "MultiMetric", "Statistics",
           "Welford"]


class MetricState(Variable[A]):
    """The kind of variable metrics keep their running sums in.

    Example:
        >>> import nnxlib as nnx
        >>> avg = nnx.metrics.Average()
        >>> sorted(nnx.state(avg, nnx.metrics.MetricState))
        ['count', 'total']
    """


class Metric(Pytree):
    """Base class of metrics: subclasses define ``__init__``, ``update``, ``compute`` and
    ``reset``, keeping their accumulators in :class:`MetricState` variables.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Maximum(nnx.Metric):
        ...     def __init__(self):
        ...         self.value = nnx.metrics.MetricState(jnp.array(-jnp.inf))
        ...     def update(self, *, values, **_):
        ...         self.value[...] = jnp.maximum(self.value[...], jnp.max(values))
        ...     def compute(self):
        ...         return self.value[...]
        ...     def reset(self):
        ...         self.value[...] = -jnp.inf
        >>> m = Maximum()
        >>> m.update(values=jnp.array([1.0, 3.0])); m.update(values=jnp.array(2.0))
        >>> m.compute()
        Array(3., dtype=float32)
    """

    def __init__(self) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must define __init__ (the base Metric has no state)."
        )

    def reset(self) -> None:
        """Return to the empty state (in place)."""
        raise NotImplementedError(f"{type(self).__name__} must define reset().")

    def update(self, **kwargs: Any) -> None:
        """Add a batch (in place)."""
        raise NotImplementedError(f"{type(self).__name__} must define update(**kwargs).")

    def compute(self) -> Any:
        """The metric's current value."""
        raise NotImplementedError(f"{type(self).__name__} must define compute().")

    def split(self, *filters: Any) -> tuple:
        """``nnx.split(self, *filters)``.

        Example:
            >>> import nnxlib as nnx
            >>> graphdef, state = nnx.metrics.Average().split()
            >>> sorted(state)
            ['count', 'total']
        """
        return graphlib.split(self, *filters, graph=True)


def _argument(metric: Metric, argname: str, kwargs: dict) -> Any:
    if argname not in kwargs:
        given = ", ".join(sorted(kwargs)) or "none"
        raise TypeError(
            f"{type(metric).__name__}.update: expected keyword argument {argname!r}; got "
            f"{given}. Hint: call update({argname}=...), or build the metric with the "
            f"name you pass, e.g. {type(metric).__name__}({next(iter(kwargs), 'loss')!r})."
        )
    return kwargs[argname]


def _is_python_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Average(Metric):
    """Mean of every value passed to ``update`` (scalars count once, arrays per entry).

    Args:
        argname: the keyword ``update`` reads the values from (default ``values``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> avg = nnx.metrics.Average("loss")
        >>> avg.update(loss=jnp.array([1.0, 2.0, 3.0]))
        >>> avg.update(loss=6.0, other=0)          # other keywords are ignored
        >>> avg.compute()
        Array(3., dtype=float32)
        >>> avg.reset(); avg.compute()
        Array(nan, dtype=float32)
    """

    def __init__(self, argname: str = "values"):
        self.argname = argname
        self.total = MetricState(jnp.array(0, dtype=jnp.float32))
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))

    def reset(self) -> None:
        """Forget every value.

        Example:
            >>> import nnxlib as nnx
            >>> avg = nnx.metrics.Average(); avg.update(values=1.0); avg.reset()
            >>> int(avg.count[...])
            0
        """
        self.total[...] = jnp.zeros_like(self.total[...])
        self.count[...] = jnp.zeros_like(self.count[...])

    def update(self, mask: jax.Array | None = None, **kwargs: Any) -> None:
        """Add ``kwargs[argname]``: a Python number (one value) or an array (each entry).

        Args:
            mask: optional array broadcastable to the values; entries where it is
                zero/False are left out.
            **kwargs: must hold ``argname``; other keywords are ignored (so that a
                :class:`MultiMetric` can pass everything to everyone).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> avg = nnx.metrics.Average()
            >>> avg.update(values=jnp.array([1.0, 10.0, 3.0]), mask=jnp.array([1, 0, 1]))
            >>> avg.compute()
            Array(2., dtype=float32)
        """
        values = _argument(self, self.argname, kwargs)
        if _is_python_number(values):
            if mask is not None:
                raise ValueError(
                    f"Average.update: a mask was given with the single number "
                    f"{self.argname}={values!r}; to be masked, the values should be a jax "
                    "array. Hint: pass the values as an array to mask them, or leave out "
                    "the mask."
                )
            self.total[...] = self.total[...] + values
            self.count[...] = self.count[...] + 1
            return
        values = jnp.asarray(values)
        if mask is None:
            self.total[...] = self.total[...] + values.sum()
            self.count[...] = self.count[...] + values.size
            return
        mask = jnp.broadcast_to(jnp.asarray(mask), values.shape)
        self.total[...] = self.total[...] + jnp.where(mask, values, 0).sum()
        self.count[...] = self.count[...] + mask.astype(bool).sum(dtype=jnp.int32)

    def compute(self) -> jax.Array:
        """``total / count`` (NaN before the first update).

        Example:
            >>> import nnxlib as nnx
            >>> avg = nnx.metrics.Average(); avg.update(values=4.0)
            >>> avg.compute()
            Array(4., dtype=float32)
        """
        return self.total[...] / self.count[...]


class Accuracy(Average):
    """Fraction of correct predictions.

    Multi-class (``threshold=None``): ``logits`` has one more axis than ``labels``
    and the prediction is its argmax over the last axis. Binary (a float
    ``threshold``): ``logits`` and ``labels`` have the same shape, a prediction is
    positive where ``logits >= threshold`` and a label where it is ``> 0``.

    Args:
        threshold: the decision threshold for binary classification.
        *args, **kwargs: passed to :class:`Average` (the ``argname`` is unused).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> acc = nnx.metrics.Accuracy()
        >>> acc.update(logits=jnp.array([[2.0, 1.0], [0.0, 1.0]]), labels=jnp.array([0, 0]))
        >>> acc.compute()
        Array(0.5, dtype=float32)
        >>> binary = nnx.metrics.Accuracy(threshold=0.5)
        >>> binary.update(logits=jnp.array([0.7, 0.2, 0.9]), labels=jnp.array([1, 0, 0]))
        >>> binary.compute()
        Array(0.6666667, dtype=float32)
    """

    def __init__(self, threshold: float | None = None, *args: Any, **kwargs: Any):
        if threshold is not None and not isinstance(threshold, float):
            raise TypeError(
                f"Accuracy: threshold must be a float or None, got "
                f"{type(threshold).__name__} ({threshold!r}). Hint: write e.g. 0.5, not 1/2 "
                "as an int, or leave it None for multi-class accuracy."
            )
        self.threshold = threshold
        super().__init__(*args, **kwargs)

    def update(self, *, logits: jax.Array, labels: jax.Array,  # type: ignore[override]
               mask: jax.Array | None = None, **_: Any) -> None:
        """Add a batch of predictions (``logits``) and integer ``labels``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> acc = nnx.metrics.Accuracy()
            >>> acc.update(logits=jnp.eye(3), labels=jnp.array([0, 1, 0]),
            ...            mask=jnp.array([True, True, False]))
            >>> acc.compute()
            Array(1., dtype=float32)
        """
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        binary = self.threshold is not None
        want = labels.ndim if binary else labels.ndim + 1
        if logits.ndim != want:
            kind = ("For binary classification (threshold given)" if binary
                    else "For multi-class classification")
            raise ValueError(
                f"Accuracy.update: {kind} the logits must have {want} axes "
                f"(labels have {labels.ndim}); got logits of shape {logits.shape} and labels "
                f"of shape {labels.shape}. Hint: "
                + ("give one logit per label." if binary else
                   "labels are class indices, not one-hot vectors: use labels.argmax(-1).")
            )
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"Accuracy.update: labels must be integers, got dtype {labels.dtype}. "
                "Hint: convert them with labels.astype(jnp.int32)."
            )
        if binary:
            correct = (logits >= self.threshold) == (labels > 0)
        else:
            correct = logits.argmax(axis=-1) == labels
        super().update(values=correct, mask=mask)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Statistics:
    """What :meth:`Welford.compute` returns (a pytree: it can leave ``nnx.jit``).

    Example:
        >>> import jax.numpy as jnp
        >>> from nnxlib.training.metrics import Statistics
        >>> float(Statistics(jnp.array(1.0), jnp.array(0.1), jnp.array(0.5)).mean)
        1.0
    """

    mean: jax.Array
    standard_error_of_mean: jax.Array
    standard_deviation: jax.Array


class Welford(Metric):
    """Running mean and (population) variance of a stream, with Welford/Chan updates.

    Each ``update`` merges a batch's mean and variance into the running ones, which is
    numerically stable where summing squares is not.

    Args:
        argname: the keyword ``update`` reads the values from (default ``values``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> stats = nnx.metrics.Welford()
        >>> stats.update(values=jnp.array([1.0, 2.0])); stats.update(values=jnp.array([3.0, 4.0]))
        >>> s = stats.compute()
        >>> float(s.mean), round(float(s.standard_deviation), 4)
        (2.5, 1.118)
    """

    def __init__(self, argname: str = "values"):
        self.argname = argname
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))
        self.mean = MetricState(jnp.array(0, dtype=jnp.float32))
        self.m2 = MetricState(jnp.array(0, dtype=jnp.float32))

    def reset(self) -> None:
        """Forget every value.

        Example:
            >>> import nnxlib as nnx
            >>> w = nnx.metrics.Welford(); w.update(values=3.0); w.reset()
            >>> float(w.mean[...]), int(w.count[...])
            (0.0, 0)
        """
        for state in (self.count, self.mean, self.m2):
            state[...] = jnp.zeros_like(state[...])

    def update(self, **kwargs: Any) -> None:
        """Merge ``kwargs[argname]`` (a number or an array, one value per entry).

        Example:
            >>> import nnxlib as nnx
            >>> w = nnx.metrics.Welford("x"); w.update(x=1.0); w.update(x=3.0)
            >>> float(w.compute().mean)
            2.0
        """
        values = _argument(self, self.argname, kwargs)
        if _is_python_number(values):
            n, batch_mean, batch_m2 = 1, jnp.float32(values), jnp.float32(0.0)
        else:
            values = jnp.asarray(values, jnp.float32)
            n, batch_mean = values.size, values.mean()
            batch_m2 = values.var() * values.size
        old_n = self.count[...]
        new_n = old_n + n
        delta = batch_mean - self.mean[...]
        # Chan et al.'s pairwise merge of (count, mean, M2) summaries.
        self.mean[...] = self.mean[...] + delta * (n / new_n)
        self.m2[...] = self.m2[...] + batch_m2 + delta * delta * (old_n * n / new_n)
        self.count[...] = new_n

    def compute(self) -> Statistics:
        """Mean, standard error of the mean and standard deviation.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> w = nnx.metrics.Welford(); w.update(values=jnp.array([0.0, 2.0]))
            >>> float(w.compute().standard_error_of_mean)
            0.7071...
        """
        variance = self.m2[...] / self.count[...]
        std = jnp.sqrt(variance)
        return Statistics(mean=self.mean[...], standard_error_of_mean=std / jnp.sqrt(
            self.count[...]), standard_deviation=std)


class MultiMetric(Metric):
    """Several named metrics updated, computed and reset together.

    ``update(**kwargs)`` passes every keyword to every metric (each takes what it
    needs). ``mask`` may be one array for all, or a dict ``{metric_name: mask}``.

    Args:
        **metrics: the metrics, by name; each becomes an attribute.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> m = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average())
        >>> m.update(logits=jnp.array([[0.0, 1.0]]), labels=jnp.array([1]), values=2.0)
        >>> m.compute()
        {'accuracy': Array(1., dtype=float32), 'loss': Array(2., dtype=float32)}
        >>> m.loss.compute()
        Array(2., dtype=float32)
    """

    def __init__(self, **metrics: Metric):
        for name, metric in metrics.items():
            if not isinstance(metric, Metric):
                raise TypeError(
                    f"MultiMetric: metrics.{name} must be a Metric, got "
                    f"{type(metric).__name__}. Hint: pass instances, e.g. "
                    f"{name}=nnx.metrics.Average()."
                )
        self._metric_names = tuple(metrics)
        for name, metric in metrics.items():
            setattr(self, name, metric)

    def reset(self) -> None:
        """Reset every metric.

        Example:
            >>> import nnxlib as nnx
            >>> m = nnx.MultiMetric(loss=nnx.metrics.Average()); m.update(values=1.0)
            >>> m.reset(); m.compute()
            {'loss': Array(nan, dtype=float32)}
        """
        for name in self._metric_names:
            getattr(self, name).reset()

    def update(self, **updates: Any) -> None:
        """Update every metric with ``updates`` (and its share of ``mask``).

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> m = nnx.MultiMetric(a=nnx.metrics.Average(), b=nnx.metrics.Average())
            >>> m.update(values=jnp.array([1.0, 3.0]), mask={"a": jnp.array([1, 0])})
            >>> m.compute()
            {'a': Array(1., dtype=float32), 'b': Array(2., dtype=float32)}
        """
        mask = updates.pop("mask", None)
        if isinstance(mask, dict):
            unknown = sorted(set(mask) - set(self._metric_names))
            if unknown:
                raise KeyError(
                    f"MultiMetric.update: mask has entries {unknown} for no metric; the "
                    f"metrics are {list(self._metric_names)}. Hint: key the mask dict by "
                    "metric name."
                )
        for name in self._metric_names:
            this_mask = mask.get(name) if isinstance(mask, dict) else mask
            extra = {} if this_mask is None else {"mask": this_mask}
            getattr(self, name).update(**updates, **extra)

    def compute(self) -> dict[str, Any]:
        """``{name: metric.compute()}``.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.MultiMetric(n=nnx.metrics.Average()).compute()
            {'n': Array(nan, dtype=float32)}
        """
        return {name: getattr(self, name).compute() for name in self._metric_names}
