"""Two-input layers and side inputs, written as the custom-layer guide shows.

A side input (a padding mask) reaches a layer two containers deep through the ``context``, at init
(its spec checked) and at apply, and through fit with a dict ``x``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.core import Layer, array_spec, side_input, spec


def MaskedMean(name=None):
    """Two inputs, ``{"x": (N, T, C) float, "mask": (N, T) bool}`` -> the mean over unmasked steps, (N, C)."""

    def init(key, input_spec, *, context=None):
        x = array_spec(input_spec["x"], dtype=jnp.floating, name="x['x']")
        mask = array_spec(input_spec["mask"], dtype=jnp.bool_, name="x['mask']")
        if mask.shape != x.shape[:-1]:
            raise fn.ShapeError(f"the mask's shape {mask.shape} must be the input's {x.shape[:-1]}.")
        return spec((None, x.shape[-1]), x.dtype), {}, {}

    def apply(params, state, x, *, key=None, train=False, context=None):
        weights = x["mask"][..., None].astype(x["x"].dtype)
        return (x["x"] * weights).sum(1) / jnp.maximum(weights.sum(1), 1), state

    return Layer(init, apply, "MaskedMean", {}, (), name)


def ZeroPadded(mask_name="padding_mask", name=None):
    """One input ``(N, T, C)``; zeroes the steps where the side input ``mask_name`` (N, T) is False."""

    def init(key, input_spec, *, context=None):
        x = array_spec(input_spec, dtype=jnp.floating)
        mask = array_spec(side_input(context, mask_name, "ZeroPadded"), dtype=jnp.bool_, name=mask_name)
        if mask.shape != x.shape[:-1]:
            raise fn.ShapeError(f"{mask_name} has shape {mask.shape}; the input needs {x.shape[:-1]}.")
        return x, {}, {}

    def apply(params, state, x, *, key=None, train=False, context=None):
        mask = side_input(context, mask_name, "ZeroPadded")
        return jnp.where(mask[..., None], x, 0), state

    return Layer(init, apply, "ZeroPadded", {}, (), name)


def sequences(n=32, t=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, c)).astype(np.float32)
    lengths = rng.integers(1, t + 1, size=n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    return x, mask


def test_a_two_input_layer_checks_its_mask_at_init(key):
    layer = MaskedMean()
    out, _, _ = layer.init(key, {"x": spec((None, 5, 3)), "mask": spec((None, 5), bool)})
    assert out == spec((None, 3))
    x, mask = sequences(4)
    y, _ = layer.apply({}, {}, {"x": x, "mask": mask})
    expected = np.stack([x[i][mask[i]].mean(0) for i in range(4)])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(fn.ShapeError, match=r"expected x\['mask'\] of a bool dtype, got float32\.\nHint: pass a "
                                            r"boolean array"):
        layer.init(key, {"x": spec((None, 5, 3)), "mask": spec((None, 5))})


def model_with_a_side_input():
    # ZeroPadded sits three containers deep: serial -> residual -> its body, a serial.
    return fn.with_context(fn.serial(
        fn.Dense(4, rank=3),
        fn.residual(fn.serial(fn.Dense(4, rank=3), ZeroPadded())),
        fn.Flatten(),
        fn.Dense(2),
    ), "padding_mask")


SPEC = {"x": spec((None, 5, 3)), "padding_mask": spec((None, 5), bool)}


def test_a_side_input_reaches_a_layer_two_containers_deep_at_init_and_apply(key):
    model = model_with_a_side_input()
    out, params, _ = model.init(key, SPEC)
    assert out == spec((None, 2))
    assert list(params) == ["dense_0", "residual_0", "dense_1"]  # with_context adds no level
    x, mask = sequences(6)
    y, _ = model.apply(params, {}, {"x": x, "padding_mask": mask})
    # Reference: the same layers by hand, in float64.
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = x @ p["dense_0"]["w"] + p["dense_0"]["b"]
    body = p["residual_0"]["serial_0"]["dense_0"]
    inner = h @ body["w"] + body["b"]
    h = np.where(mask[..., None], inner, 0) + h
    expected = h.reshape(6, -1) @ p["dense_1"]["w"] + p["dense_1"]["b"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_a_side_input_with_the_wrong_dtype_or_missing_is_named_at_init(key):
    model = model_with_a_side_input()
    with pytest.raises(fn.ShapeError, match=r"Layer 'residual_0/serial_0/zeropadded_0' \(ZeroPadded, position 1 in its "
                                            r"container\): expected padding_mask of a bool dtype, got float32"):
        model.init(key, {**SPEC, "padding_mask": spec((None, 5))})
    body = model.children[0]
    with pytest.raises(fn.MissingInputError, match=r"ZeroPadded reads the side input 'padding_mask', but the context "
                                                   r"holds none\.(.|\n)*Hint: wrap the model in fn.with_context"):
        body.init(key, spec((None, 5, 3)))
    with pytest.raises(fn.ShapeError, match=r"expected a dict input with the side inputs \['padding_mask'\] among "
                                            r"its keys, got \(N, 5, 3\) float32"):
        model.init(key, spec((None, 5, 3)))


def test_the_context_merges_over_an_outer_one_and_passes_through_every_combinator(key):
    inner = fn.with_context(fn.branch(ZeroPadded(), fn.serial(fn.FanOut(1), fn.parallel(ZeroPadded("outer")))),
                            "padding_mask")
    x, mask = sequences(3)
    outer = ~mask
    # The outer context's padding_mask has the wrong shape: the input's entry replaces it.
    out, _, _ = inner.init(key, SPEC, context={"padding_mask": spec((None, 4), bool), "outer": spec((None, 5), bool)})
    assert out == (spec((None, 5, 3)), (spec((None, 5, 3)),))
    (a, (b,)), _ = inner.apply({}, {}, {"x": x, "padding_mask": mask},
                               context={"padding_mask": np.ones((3, 4), bool), "outer": outer})
    np.testing.assert_array_equal(a, np.where(mask[..., None], x, 0))
    np.testing.assert_array_equal(b, np.where(outer[..., None], x, 0))


def test_fit_trains_a_model_with_a_side_input(key):
    model = model_with_a_side_input()
    _, params, state = model.init(key, SPEC)
    x, mask = sequences(64)
    y = (x[..., 0] * mask).sum(1) > 0
    result = fn.fit(model, params, state, {"x": x, "padding_mask": mask}, y.astype(np.int32),
                    loss="sparse_categorical_crossentropy", epochs=3, batch_size=16, verbose=0)
    assert result.history["loss"][-1] < result.history["loss"][0]
    logits = np.asarray(fn.predict_fn(model)(result.params, {"x": x, "padding_mask": mask}), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_probs[np.arange(64), y.astype(int)].mean()
    metrics = fn.evaluate(model, result.params, result.state, {"x": x, "padding_mask": mask}, y.astype(np.int32),
                          loss="sparse_categorical_crossentropy", batch_size=20)  # ragged last batch, padded
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


def test_with_context_and_dict_branch_round_trip_through_the_architecture_json(key):
    from funcnet import architecture as arch

    model = fn.with_context(fn.branch({"wide": fn.Dense(4, rank=3), "narrow": fn.Dense(1, rank=3)}), "padding_mask")
    rebuilt = arch.from_json(arch.to_json(model, SPEC))
    assert arch.describe(rebuilt) == arch.describe(model)
    out, params, _ = rebuilt.init(key, SPEC)
    assert out == {"wide": spec((None, 5, 4)), "narrow": spec((None, 5, 1))}
    x, mask = sequences(2)
    np.testing.assert_array_equal(rebuilt.apply(params, {}, {"x": x, "padding_mask": mask})[0]["narrow"],
                                  model.apply(params, {}, {"x": x, "padding_mask": mask})[0]["narrow"])


@pytest.mark.parametrize("make", [
    lambda: fn.with_context(fn.serial(fn.LSTM(6, mask="lengths"), fn.Dense(2)), "lengths"),
    lambda: fn.with_context(fn.serial(fn.Bidirectional(fn.GRU(4, mask="lengths")), fn.Dense(2)), "lengths"),
], ids=["lstm-lengths", "bidirectional-gru-lengths"])
def test_fit_on_padded_sequences_ignores_what_the_padding_holds(key, make):
    """``fit`` on a dict input with per-example lengths: the padded steps hold noise, and two runs whose
    padding differs train to the same params (a layer that read the padding would not)."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 9, size=48).astype(np.int32)
    real = np.arange(8) < lengths[:, None]
    x = rng.standard_normal((48, 8, 3)).astype(np.float32)
    y = ((x[..., 0] * real).sum(1) > 0).astype(np.int32)
    model = make()
    _, params, state = model.init(key, {"x": fn.spec((None, 8, 3)), "lengths": fn.spec((None,), "int32")})
    results = []
    for noise in (0.0, 50.0):
        padded = np.where(real[..., None], x, noise * rng.standard_normal(x.shape).astype(np.float32))
        results.append(fn.fit(model, params, state, {"x": padded, "lengths": lengths}, y,
                              loss="sparse_categorical_crossentropy", epochs=2, batch_size=16, key=key, verbose=0))
    assert results[0].history["loss"][-1] < results[0].history["loss"][0]
    np.testing.assert_allclose(results[1].history["loss"], results[0].history["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[0].params), jax.tree.leaves(results[1].params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
