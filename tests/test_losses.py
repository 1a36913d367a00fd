"""Losses against float64 NumPy formulas (and scikit-learn's log_loss), weights, shapes and errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss

import funcnet.losses as L

RTOL = 2e-5


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def weighted_mean64(per_example, weights=None):
    if weights is None:
        return per_example.mean()
    weights = np.asarray(weights, np.float64)
    return (per_example * weights).sum() / weights.sum()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_categorical_crossentropy(rng, smoothing, weighted):
    logits = rng.normal(size=(16, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 16)
    weights = rng.uniform(0, 2, 16).astype(np.float32) if weighted else None
    targets = np.eye(5)[labels] * (1 - smoothing) + smoothing / 5
    expected = weighted_mean64(-(targets * log_softmax64(logits)).sum(-1), weights)
    got = L.sparse_categorical_crossentropy(labels.astype(np.int32), logits, weights, label_smoothing=smoothing)
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


def test_sparse_matches_sklearn_log_loss(rng):
    logits = rng.normal(size=(40, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    probs = np.exp(log_softmax64(logits))
    expected = log_loss(labels, probs, labels=np.arange(4))
    np.testing.assert_allclose(float(L.sparse_categorical_crossentropy(labels, logits)), expected, rtol=RTOL)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_categorical_crossentropy_with_probability_targets(rng, smoothing):
    logits = rng.normal(size=(12, 6)).astype(np.float32)
    targets = rng.dirichlet(np.ones(6), size=12).astype(np.float32)
    weights = rng.uniform(0, 1, 12).astype(np.float32)
    smoothed = targets.astype(np.float64) * (1 - smoothing) + smoothing / 6
    expected = weighted_mean64(-(smoothed * log_softmax64(logits)).sum(-1), weights)
    got = L.categorical_crossentropy(targets, logits, weights, label_smoothing=smoothing)
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


@pytest.mark.parametrize("shape", [(20,), (20, 1), (20, 3)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_binary_crossentropy_from_logits(rng, shape, smoothing):
    logits = rng.normal(size=shape).astype(np.float32) * 4
    labels = rng.integers(0, 2, shape).astype(np.float32)
    t = labels.astype(np.float64) * (1 - smoothing) + 0.5 * smoothing
    z = logits.astype(np.float64)
    per_element = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    expected = per_element.reshape(shape[0], -1).mean(1).mean()
    got = L.binary_crossentropy(labels, logits, label_smoothing=smoothing)
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


def test_binary_crossentropy_from_probabilities(rng):
    p = rng.uniform(0.01, 0.99, 30).astype(np.float32)
    labels = rng.integers(0, 2, 30)
    expected = log_loss(labels, p.astype(np.float64), labels=[0, 1])
    np.testing.assert_allclose(float(L.binary_crossentropy(labels, p, from_logits=False)), expected, rtol=1e-4)


def test_binary_crossentropy_probabilities_of_zero_and_one_stay_finite():
    p = jnp.array([0.0, 1.0, 0.0, 1.0])
    labels = jnp.array([0, 1, 1, 0])
    value, grad = jax.value_and_grad(lambda q: L.binary_crossentropy(labels, q, from_logits=False))(p)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    # Only the two wrong, confident predictions cost: clipped to 1e-7 and 1 - 1e-7 (in float32).
    low, high = np.float64(np.float32(1e-7)), np.float64(np.float32(1 - 1e-7))
    np.testing.assert_allclose(float(value), (-np.log(low) - np.log1p(-high)) / 4, rtol=1e-4)


def test_binary_labels_of_shape_n_for_outputs_n_by_1(rng):
    logits = rng.normal(size=(10, 1)).astype(np.float32)
    labels = rng.integers(0, 2, 10)
    np.testing.assert_allclose(float(L.binary_crossentropy(labels, logits)),
                               float(L.binary_crossentropy(labels[:, None], logits)), rtol=1e-7)


@pytest.mark.parametrize("name,formula", [
    ("mean_squared_error", lambda e: e ** 2),
    ("mean_absolute_error", np.abs),
    ("huber", lambda e: np.where(np.abs(e) <= 1.0, 0.5 * e ** 2, np.abs(e) - 0.5)),
])
def test_regression_losses(rng, name, formula):
    pred = rng.normal(size=(25, 3)).astype(np.float32) * 2
    true = rng.normal(size=(25, 3)).astype(np.float32)
    weights = rng.uniform(0, 1, 25).astype(np.float32)
    per_example = formula(pred.astype(np.float64) - true).mean(1)
    fn = L.get_loss(name)
    np.testing.assert_allclose(float(fn(true, pred)), per_example.mean(), rtol=RTOL)
    np.testing.assert_allclose(float(fn(true, pred, weights)), weighted_mean64(per_example, weights), rtol=RTOL)


def test_huber_delta(rng):
    e = rng.normal(size=50).astype(np.float32) * 5
    d = 2.5
    expected = np.where(np.abs(e) <= d, 0.5 * e.astype(np.float64) ** 2, d * (np.abs(e) - 0.5 * d)).mean()
    np.testing.assert_allclose(float(L.huber(np.zeros(50, np.float32), e, delta=d)), expected, rtol=RTOL)


def test_masked_examples_never_contribute_even_if_nan(rng):
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    logits[5] = np.nan
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
    masked = L.sparse_categorical_crossentropy(labels, logits, mask)
    np.testing.assert_allclose(float(masked), float(L.sparse_categorical_crossentropy(labels[:5], logits[:5])),
                               rtol=1e-6)
    assert float(L.sparse_categorical_crossentropy(labels, logits, np.zeros(6, np.float32))) == 0.0


def test_per_element_weights_for_sequences(rng):
    logits = rng.normal(size=(4, 7, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 7))
    mask = (rng.uniform(size=(4, 7)) > 0.3).astype(np.float32)
    per_element = -np.take_along_axis(log_softmax64(logits), labels[..., None], -1)[..., 0]
    expected = (per_element * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(L.sparse_categorical_crossentropy(labels, logits, mask)), expected, rtol=RTOL)


def test_bfloat16_predictions_compute_in_float32(rng):
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    value = L.sparse_categorical_crossentropy(labels, jnp.asarray(logits, jnp.bfloat16))
    assert value.dtype == jnp.float32


def test_large_logits_give_finite_loss_and_gradient():
    logits = jnp.array([[1e4, 0.0, -1e4]])
    value, grad = jax.value_and_grad(lambda z: L.sparse_categorical_crossentropy(jnp.array([2]), z))(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------------------------
# Errors and name resolution


def test_float_labels_for_sparse_loss_are_a_type_error():
    with pytest.raises(TypeError, match=r"expects integer class indices, got labels of dtype float32.*astype"):
        L.sparse_categorical_crossentropy(np.zeros(4, np.float32), np.zeros((4, 3), np.float32))


def test_n_by_1_labels_for_sparse_loss_are_an_error():
    with pytest.raises(ValueError, match=r"expected labels of shape \(4,\).*got \(4, 1\).*reshape\(-1\)"):
        L.sparse_categorical_crossentropy(np.zeros((4, 1), np.int32), np.zeros((4, 3), np.float32))


def test_class_indices_for_categorical_loss_suggest_sparse():
    with pytest.raises(ValueError, match="look like class indices: use sparse_categorical_crossentropy"):
        L.categorical_crossentropy(np.zeros(4, np.int32), np.zeros((4, 3), np.float32))


def test_mismatched_regression_shapes_are_an_error():
    with pytest.raises(ValueError, match=r"y_true has shape \(4, 2\) but the predictions have shape \(4, 3\)"):
        L.mean_squared_error(np.zeros((4, 2)), np.zeros((4, 3)))


def test_bad_weights_shape():
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        L.mean_squared_error(np.zeros(4), np.zeros(4), np.ones(3))


def test_bad_options():
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0, 1\)"):
        L.categorical_crossentropy(np.eye(3), np.zeros((3, 3)), label_smoothing=1.5)
    with pytest.raises(ValueError, match="`delta` must be positive"):
        L.huber(np.zeros(2), np.zeros(2), delta=0)


def test_get_loss_names_and_aliases():
    assert L.get_loss("mse") is L.mean_squared_error
    assert L.get_loss("mae") is L.mean_absolute_error
    assert L.get_loss("huber_loss") is L.huber
    bound = L.get_loss("binary_crossentropy", from_logits=False)
    assert isinstance(bound, functools.partial) and L.label_kind(bound) == "binary"
    assert L.label_kind(L.get_loss("sparse_categorical_crossentropy")) == "class_index"
    assert L.label_kind(lambda t, p: 0.0) is None
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropy'; choose one of"):
        L.get_loss("crossentropy")
    with pytest.raises(ValueError, match="apply only to losses given by name"):
        L.get_loss(L.huber, delta=2.0)
