"""Variable lengths (a padding mask or lengths as a side input) and an initial state given as an input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from tests import references_recurrent as ref
from tests.recurrent_helpers import as64, assert_matches_reference, random_params

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


@pytest.mark.parametrize("kind", ["simple", "gru", "lstm"])
def test_initial_state_input_matches_reference(kind):
    layer = LAYERS[kind](3, return_sequences=True, return_state=True, reverse=kind == "gru")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 2))
    initial = (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))) if kind == "lstm" else \
        rng.standard_normal((2, 3))
    params, state = random_params(layer, fn.spec_of((x.astype(np.float32), initial)))
    assert_matches_reference(lambda p, xx: layer.apply(p, state, xx)[0], params, (x, initial),
                             lambda p, xx: ref.rnn(p, {}, xx[0], kind=kind, initial_state=xx[1], return_sequences=True,
                                                   return_state=True, reverse=kind == "gru"))


def test_encoder_state_starts_the_decoder():
    # (decoder input, encoder input) -> the decoder's outputs, from the encoder's final state.
    model = fn.serial(fn.parallel(fn.Identity(), fn.serial(fn.LSTM(3, return_state=True), fn.Select(1))),
                      fn.LSTM(3, return_sequences=True))
    rng = np.random.default_rng(6)
    decoder_x, encoder_x = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 5, 3))
    params, state = random_params(model, fn.spec_of((decoder_x.astype(np.float32), encoder_x.astype(np.float32))))
    encoder_params, decoder_params = params["parallel_0"]["serial_0"]["lstm_0"], params["lstm_0"]

    def reference(p, xx):
        _, encoded = ref.rnn(p["parallel_0"]["serial_0"]["lstm_0"], {}, xx[1], kind="lstm", return_state=True)
        return ref.rnn(p["lstm_0"], {}, xx[0], kind="lstm", initial_state=encoded, return_sequences=True)

    assert encoder_params["w"].shape == (3, 12) and decoder_params["w"].shape == (2, 12)
    assert_matches_reference(lambda p, xx: model.apply(p, state, xx)[0], params, (decoder_x, encoder_x), reference)


@pytest.mark.parametrize(("initial", "error", "message"), [
    (fn.spec((None, 4)), fn.ShapeError,
     (r"lstm_0.*initial_state must be structured like the state this layer returns, \(\(N, 4\) float32, "
      r"\(N, 4\) float32\); got \(N, 4\) float32")),
    ((fn.spec((None, 4)), fn.spec((None, 5))), fn.ShapeError, r"got \(\(N, 4\) float32, \(N, 5\) float32\)"),
    ((fn.spec((None, 4), "int32"),) * 2, fn.InputTypeError, r"initial_state must have a floating dtype"),
], ids=["structure", "units", "dtype"])
def test_bad_initial_states_are_named_at_init(initial, error, message):
    with pytest.raises(error, match=rf"(?s){message}"):
        fn.serial(fn.LSTM(4)).init(jax.random.key(0), (fn.spec((None, 5, 3)), initial))
    with pytest.raises(fn.ShapeError, match=r"expected x \(batch, time, features\) or a pair \(x, initial_state\), "
                                            r"got \(\(N, 5, 3\) float32, \(N, 4\) float32, \(N, 4\) float32\)"):
        fn.LSTM(4).init(jax.random.key(0), (fn.spec((None, 5, 3)), fn.spec((None, 4)), fn.spec((None, 4))))


def test_bidirectional_takes_each_direction_initial_state():
    layer = fn.Bidirectional(fn.GRU(3, return_sequences=True), merge=None)
    rng = np.random.default_rng(7)
    x, forward_h, backward_h = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    params, state = random_params(layer, fn.spec_of((x, (forward_h, backward_h))))
    with jax.enable_x64(True):
        got = layer.apply(as64(params), state, (x, (forward_h, backward_h)))[0]
    p = as64(params)
    expected = (ref.rnn(p["forward"], {}, x, kind="gru", initial_state=forward_h, return_sequences=True),
                ref.rnn(p["backward"], {}, x, kind="gru", initial_state=backward_h, return_sequences=True,
                        reverse=True))
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-9), got, expected)
