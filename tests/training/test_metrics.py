"""nnxlib.metrics against flax.nnx.metrics (same updates, same results) and plain numpy;
metrics inside nnx.jit; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx

import nnxlib as nnx

BATCHES = [
    {"values": jnp.array([1.0, 2.0, 3.0]), "logits": jnp.array([[0.1, 0.9], [0.7, 0.3],
                                                                [0.2, 0.8]]),
     "labels": jnp.array([1, 1, 1])},
    {"values": jnp.array([10.0, -4.0]), "logits": jnp.array([[0.9, 0.1], [0.4, 0.6]]),
     "labels": jnp.array([0, 0])},
    {"values": 7.0, "logits": jnp.array([[0.0, 1.0]]), "labels": jnp.array([1])},
]


def _assert_close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("make", [
    lambda m: m.metrics.Average(),
    lambda m: m.metrics.Average("values"),
    lambda m: m.metrics.Accuracy(),
    lambda m: m.metrics.Accuracy(threshold=0.5),
], ids=["average", "average-named", "accuracy", "accuracy-binary"])
def test_same_results_as_flax_nnx(make):
    ours, theirs = make(nnx), make(fnnx)
    binary = getattr(ours, "threshold", None) is not None
    _assert_close(ours.compute(), theirs.compute())           # NaN when empty
    for batch in BATCHES:
        if binary:
            batch = {**batch, "logits": batch["logits"][:, 1]}
        ours.update(**batch)
        theirs.update(**batch)
        _assert_close(ours.compute(), theirs.compute())
    ours.reset()
    theirs.reset()
    _assert_close(ours.compute(), theirs.compute())
    assert sorted(nnx.state(ours)) == ["count", "total"]


def test_welford_matches_numpy_and_flax():
    ours, theirs = nnx.metrics.Welford(), fnnx.metrics.Welford()
    seen = []
    for batch in BATCHES:
        ours.update(values=batch["values"])
        theirs.update(values=batch["values"])
        seen.extend(np.atleast_1d(np.asarray(batch["values"])))
        stats, ref = ours.compute(), theirs.compute()
        np.testing.assert_allclose(stats.mean, np.mean(seen), rtol=1e-5)
        np.testing.assert_allclose(stats.standard_deviation, np.std(seen), rtol=1e-5)
        np.testing.assert_allclose(stats.standard_error_of_mean,
                                   np.std(seen) / np.sqrt(len(seen)), rtol=1e-5)
        np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-6)
        np.testing.assert_allclose(stats.standard_deviation, ref.standard_deviation, rtol=1e-6)
    ours.reset()
    assert int(ours.count[...]) == 0 and ours.count[...].dtype == jnp.int32


def test_masks_leave_entries_out():
    avg = nnx.metrics.Average()
    avg.update(values=jnp.array([[1.0, 100.0], [3.0, 100.0]]), mask=jnp.array([True, False]))
    _assert_close(avg.compute(), 2.0)
    acc = nnx.metrics.Accuracy()
    acc.update(logits=jnp.eye(3), labels=jnp.array([0, 2, 2]), mask=jnp.array([1, 0, 1]))
    _assert_close(acc.compute(), 1.0)
    multi = nnx.MultiMetric(a=nnx.metrics.Average(), b=nnx.metrics.Average())
    multi.update(values=jnp.array([1.0, 5.0]), mask={"b": jnp.array([0, 1])})
    assert {k: float(v) for k, v in multi.compute().items()} == {"a": 3.0, "b": 5.0}


def test_multimetric_matches_flax_nnx():
    def make(m):
        return m.MultiMetric(accuracy=m.metrics.Accuracy(), loss=m.metrics.Average("loss"))

    ours, theirs = make(nnx), make(fnnx)
    for batch in BATCHES:
        kwargs = {"logits": batch["logits"], "labels": batch["labels"],
                  "loss": batch["values"]}
        ours.update(**kwargs)
        theirs.update(**kwargs)
        result, ref = ours.compute(), theirs.compute()
        assert list(result) == list(ref) == ["accuracy", "loss"]
        for name in ref:
            _assert_close(result[name], ref[name])
    assert sorted(nnx.state(ours)) == ["accuracy", "loss"]
    ours.reset()
    assert all(np.isnan(v) for v in ours.compute().values())


def test_metrics_update_inside_nnx_jit_like_eager():
    jitted = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss"),
                             spread=nnx.metrics.Welford("loss"))
    eager = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss"),
                            spread=nnx.metrics.Welford("loss"))

    @nnx.jit
    def step(metrics, logits, labels, loss):
        metrics.update(logits=logits, labels=labels, loss=loss)
        return metrics.compute()

    for batch in BATCHES[:2]:
        out = step(jitted, batch["logits"], batch["labels"], batch["values"])
        eager.update(logits=batch["logits"], labels=batch["labels"], loss=batch["values"])
    ref = eager.compute()
    _assert_close(out["accuracy"], ref["accuracy"])
    _assert_close(out["loss"], ref["loss"])
    _assert_close(out["spread"].standard_deviation, ref["spread"].standard_deviation)
    for a, b in zip(jax.tree.leaves(nnx.state(jitted)), jax.tree.leaves(nnx.state(eager))):
        _assert_close(a, b)
    nnx.jit(lambda m: m.reset())(jitted)
    assert int(jitted.loss.count[...]) == 0


def test_custom_metric_subclass_and_split():
    class Total(nnx.Metric):
        def __init__(self):
            self.total = nnx.metrics.MetricState(jnp.array(0.0))

        def update(self, *, values, **_):
            self.total[...] = self.total[...] + jnp.sum(values)

        def compute(self):
            return self.total[...]

        def reset(self):
            self.total[...] = 0.0

    metric = nnx.MultiMetric(total=Total())
    metric.update(values=jnp.arange(4.0))
    assert float(metric.compute()["total"]) == 6.0
    graphdef, state = metric.split(nnx.metrics.MetricState)
    assert float(nnx.merge(graphdef, state).total.compute()) == 6.0
    with pytest.raises(NotImplementedError, match="must define __init__"):
        nnx.Metric()


@pytest.mark.parametrize("call, error, match", [
    (lambda: nnx.metrics.Average("loss").update(values=1.0), TypeError,
     r"expected keyword argument 'loss'; got values.*Hint"),
    (lambda: nnx.metrics.Average().update(values=1.0, mask=jnp.ones(1)), ValueError,
     r"mask was given with the single number.*should be a jax array.*Hint"),
    (lambda: nnx.metrics.Accuracy().update(logits=jnp.ones((2, 3)),
                                           labels=jnp.ones((2, 3), jnp.int32)), ValueError,
     r"For multi-class classification the logits must have 3 axes.*shape \(2, 3\).*Hint"
     r".*argmax"),
    (lambda: nnx.metrics.Accuracy(0.5).update(logits=jnp.ones(4), labels=jnp.ones((2, 2), int)),
     ValueError, r"For binary classification.*must have 2 axes.*shape \(4,\).*Hint"),
    (lambda: nnx.metrics.Accuracy().update(logits=jnp.ones((2, 3)), labels=jnp.ones(2)),
     ValueError, r"labels must be integers, got dtype float32.*Hint"),
    (lambda: nnx.metrics.Accuracy(threshold=1), TypeError, r"threshold must be a float.*Hint"),
    (lambda: nnx.MultiMetric(loss=3), TypeError, r"metrics\.loss must be a Metric.*Hint"),
    (lambda: nnx.MultiMetric(a=nnx.metrics.Average()).update(values=1.0, mask={"b": 1}),
     KeyError, r"mask has entries \['b'\].*Hint"),
])
def test_bad_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_failed_update_changes_nothing():
    acc = nnx.metrics.Accuracy()
    acc.update(logits=jnp.eye(2), labels=jnp.array([0, 1]))
    before = jax.tree.map(np.asarray, nnx.state(acc))
    with pytest.raises(ValueError):
        acc.update(logits=jnp.eye(2), labels=jnp.array([0.0, 1.0]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(acc))):
        np.testing.assert_array_equal(a, b)
