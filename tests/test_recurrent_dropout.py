"""Dropout on the inputs and on the recurrent state: only in training, keys derived from the
layer's key, against the float64 reference given the same masks, and the mean kept."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import funcnet as fn
from tests import references_recurrent as ref
from tests.recurrent_helpers import assert_matches_reference, random_params

LAYERS = {"simple": fn.SimpleRNN, "gru": fn.GRU, "lstm": fn.LSTM}


def test_evaluation_is_deterministic_and_equal_to_rate_zero():
    dropped = fn.LSTM(3, dropout=0.3, recurrent_dropout=0.4, return_sequences=True)
    plain = fn.LSTM(3, return_sequences=True)
    params, state = random_params(plain, (None, 5, 2))
    x = np.random.default_rng(0).standard_normal((2, 5, 2)).astype(np.float32)
    expected = plain.apply(params, state, x)[0]
    for key in (None, jax.random.key(1), jax.random.key(2)):
        np.testing.assert_array_equal(dropped.apply(params, state, x, key=key)[0], expected)
    assert not np.allclose(dropped.apply(params, state, x, key=jax.random.key(1), train=True)[0], expected)


def same_masks(key, x_shape, units, dropout, recurrent_dropout):
    """The masks RNN draws, drawn here with the same jax.random calls (as RNN's docstring states them)."""
    input_keep = jax.random.bernoulli(jax.random.fold_in(key, 0), 1 - dropout, x_shape)
    state_key = jax.random.fold_in(key, 1)
    state_keep = [jax.random.bernoulli(jax.random.fold_in(state_key, t), 1 - recurrent_dropout, (x_shape[0], units))
                  for t in range(x_shape[1])]
    return np.asarray(input_keep, np.float64), np.asarray(state_keep, np.float64)


@pytest.mark.parametrize(("kind", "options"), [
    ("simple", {}), ("gru", {"reverse": True}), ("gru", {"reset_after": False}), ("lstm", {"reverse": True}),
], ids=["simple", "gru_reverse", "gru_reset_before", "lstm_reverse"])
def test_training_matches_reference_with_the_same_masks(kind, options):
    rates = {"dropout": 0.3, "recurrent_dropout": 0.4}
    layer = LAYERS[kind](3, return_sequences=True, return_state=True, **rates, **options)
    key = jax.random.key(7)
    params, state = random_params(layer, (None, 5, 2))
    x = np.random.default_rng(1).standard_normal((2, 5, 2))
    with jax.enable_x64(True):  # the masks as the float64 run draws them
        input_keep, state_keep = same_masks(key, x.shape, 3, **rates)
    assert 0 < input_keep.mean() < 1 and 0 < state_keep.mean() < 1
    assert_matches_reference(lambda p, xx: layer.apply(p, state, xx, key=key, train=True)[0], params, x,
                             lambda p, xx: ref.rnn(p, {}, xx, kind=kind, return_sequences=True, return_state=True,
                                                   input_keep=input_keep, state_keep=state_keep, **rates, **options))


def test_dropout_keeps_the_mean():
    # A linear SimpleRNN's output is linear in each mask, so its mean over masks is the output without dropout.
    layer = fn.SimpleRNN(4, activation="linear", dropout=0.3, recurrent_dropout=0.5, return_sequences=True)
    params, state = random_params(layer, (None, 6, 3))
    params = {**params, "u": params["u"] * 0.5}
    x = np.random.default_rng(2).standard_normal((2, 6, 3)).astype(np.float32)
    keys = jax.random.split(jax.random.key(3), 4000)
    outputs = jax.jit(jax.vmap(lambda k: layer.apply(params, state, x, key=k, train=True)[0]))(keys)
    expected = layer.apply(params, state, x)[0]
    spread = outputs.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(outputs.mean(0) - expected) < 5 * spread + 1e-6)
    assert np.all(spread > 0)


def test_training_with_dropout_needs_a_key():
    x = np.zeros((2, 5, 3), np.float32)
    for layer in (fn.GRU(3, dropout=0.2), fn.GRU(3, recurrent_dropout=0.2)):
        params, state = random_params(layer, (None, 5, 3))
        with pytest.raises(fn.MissingKeyError, match=r"train=True with dropout=0.*needs a random key, got key=None"):
            layer.apply(params, state, x, train=True)
    fn.GRU(3).apply(params, state, x, train=True)  # no dropout: no key needed
    with pytest.raises(ValueError, match=r"LSTM: `recurrent_dropout` is the probability of dropping and must be in "
                                         r"\[0, 1\), got 1.0"):
        fn.LSTM(3, recurrent_dropout=1.0)
