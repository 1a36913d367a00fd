"""Metrics against scikit-learn on random data; merged batches equal one big batch; under jit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import sklearn.metrics as skm

import funcnet.metrics as M

C = 5


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(203, C)).astype(np.float32)
    labels = rng.integers(0, C, 203).astype(np.int32)
    labels[:60] = scores[:60].argmax(1)  # better than chance, so no metric is trivially 0
    weights = rng.uniform(0, 2, 203).astype(np.float32)
    return scores, labels, weights


def run(metric, labels, scores, weights=None, *, batches=1, num_classes=None, jit=False):
    """Accumulates over ``batches`` batches, merging per-batch accumulators by addition."""
    update = jax.jit(metric.update) if jit else metric.update
    total = metric.init(num_classes)
    for part in np.array_split(np.arange(len(labels)), batches):
        w = None if weights is None else weights[part]
        total = metric.merge(total, update(metric.init(num_classes), labels[part], scores[part], w))
    return np.asarray((jax.jit(metric.compute) if jit else metric.compute)(total))


@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy(data, weighted):
    scores, labels, weights = data
    w = weights if weighted else None
    expected = skm.accuracy_score(labels, scores.argmax(1), sample_weight=w)
    np.testing.assert_allclose(run(M.accuracy(), labels, scores, w), expected, rtol=1e-6)
    np.testing.assert_allclose(run(M.accuracy(), labels, scores, w, batches=7, jit=True), expected, rtol=1e-6)


def test_accuracy_with_one_hot_labels(data):
    scores, labels, _ = data
    expected = skm.accuracy_score(labels, scores.argmax(1))
    np.testing.assert_allclose(run(M.accuracy(), np.eye(C, dtype=np.float32)[labels], scores), expected, rtol=1e-6)


@pytest.mark.parametrize("threshold,shape", [(0.0, (80,)), (0.0, (80, 1)), (0.5, (80, 1))])
def test_binary_scores(threshold, shape):
    rng = np.random.default_rng(2)
    scores = (rng.normal(size=shape) + (0.5 if threshold else 0)).astype(np.float32)
    labels = rng.integers(0, 2, 80).astype(np.int32)
    predicted = (scores.reshape(80) > threshold).astype(int)
    np.testing.assert_allclose(run(M.accuracy(threshold=threshold), labels, scores),
                               skm.accuracy_score(labels, predicted), rtol=1e-6)
    for kind, reference in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        metric = getattr(M, kind)(threshold=threshold)
        expected = reference(labels, predicted, zero_division=0)
        np.testing.assert_allclose(run(metric, labels, scores, num_classes=2), expected, rtol=1e-6, err_msg=kind)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_accuracy(data, k):
    scores, labels, weights = data
    expected = skm.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(C), sample_weight=weights)
    np.testing.assert_allclose(run(M.top_k_accuracy(k), labels, scores, weights, batches=3), expected, rtol=1e-6)
    assert M.top_k_accuracy(k).name == f"top_{k}_accuracy"


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
@pytest.mark.parametrize("kind", ["precision", "recall", "f1"])
def test_precision_recall_f1_multiclass(data, kind, average):
    scores, labels, weights = data
    reference = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[kind]
    metric = getattr(M, kind)(C, average=average)
    for w in (None, weights):
        expected = reference(labels, scores.argmax(1), labels=np.arange(C), average=average, sample_weight=w,
                             zero_division=0)
        np.testing.assert_allclose(run(metric, labels, scores, w), expected, rtol=1e-5)
        np.testing.assert_allclose(run(metric, labels, scores, w, batches=5, jit=average == "macro"), expected,
                                   rtol=1e-5)


def test_class_never_predicted_scores_zero_as_in_sklearn():
    labels = np.array([0, 1, 2, 2], np.int32)
    scores = np.eye(3, dtype=np.float32)[[0, 1, 1, 1]]
    expected = skm.precision_score(labels, scores.argmax(1), average="macro", zero_division=0)
    np.testing.assert_allclose(run(M.precision(3, average="macro"), labels, scores), expected, rtol=1e-6)


def test_confusion_matrix(data):
    scores, labels, weights = data
    expected = skm.confusion_matrix(labels, scores.argmax(1), labels=np.arange(C), sample_weight=weights)
    np.testing.assert_allclose(run(M.confusion_matrix(), labels, scores, weights, batches=4, num_classes=C),
                               expected, rtol=1e-5)


def test_merge_adds_accumulators_of_two_devices(data):
    scores, labels, _ = data
    metric = M.f1(C)
    whole = metric.update(metric.init(), labels, scores)
    halves = [metric.update(metric.init(), labels[s], scores[s]) for s in (slice(0, 100), slice(100, None))]
    np.testing.assert_array_equal(np.asarray(M.merge(*halves)["matrix"]), np.asarray(whole["matrix"]))


def test_sequence_outputs_with_per_example_weights():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (6, 4)).astype(np.int32)
    weights = np.array([1, 0, 1, 1, 0, 1], np.float32)
    keep = weights.astype(bool)
    expected = skm.accuracy_score(labels[keep].ravel(), scores[keep].argmax(-1).ravel())
    np.testing.assert_allclose(run(M.accuracy(), labels, scores, weights), expected, rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="the number of classes is unknown; pass num_classes="):
        M.f1().init()
    with pytest.raises(ValueError, match=r"`average` must be one of"):
        M.f1(3, average="samples")
    with pytest.raises(ValueError, match="average='binary' needs 2 classes, got 3"):
        M.precision(3, average="binary").compute(M.precision(3).init())
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        M.top_k_accuracy(0)
    with pytest.raises(ValueError, match=r"labels of shape \(4, 1\) do not fit predictions of shape \(4, 3\)"):
        M.accuracy().update(M.accuracy().init(), np.zeros((4, 1), np.int32), np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="expected integer class labels or one-hot rows"):
        M.accuracy().update(M.accuracy().init(), np.zeros(4, np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        M.get_metric("auc")


def test_get_metric_names():
    assert M.get_metric("acc").name == "accuracy"
    assert M.get_metric("top_5_accuracy").name == "top_5_accuracy"
    assert M.get_metric("f1").name == "f1"
    custom = M.accuracy(name="acc2")
    assert M.get_metric(custom) is custom
