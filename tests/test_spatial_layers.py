"""Semantics of the convolution, pooling, normalisation and embedding layers beyond the registry:
Keras' output sizes, transposed convolution as the adjoint of convolution, BatchNorm's running
statistics, Embedding's out-of-range ids, and a Keras-style CNN end to end."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn

KEY = jax.random.key(0)

CONV = {1: fn.Conv1D, 2: fn.Conv2D, 3: fn.Conv3D}
CONV_TRANSPOSE = {1: fn.ConvTranspose1D, 2: fn.ConvTranspose2D, 3: fn.ConvTranspose3D}


# Expected sizes worked out by hand from Keras' formulas (dk = (k - 1) * d + 1):
# conv VALID (n - dk) // s + 1, SAME ceil(n / s); transposed VALID n * s + max(dk - s, 0), SAME n * s.
@pytest.mark.parametrize(("n", "k", "s", "d", "padding", "conv", "transposed"), [
    (28, 3, 1, 1, "VALID", 26, 30),
    (7, 3, 2, 1, "VALID", 3, 15),
    (7, 3, 2, 1, "SAME", 4, 14),
    (4, 2, 3, 1, "VALID", 1, 12),
    (4, 2, 3, 1, "SAME", 2, 12),
    (9, 3, 1, 2, "VALID", 5, 13),
    (9, 3, 2, 2, "SAME", 5, 18),
    (5, 4, 1, 1, ((2, 1),), 5, 5),
])
def test_output_sizes_follow_keras(n, k, s, d, padding, conv, transposed):
    shape = (None, n, 2)
    assert fn.Conv1D(3, k, strides=s, dilation=d, padding=padding).init(KEY, shape)[0] == fn.spec((None, conv, 3))
    transposed_layer = fn.ConvTranspose1D(3, k, strides=s, dilation=d, padding=padding)
    assert transposed_layer.init(KEY, shape)[0] == fn.spec((None, transposed, 3))


@pytest.mark.parametrize(("rank", "kernel", "strides", "dilation", "padding", "size"), [
    (1, 3, 2, 1, "SAME", 6),
    (1, 4, 2, 1, "SAME", 8),
    (1, 3, 2, 1, ((1, 2),), 6),
    (2, 3, 2, 1, "VALID", 7),
    (2, (3, 2), (2, 1), 1, "SAME", 6),
    (2, 2, 1, 2, "SAME", 5),
    (3, 2, 2, 1, "VALID", 4),
])
def test_transposed_convolution_is_the_adjoint_of_convolution(rank, kernel, strides, dilation, padding, size):
    """<conv(x), y> = <x, conv_transpose(y)> with the kernel's channel axes swapped: the definition
    Keras' Conv*DTranspose (the gradient of Conv*D) satisfies."""
    options = {"strides": strides, "dilation": dilation, "padding": padding, "use_bias": False}
    conv, transposed = CONV[rank](3, kernel, **options), CONV_TRANSPOSE[rank](2, kernel, **options)
    x_shape = (2, *(size,) * rank, 2)
    y_spec, params, _ = conv.init(KEY, x_shape)
    back_spec, _, _ = transposed.init(KEY, y_spec)
    assert back_spec == fn.spec(x_shape)
    y_shape = (2, *y_spec.shape[1:])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(x_shape), rng.standard_normal(y_shape)
    with jax.enable_x64(True):
        w = np.asarray(params["w"], np.float64)
        forward = conv.apply({"w": w}, {}, jnp.asarray(x))[0]
        backward = transposed.apply({"w": np.swapaxes(w, -1, -2)}, {}, jnp.asarray(y))[0]
    np.testing.assert_allclose(np.vdot(forward, y), np.vdot(x, backward), rtol=1e-10)


def test_integer_padding_means_the_same_pair_on_every_side():
    a, b = fn.Conv2D(2, 3, padding=1), fn.Conv2D(2, 3, padding=((1, 1), (1, 1)))
    _, params, _ = a.init(KEY, (2, 4, 5, 3))
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.apply(params, {}, x)[0], b.apply(params, {}, x)[0])
    assert a.config == b.config
    assert fn.Conv2D(2, 3, padding="same").config["padding"] == "SAME"


def test_pooling_with_same_padding_ignores_the_padding():
    ones = jnp.ones((1, 3, 4, 2))
    np.testing.assert_array_equal(fn.AvgPool2D(3, strides=1, padding="SAME").apply({}, {}, ones)[0], ones)
    negative = -5 * ones
    np.testing.assert_array_equal(fn.MaxPool2D(3, strides=1, padding="SAME").apply({}, {}, negative)[0], negative)


def test_batch_norm_running_statistics_converge_to_the_data():
    rng = np.random.default_rng(0)
    mean, std = np.array([-2.0, 0.0, 3.0]), np.array([0.5, 1.0, 2.0])
    data = (rng.standard_normal((2048, 2, 3)) * std + mean).astype(np.float32)
    layer = fn.BatchNorm(momentum=0.9)
    _, params, state = layer.init(KEY, (None, 2, 3))
    step = jax.jit(lambda s, x: layer.apply(params, s, x, train=True)[1])
    for _ in range(4):
        for batch in data.reshape(16, 128, 2, 3):
            state = step(state, batch)
    # Batch means and variances are noisy; the moving average (about 19 batches) smooths them.
    assert np.all(np.abs(state["mean"] - data.mean(axis=(0, 1))) < 0.06 * std), state["mean"]
    np.testing.assert_allclose(state["var"], data.var(axis=(0, 1)), rtol=0.08)
    y, unchanged = jax.jit(lambda s, x: layer.apply(params, s, x))(state, data)
    jax.tree_util.tree_map(np.testing.assert_array_equal, unchanged, state)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0, atol=0.05)
    np.testing.assert_allclose(y.std(axis=(0, 1)), 1, atol=0.05)


def test_batch_norm_running_variance_uses_the_biased_batch_variance():
    layer = fn.BatchNorm(momentum=0.0)
    _, params, state = layer.init(KEY, (None, 2))
    x = np.random.default_rng(1).standard_normal((5, 2))
    with jax.enable_x64(True):
        _, new_state = layer.apply(params, state, jnp.asarray(x), train=True)
    np.testing.assert_allclose(new_state["var"], x.var(axis=0, ddof=0), rtol=1e-6)  # stored in float32
    assert not np.allclose(new_state["var"], x.var(axis=0, ddof=1))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_batch_norm_evaluation_leaves_the_state_alone(jit):
    layer = fn.BatchNorm()
    _, params, state = layer.init(KEY, (None, 4, 3))
    state = {"mean": jnp.array([1.0, 2.0, 3.0]), "var": jnp.array([0.5, 1.0, 2.0]), "debias": jnp.array(1.0)}
    apply = jax.jit(layer.apply) if jit else layer.apply
    x = np.random.default_rng(2).standard_normal((6, 4, 3)).astype(np.float32)
    y, new_state = apply(params, state, x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, new_state, state)
    np.testing.assert_allclose(y, (x - state["mean"]) / np.sqrt(state["var"] + 1e-3), rtol=1e-5, atol=1e-6)


def test_batch_norm_keeps_float32_statistics_for_bfloat16_inputs():
    layer = fn.BatchNorm()
    _, params, state = layer.init(KEY, (None, 3))
    y, new_state = layer.apply(params, state, jnp.ones((4, 3), jnp.bfloat16), train=True)
    assert y.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(new_state))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_embedding_out_of_range_ids_give_nan_rows_and_no_gradient(jit):
    layer = fn.Embedding(4, 3)
    _, params, _ = layer.init(KEY, fn.spec((None, 4), "int32"))
    ids = jnp.array([[0, 3, 4, -1]])
    apply = jax.jit(layer.apply) if jit else layer.apply
    y = np.asarray(apply(params, {}, ids)[0])
    np.testing.assert_array_equal(y[0, :2], np.asarray(params["w"])[[0, 3]])
    assert np.isnan(y[0, 2:]).all()
    grad = jax.grad(lambda p: jnp.nansum(apply(p, {}, ids)[0]))(params)["w"]
    np.testing.assert_array_equal(grad, np.array([[1.0] * 3, [0.0] * 3, [0.0] * 3, [1.0] * 3]))


def test_keras_style_cnn_builds_trains_and_counts_like_keras():
    """The seed tutorial's CNN: Keras' summary reports 93,322 parameters for it."""
    model = fn.Sequential([
        fn.Conv2D(32, 3, activation="relu"), fn.MaxPool2D(),
        fn.Conv2D(64, 3, activation="relu"), fn.MaxPool2D(),
        fn.Conv2D(64, 3, activation="relu"), fn.Flatten(),
        fn.Dense(64, activation="relu"), fn.Dense(10),
    ])
    out_shape, params, state = model.init(KEY, (None, 28, 28, 1))
    assert out_shape == fn.spec((None, 10))
    assert fn.count_params(params) == 93_322

    @jax.jit
    def step(params, x, labels):
        def loss(p):
            logits = model.apply(p, state, x)[0]
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
        value, grads = jax.value_and_grad(loss)(params)
        return jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grads), value

    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 28, 28, 1)).astype(np.float32), jnp.arange(8) % 10
    losses = []
    for _ in range(5):
        params, value = step(params, x, labels)
        losses.append(float(value))
    assert losses[-1] < losses[0]
