"""Label errors that name their cause (issue 11, items 6 and 7): missing labels, validation labels
out of range, one-hot rows given to the sparse loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import losses
from funcnet.core import Layer
from funcnet.training import check_labels, evaluate, fit

SPARSE = "sparse_categorical_crossentropy"


def counting_model(calls):
    """Dense(3) whose apply counts how often it runs (traced or not)."""
    dense = fn.Dense(3)

    def apply(params, state, x, **kwargs):
        calls.append(1)
        return dense.apply(params, state, x, **kwargs)

    return dense._replace(apply=apply)


def data(n=8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_fit_without_labels_fails_before_anything_is_traced():
    calls = []
    model = counting_model(calls)
    assert isinstance(model, Layer)
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x, _ = data()
    with pytest.raises(ValueError, match=r"^`y` is None, but the loss and metrics compare the model's outputs with "
                                         r"labels: pass one label \(or target\) per example of `x`, 8 in all\.$"):
        fit(model, params, state, x, None, loss=SPARSE, batch_size=4, verbose=0)
    assert calls == [], "the model was traced before the missing labels were noticed"
    fit(model, params, state, x, np.zeros(8, np.int32), loss=SPARSE, batch_size=4, epochs=0, verbose=0)
    assert calls, "the counter counts nothing"


def test_evaluate_and_validation_data_without_labels():
    model = fn.Dense(3)
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x, y = data()
    with pytest.raises(ValueError, match=r"^`y` is None"):
        evaluate(model, params, state, x, None, loss=SPARSE)
    with pytest.raises(ValueError, match=r"^`validation y` is None, .* per example of `validation x`, 8 in all"):
        fit(model, params, state, x, y, loss=SPARSE, batch_size=4, verbose=0, validation_data=(x, None))


def test_validation_labels_out_of_range_name_the_validation_set_and_the_loss():
    model = fn.Dense(3)
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x, y = data()
    bad = y.copy()
    bad[2] = 5
    with pytest.raises(ValueError, match=r"^sparse_categorical_crossentropy \(validation data\): labels must be class "
                                         r"indices in \[0, 3\) \(the model outputs 3 classes\), got min 0, max 5\."):
        fit(model, params, state, x, y, loss=SPARSE, batch_size=4, verbose=0, validation_data=(x, bad))
    # The training set's own message names the loss, without the word validation.
    with pytest.raises(ValueError, match=r"^sparse_categorical_crossentropy: labels must be class indices"):
        fit(model, params, state, x, bad, loss=SPARSE, batch_size=4, verbose=0)


def test_float_one_hot_rows_get_the_one_hot_hint_first():
    one_hot = np.eye(3, dtype=np.float32)[[0, 2, 1, 0]]
    with pytest.raises(ValueError, match=r"expects labels of shape \(4,\) .* got \(4, 3\)\. These look like one-hot "
                                         r"rows: use loss='categorical_crossentropy' or y\.argmax\(-1\)\."):
        check_labels(one_hot, (None, 3), "class_index", loss_name=SPARSE)
    # The advice works: argmax gives labels that pass.
    check_labels(one_hot.argmax(-1), (None, 3), "class_index", loss_name=SPARSE)


def test_float_one_hot_rows_into_fit_get_the_one_hot_hint():
    model = fn.Dense(3)
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x, y = data()
    with pytest.raises(ValueError, match=r"These look like one-hot rows"):
        fit(model, params, state, x, np.eye(3, dtype=np.float32)[y], loss=SPARSE, batch_size=4, verbose=0)


def test_the_loss_itself_checks_shape_before_dtype():
    one_hot = jnp.eye(3, dtype=jnp.float32)[jnp.array([0, 2, 1, 0])]
    with pytest.raises(ValueError, match=r"got \(4, 3\)\. These look like one-hot rows: use categorical_crossentropy"):
        losses.sparse_categorical_crossentropy(one_hot, jnp.zeros((4, 3)))
    with pytest.raises(TypeError, match=r"expects integer class indices, got labels of dtype float32"):
        losses.sparse_categorical_crossentropy(jnp.array([0.0, 2.0]), jnp.zeros((2, 3)))
