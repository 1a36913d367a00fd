"""Variable lengths (a padding mask or lengths as a side input) and an initial state given as an input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from tests import references_recurrent as ref
from tests.recurrent_helpers import assert_matches_reference, random_params

LAYERS = {"simple": fn.SimpleRNN, "gru": fn.GRU, "lstm": fn.LSTM}
#: Each example's real steps, in a batch of 6 steps: right-padded, left-padded, full, right-padded.
VALID = [slice(0, 4), slice(3, 6), slice(0, 6), slice(0, 1)]


def padded_batch(seed=0, steps=6, features=2):
    """x (4, steps, features) with padded steps filled with noise (it must not matter)."""
    return np.random.default_rng(seed).standard_normal((len(VALID), steps, features)).astype(np.float32)


def padding_mask():
    mask = np.zeros((len(VALID), 6), bool)
    for i, valid in enumerate(VALID):
        mask[i, valid] = True
    return mask


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", ["simple", "gru", "lstm"])
def test_padded_batch_gives_each_example_alone(kind, reverse):
    options = {"return_sequences": True, "return_state": True, "reverse": reverse}
    masked = fn.with_context(LAYERS[kind](3, mask="padding_mask", **options), "padding_mask")
    alone = LAYERS[kind](3, **options)
    x, mask = padded_batch(), padding_mask()
    inputs = {"x": x, "padding_mask": mask}
    params, state = random_params(masked, fn.spec_of(inputs))
    (outputs, final), _ = masked.apply(params, state, inputs)
    for i, valid in enumerate(VALID):
        (expected_outputs, expected_final), _ = alone.apply(params, state, x[i:i + 1, valid])
        np.testing.assert_allclose(outputs[i:i + 1, valid], expected_outputs, rtol=1e-5, atol=1e-6)
        for got, expected in zip(jax.tree.leaves(final), jax.tree.leaves(expected_final), strict=True):
            np.testing.assert_allclose(got[i:i + 1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs[~mask], 0.0)

    def loss(xx):
        (out, last), _ = masked.apply(params, state, {"x": xx, "padding_mask": mask})
        return jnp.sum(out ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(last))

    grad = jax.grad(loss)(x)
    np.testing.assert_array_equal(grad[~mask], 0.0)
    assert np.all(np.abs(grad[mask]).sum(-1) > 0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", ["simple", "gru", "lstm"])
def test_masked_layer_matches_reference(kind, reverse):
    layer = fn.with_context(LAYERS[kind](2, mask="m", return_sequences=True, return_state=True, reverse=reverse),
                            "m")
    x = padded_batch(1, steps=4)
    mask = np.array([[True, True, False, True], [False, True, True, False], [True] * 4, [False] * 4])  # holes too
    params, state = random_params(layer, fn.spec_of({"x": x, "m": mask}))
    assert_matches_reference(lambda p, xx: layer.apply(p, state, {"x": xx, "m": mask})[0], params, x,
                             lambda p, xx: ref.rnn(p, {}, xx, kind=kind, valid=mask, return_sequences=True,
                                                   return_state=True, reverse=reverse))


def test_lengths_are_a_right_padding_mask():
    layer = fn.with_context(fn.GRU(3, mask="n", return_sequences=True, return_state=True), "n")
    x = padded_batch()
    lengths = np.array([4, 9, 6, 0], np.int32)  # beyond the sequence: every step; 0: none
    params, state = random_params(layer, fn.spec_of({"x": x, "n": lengths}))
    got = layer.apply(params, state, {"x": x, "n": lengths})[0]
    mask = np.arange(6)[None, :] < lengths[:, None]
    expected = layer.apply(params, state, {"x": x, "n": mask})[0]
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    np.testing.assert_array_equal(got[1][3], 0.0)  # no real step: the zero state


@pytest.mark.parametrize(("mask", "error", "message"), [
    (fn.spec((None, 7), bool), fn.ShapeError,
     (r"lstm_0.*side input 'm' \(the padding mask\) is a bool padding mask, so it must be \(N, 5\) \(batch, time\) "
      r"for the input \(N, 5, 3\); got \(N, 7\)")),
    (fn.spec((None, 5, 1), bool), fn.ShapeError, r"must be \(N, 5\) \(batch, time\).*got \(N, 5, 1\)"),
    (fn.spec((None, 5), "int32"), fn.ShapeError,
     (r"'m' \(the padding mask\) has an integer dtype, so it is read as lengths and must be \(N,\); got \(N, 5\)"
      r".*mask.astype\(bool\)")),
    (fn.spec((None, 5), "float32"), fn.InputTypeError,
     (r"'m' \(the padding mask\) must be a bool mask \(N, 5\) \(True at real steps\) or integer lengths \(N,\), "
      r"got dtype float32.*mask > 0")),
], ids=["steps", "rank", "int_mask", "float"])
def test_bad_masks_are_named_at_init(mask, error, message):
    model = fn.with_context(fn.serial(fn.LSTM(4, mask="m")), "m")
    with pytest.raises(error, match=rf"(?s){message}"):
        model.init(jax.random.key(0), {"x": fn.spec((None, 5, 3)), "m": mask})


def test_missing_mask_side_input_is_named():
    with pytest.raises(fn.MissingInputError, match=r"GRU reads the side input 'm', but the context holds none"):
        fn.GRU(3, mask="m").init(jax.random.key(0), (None, 5, 3))
    with pytest.raises(TypeError, match=r"GRU: `mask` names a side input and must be a non-empty string"):
        fn.GRU(3, mask=np.ones((2, 5), bool))
