"""Classification metrics as pure, jittable accumulators that merge by addition.

A :class:`Metric` is four pure functions over an *accumulator*, a small dict of counts:

* ``init(num_classes=None) -> acc``: zero counts;
* ``update(acc, y_true, y_pred, weights=None) -> acc``: adds one batch's counts;
* ``merge(acc_a, acc_b) -> acc``: adds two accumulators (batches, devices, epochs);
* ``compute(acc) -> value``: the metric.

Because every accumulator is a sum of per-example counts, evaluating batch by batch, or on
several devices and adding (``jax.lax.psum``), gives exactly the metric of the whole data set::

    m = accuracy()
    acc = m.init()
    for x, y in batches:
        acc = m.update(acc, y, predict(params, x))
    print(m.compute(acc))

Predictions are scores: ``(N, C)`` logits or probabilities (the class is the argmax), or
``(N,)`` / ``(N, 1)`` binary scores compared with ``threshold`` (0.0, for logits; use 0.5 for
probabilities). Labels are integer class indices ``(N,)``, or one-hot rows ``(N, C)``, or 0/1
for binary scores. Weights ``(N,)`` weight each example (a 0/1 mask drops padding).
Counts are float32: exact up to 2**24 examples per accumulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.core import Array, format_shape

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "confusion_matrix",
    "f1",
    "get_metric",
    "merge",
    "precision",
    "recall",
    "top_k_accuracy",
]

Acc = dict[str, Array]


class Metric(NamedTuple):
    """A metric as pure functions over a dict of counts (see the module docstring).

    Attributes:
        name: the key under which ``fit`` and ``evaluate`` report it.
        init: ``(num_classes=None) -> acc``; zero counts. Metrics built on the confusion matrix
            need the number of classes, from their constructor or from this argument.
        update: ``(acc, y_true, y_pred, weights=None) -> acc``.
        compute: ``(acc) -> value``: a scalar (a vector or matrix for per-class metrics).
    """

    name: str
    init: Callable[..., Acc]
    update: Callable[..., Acc]
    compute: Callable[[Acc], Array]

    def merge(self, a: Acc, b: Acc) -> Acc:
        """Adds two accumulators of this metric."""
        return merge(a, b)


def merge(a: Any, b: Any) -> Any:
    """Adds two accumulators (or two dicts of accumulators) leaf by leaf."""
    return jax.tree.map(jnp.add, a, b)


# ---------------------------------------------------------------------------------------------
# From scores and labels to classes


def _is_binary(y_pred: Array) -> bool:
    return y_pred.ndim == 1 or y_pred.shape[-1] == 1


def _classes(y_true: Array, y_pred: Array, threshold: float, name: str) -> tuple[Array, Array]:
    """Returns ``(true_class, predicted_class)``, integer arrays of one shape."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    if _is_binary(y_pred):
        scores = y_pred[..., 0] if y_pred.ndim > 1 else y_pred
        predicted = (scores > threshold).astype(jnp.int32)
        if y_true.shape == y_pred.shape and y_pred.ndim > 1:
            y_true = y_true[..., 0]
        true = (y_true > 0.5).astype(jnp.int32) if jnp.issubdtype(y_true.dtype, jnp.floating) else y_true
    else:
        predicted = jnp.argmax(y_pred, axis=-1)
        if y_true.shape == y_pred.shape:  # one-hot rows or probabilities
            true = jnp.argmax(y_true, axis=-1)
        else:
            if not (jnp.issubdtype(y_true.dtype, jnp.integer) or y_true.dtype == jnp.bool_):
                raise TypeError(f"{name}: expected integer class labels or one-hot rows, got labels of dtype "
                                f"{y_true.dtype} and shape {format_shape(y_true.shape)}.")
            true = y_true
    if true.shape != predicted.shape:
        raise ValueError(
            f"{name}: labels of shape {format_shape(y_true.shape)} do not fit predictions of shape "
            f"{format_shape(y_pred.shape)}; expected {format_shape(predicted.shape)} class indices "
            f"(or one-hot rows of the predictions' shape)."
        )
    return true.astype(jnp.int32), predicted.astype(jnp.int32)


def _weights(weights: Array | None, shape: tuple[int, ...]) -> Array:
    """Per-example weights broadcast to the per-element ``shape`` (ones when absent)."""
    if weights is None:
        return jnp.ones(shape, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != shape[: weights.ndim]:
        raise ValueError(f"weights must have shape {format_shape(shape[:1])}, got {format_shape(weights.shape)}.")
    return jnp.broadcast_to(weights.reshape(weights.shape + (1,) * (len(shape) - weights.ndim)), shape)


def _ratio(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, numerator / safe, 0.0)


# ---------------------------------------------------------------------------------------------
# Accuracy


def accuracy(*, threshold: float = 0.0, name: str = "accuracy") -> Metric:
    """The fraction of examples whose predicted class equals the label.

    Args:
        threshold: for binary scores ``(N,)`` / ``(N, 1)``: predicted positive when above it
            (0.0 for logits, 0.5 for probabilities).
        name: the reported name.

    Accumulator: ``{"correct": (), "count": ()}``.
    """

    def init(num_classes: int | None = None) -> Acc:
        del num_classes
        return {"correct": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}

    def update(acc: Acc, y_true: Array, y_pred: Array, weights: Array | None = None) -> Acc:
        true, predicted = _classes(y_true, y_pred, threshold, name)
        w = _weights(weights, true.shape)
        return merge(acc, {"correct": jnp.sum(w * (true == predicted)), "count": jnp.sum(w)})

    def compute(acc: Acc) -> Array:
        return _ratio(acc["correct"], acc["count"])

    return Metric(name, init, update, compute)


def top_k_accuracy(k: int = 5, *, name: str | None = None) -> Metric:
    """The fraction of examples whose label is among the ``k`` highest scores.

    A label counts as found when fewer than ``k`` classes score strictly higher than it (ties
    count in the label's favour).

    Args:
        k: how many top classes count.
        name: the reported name, ``"top_{k}_accuracy"`` by default.

    Accumulator: ``{"correct": (), "count": ()}``. Predictions must be ``(N, C)`` scores.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k_accuracy: `k` must be a positive integer, got {k!r}.")
    name = name or f"top_{k}_accuracy"

    def init(num_classes: int | None = None) -> Acc:
        del num_classes
        return {"correct": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}

    def update(acc: Acc, y_true: Array, y_pred: Array, weights: Array | None = None) -> Acc:
        y_pred = jnp.asarray(y_pred)
        if _is_binary(y_pred):
            raise ValueError(f"{name}: needs scores for every class, shape (N, C), got {format_shape(y_pred.shape)}.")
        true, _ = _classes(y_true, y_pred, 0.0, name)
        true_score = jnp.take_along_axis(y_pred, true[..., None], axis=-1)
        rank = jnp.sum(y_pred > true_score, axis=-1)
        w = _weights(weights, true.shape)
        return merge(acc, {"correct": jnp.sum(w * (rank < k)), "count": jnp.sum(w)})

    def compute(acc: Acc) -> Array:
        return _ratio(acc["correct"], acc["count"])

    return Metric(name, init, update, compute)


# ---------------------------------------------------------------------------------------------
# The confusion matrix and what derives from it


def _matrix_init(configured: int | None, name: str) -> Callable[..., Acc]:
    def init(num_classes: int | None = None) -> Acc:
        classes = configured if configured is not None else num_classes
        if classes is None:
            raise ValueError(f"{name}: the number of classes is unknown; pass num_classes= to the metric "
                             "(fit and evaluate pass the model's output size).")
        return {"matrix": jnp.zeros((classes, classes), jnp.float32)}

    return init


def _matrix_update(threshold: float, name: str) -> Callable[..., Acc]:
    def update(acc: Acc, y_true: Array, y_pred: Array, weights: Array | None = None) -> Acc:
        classes = acc["matrix"].shape[0]
        true, predicted = _classes(y_true, y_pred, threshold, name)
        w = _weights(weights, true.shape).reshape(-1)
        true_1h = jax.nn.one_hot(true.reshape(-1), classes, dtype=jnp.float32)
        pred_1h = jax.nn.one_hot(predicted.reshape(-1), classes, dtype=jnp.float32)
        counts = jnp.matmul(true_1h.T, pred_1h * w[:, None], precision=jax.lax.Precision.HIGHEST)
        return {"matrix": acc["matrix"] + counts}

    return update


def confusion_matrix(num_classes: int | None = None, *, threshold: float = 0.0,
                     name: str = "confusion_matrix") -> Metric:
    """Counts of (true class, predicted class) pairs: rows are true classes, columns predicted.

    Args:
        num_classes: C; if None, ``init`` takes it (fit and evaluate pass the model's output size,
            2 for binary scores).
        threshold: for binary scores, as in :func:`accuracy`.
        name: the reported name.

    Accumulator: ``{"matrix": (C, C)}``; ``compute`` returns it (as scikit-learn's
    ``confusion_matrix`` does, but weighted counts are floats).
    """
    return Metric(name, _matrix_init(num_classes, name), _matrix_update(threshold, name), lambda acc: acc["matrix"])


_AVERAGES = ("auto", "binary", "micro", "macro", "weighted", None)


def _from_matrix(kind: str, num_classes: int | None, average: str | None, pos_label: int, threshold: float,
                 name: str | None) -> Metric:
    if average not in _AVERAGES:
        raise ValueError(f"{kind}: `average` must be one of {list(_AVERAGES)}, got {average!r}.")
    name = name or kind

    def compute(acc: Acc) -> Array:
        matrix = acc["matrix"]
        tp = jnp.diagonal(matrix)
        predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
        denominator = {"precision": predicted, "recall": actual, "f1": predicted + actual}[kind]
        numerator = 2 * tp if kind == "f1" else tp
        mode = average
        if mode == "auto":
            mode = "binary" if matrix.shape[0] == 2 else "macro"
        if mode == "binary":
            if matrix.shape[0] != 2:
                raise ValueError(f"{name}: average='binary' needs 2 classes, got {matrix.shape[0]}; use "
                                 "'macro', 'micro' or 'weighted'.")
            return _ratio(numerator[pos_label], denominator[pos_label])
        if mode == "micro":
            return _ratio(numerator.sum(), denominator.sum())
        per_class = _ratio(numerator, denominator)
        if mode is None:
            return per_class
        if mode == "weighted":
            return _ratio(jnp.sum(per_class * actual), actual.sum())
        return jnp.mean(per_class)

    return Metric(name, _matrix_init(num_classes, name), _matrix_update(threshold, name), compute)


def precision(num_classes: int | None = None, *, average: str | None = "auto", pos_label: int = 1,
              threshold: float = 0.0, name: str | None = None) -> Metric:
    """Precision ``tp / (tp + fp)``, from the confusion matrix (scikit-learn's definitions).

    Args:
        num_classes: C, or None to take it from ``init`` (fit passes the model's output size).
        average: ``"binary"`` (the ``pos_label`` class; needs C = 2), ``"micro"`` (pooled
            counts), ``"macro"`` (unweighted mean over classes), ``"weighted"`` (mean weighted by
            each class's support), None (per class, a ``(C,)`` vector), or ``"auto"``: binary for
            two classes, macro otherwise. A class with no predictions scores 0.
        pos_label: the positive class for ``average="binary"``.
        threshold: for binary scores, as in :func:`accuracy`.
        name: the reported name, ``"precision"`` by default.
    """
    return _from_matrix("precision", num_classes, average, pos_label, threshold, name)


def recall(num_classes: int | None = None, *, average: str | None = "auto", pos_label: int = 1,
           threshold: float = 0.0, name: str | None = None) -> Metric:
    """Recall ``tp / (tp + fn)``; arguments as in :func:`precision`."""
    return _from_matrix("recall", num_classes, average, pos_label, threshold, name)


def f1(num_classes: int | None = None, *, average: str | None = "auto", pos_label: int = 1,
       threshold: float = 0.0, name: str | None = None) -> Metric:
    """F1 ``2 tp / (2 tp + fp + fn)``; macro F1 averages the per-class F1 scores (as
    scikit-learn does). Arguments as in :func:`precision`."""
    return _from_matrix("f1", num_classes, average, pos_label, threshold, name)


#: The names :func:`get_metric` accepts.
METRICS: dict[str, Callable[[], Metric]] = {
    "accuracy": accuracy,
    "acc": accuracy,
    "top_k_accuracy": top_k_accuracy,
    "top_5_accuracy": top_k_accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "confusion_matrix": confusion_matrix,
}


def get_metric(metric: str | Metric, *, threshold: float | None = None) -> Metric:
    """Resolves a metric given by name (``"accuracy"``, ``"f1"``, ...) or returns a :class:`Metric`.

    Args:
        metric: a name from :data:`METRICS` or a Metric.
        threshold: for names only: the binary-score threshold (``fit`` passes 0.5 when the loss
            takes probabilities); None keeps each metric's default.

    Raises:
        ValueError: for an unknown name or another type.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a Metric.")
        make = METRICS[metric]
        if threshold is not None and make is not top_k_accuracy:
            return make(threshold=threshold)
        return make()
    raise ValueError(f"a metric must be a name ({sorted(METRICS)}) or a funcnet.metrics.Metric, got {metric!r}.")
