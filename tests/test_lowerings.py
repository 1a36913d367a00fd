"""Each fast lowering against the reference lowering of the same layer: values and gradients.

Max pooling must agree bitwise, ties included (the gradient of a window goes to its first maximal
element in row-major window order, as ``lax.reduce_window``'s gradient does); average pooling and
convolutions compute the same sums in another order and agree to float rounding.
Both lowerings are also checked against an independent NumPy statement of the tie rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.layers._lowering import use_fast


def _both(make, shape, x, probe_seed=0):
    """``(y, grads wrt (params, x), jvp tangent)`` for the reference and for the fast lowering."""
    results = {}
    for lowering in ("reference", "fast"):
        layer = make(lowering)
        _, params, state = layer.init(jax.random.key(0), shape)

        def f(p, xx, layer=layer, state=state):
            return layer.apply(p, state, xx)[0]

        out = jax.eval_shape(f, params, x)
        probe = jnp.asarray(np.random.default_rng(probe_seed).standard_normal(out.shape), out.dtype)
        tangent_in = np.random.default_rng(probe_seed + 1).standard_normal(x.shape)
        tangent_in = jnp.asarray(tangent_in, x.dtype)

        @jax.jit
        def everything(p, xx, probe, tangent_in, f=f):
            y, tangent = jax.jvp(lambda v: f(p, v), (xx,), (tangent_in,))
            grads = jax.grad(lambda q, v: jnp.sum(f(q, v) * probe), argnums=(0, 1))(p, xx)
            return y, grads, tangent

        results[lowering] = everything(params, x, probe, tangent_in)
    return results["reference"], results["fast"]


def _maker(constructor, *args, **kwargs):
    """``lowering -> layer``."""
    return lambda lowering: constructor(*args, lowering=lowering, **kwargs)


def _tied(shape, seed=0, dtype=np.float32):
    """Inputs with many ties: small integers, a third of them zero (as after a ReLU)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    return jnp.asarray(np.where(rng.random(shape) < 0.3, 0, x).astype(dtype))


MAX_POOLS = [  # id, make, input shape, padded
    ("2d_ragged", _maker(fn.MaxPool2D, 2), (3, 7, 9, 4), False),
    ("2d_stride3", _maker(fn.MaxPool2D, 2, strides=3), (3, 8, 7, 4), False),
    ("2d_same_stride3", _maker(fn.MaxPool2D, 2, strides=3, padding="SAME"), (3, 7, 8, 4), True),
    ("2d_rect_same", _maker(fn.MaxPool2D, (3, 2), padding="SAME"), (2, 7, 5, 3), True),
    ("3d_same", _maker(fn.MaxPool3D, (2, 1, 3), padding="SAME"), (2, 5, 3, 7, 2), True),
    ("2d_window_of_20", _maker(fn.MaxPool2D, (5, 4), padding="SAME"), (2, 11, 9, 3), True),
]


@pytest.mark.parametrize("make, shape, padded", [c[1:] for c in MAX_POOLS],
                         ids=[c[0] for c in MAX_POOLS])
def test_max_pool_fast_lowering_is_bitwise_equal_with_ties(make, shape, padded):
    x = _tied(shape)
    (y0, g0, t0), (y1, g1, t1) = _both(make, shape, x)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(g1[1], g0[1])  # gradient wrt the input
    if not padded:
        np.testing.assert_array_equal(t1, t0)  # forward-mode derivative
    # The fast lowering's forward mode is the transpose of its reverse mode (the reference's is not
    # always: with padding, reduce_window's JVP breaks some ties differently from its gradient).
    f = jax.jit(lambda xx: make("fast").apply({}, {}, xx)[0])
    one = x[:1, ..., :1]
    np.testing.assert_array_equal(jax.jacfwd(f)(one), jax.jacrev(f)(one))


def _first_max_gradient(x, window):
    """NumPy statement of the tie rule for VALID, stride = window pooling: each window's output
    gradient (here 1) goes to its first maximal element in row-major window order."""
    grad = np.zeros_like(x)
    rank = x.ndim - 2
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    for n in range(x.shape[0]):
        for c in range(x.shape[-1]):
            for o in np.ndindex(*out):
                block = tuple(slice(i * k, (i + 1) * k) for i, k in zip(o, window))
                values = x[(n, *block, c)]
                # np.argmax returns the first maximum in row-major order.
                first = np.unravel_index(np.argmax(values), values.shape)
                grad[(n, *(i * k + f for i, k, f in zip(o, window, first)), c)] = 1
    assert rank == len(window)
    return grad


@pytest.mark.parametrize("lowering", ["reference", "fast"])
def test_max_pool_gradient_goes_to_first_maximum_in_window_order(lowering):
    x = _tied((2, 6, 4, 3), seed=3)
    layer = fn.MaxPool2D((3, 2), lowering=lowering)
    grad = jax.grad(lambda xx: jnp.sum(layer.apply({}, {}, xx)[0]))(x)
    np.testing.assert_array_equal(grad, _first_max_gradient(np.asarray(x), (3, 2)))


def test_max_pool_fast_lowering_bfloat16_and_infinities():
    shape = (2, 6, 6, 3)
    x = np.array(_tied(shape, seed=5))
    x[0, :2, :2, 0] = -np.inf  # a window of -inf only
    x[1, 2, 2, 1] = np.inf
    for dtype in (jnp.float32, jnp.bfloat16):
        xx = jnp.asarray(x, dtype)
        (y0, g0, _), (y1, g1, _) = _both(_maker(fn.MaxPool2D, 2), shape, xx)
        assert y1.dtype == dtype
        np.testing.assert_array_equal(np.asarray(y1, np.float32), np.asarray(y0, np.float32))
        np.testing.assert_array_equal(np.asarray(g1[1], np.float32), np.asarray(g0[1], np.float32))


def test_max_pool_fast_lowering_second_derivative_and_vmap():
    shape = (2, 4, 4, 2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    results = []
    for lowering in ("reference", "fast"):
        layer = fn.MaxPool2D(2, lowering=lowering)

        def f(xx, layer=layer):
            return jnp.sum(jnp.sin(layer.apply({}, {}, xx)[0]))

        hvp = jax.jvp(jax.grad(f), (x,), (jnp.ones_like(x),))[1]
        per_example = jax.vmap(lambda xi, layer=layer: layer.apply({}, {}, xi[None])[0][0])(x)
        results.append((hvp, per_example))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(results[1][1], results[0][1])


AVG_POOLS = [
    ("2d_valid", _maker(fn.AvgPool2D, 2), (3, 7, 9, 4)),
    ("2d_same_borders", _maker(fn.AvgPool2D, 3, padding="SAME"), (3, 7, 8, 4)),
    ("3d_same_strided", _maker(fn.AvgPool3D, 2, strides=(2, 3, 2), padding="SAME"),
     (2, 5, 7, 5, 2)),
]


@pytest.mark.parametrize("make, shape", [c[1:] for c in AVG_POOLS], ids=[c[0] for c in AVG_POOLS])
def test_avg_pool_fast_lowering_matches_reference(make, shape):
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    (y0, g0, t0), (y1, g1, t1) = _both(make, shape, x)
    np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g1[1], g0[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t1, t0, rtol=1e-6, atol=1e-7)


CONVS = [
    ("2d_3x3", _maker(fn.Conv2D, 8, 3, activation="relu"), (4, 12, 12, 3)),
    ("2d_strided_dilated_same", _maker(fn.Conv2D, 8, 3, strides=2, dilation=(1, 2), padding="SAME"),
     (4, 12, 11, 3)),
    ("2d_1x1", _maker(fn.Conv2D, 6, 1), (4, 5, 5, 7)),
    ("2d_many_channels_strided_same", _maker(fn.Conv2D, 8, 3, strides=2, padding="SAME"),
     (4, 9, 10, 6)),
    ("1d_many_channels_dilated", _maker(fn.Conv1D, 5, 3, dilation=2, padding="SAME"), (3, 14, 6)),
    ("1d_explicit_padding", _maker(fn.Conv1D, 5, 4, padding=((2, 1),), use_bias=False), (4, 12, 3)),
    ("3d_same", _maker(fn.Conv3D, 4, (2, 3, 1), strides=(1, 2, 1), padding="SAME"),
     (2, 5, 6, 4, 3)),
    ("2d_grouped_few_channels", _maker(fn.Conv2D, 4, 2, groups=2), (2, 5, 5, 4)),
    ("2d_grouped_many_channels_strided_dilated",
     _maker(fn.Conv2D, 9, 3, groups=3, strides=2, dilation=(2, 1), padding="SAME"), (2, 11, 9, 15)),
    ("2d_depthwise_strided_same", _maker(fn.Conv2D, 6, 3, groups=6, strides=2, padding="SAME"),
     (3, 9, 10, 6)),
    ("1d_depthwise_multiplier3_dilated",
     _maker(fn.Conv1D, 12, 3, groups=4, dilation=2, activation="relu"), (3, 13, 4)),
    ("transpose2d_same_stride2", _maker(fn.ConvTranspose2D, 4, 3, strides=2, padding="SAME"),
     (2, 5, 6, 3)),
    ("transpose1d_kernel_below_stride", _maker(fn.ConvTranspose1D, 4, 2, strides=3), (2, 5, 3)),
    ("transpose2d_dilated_explicit",
     _maker(fn.ConvTranspose2D, 3, 2, dilation=2, padding=((1, 2), (0, 1))), (2, 4, 4, 2)),
]


@pytest.mark.parametrize("make, shape", [c[1:] for c in CONVS], ids=[c[0] for c in CONVS])
def test_conv_fast_lowering_matches_reference(make, shape):
    x = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    (y0, g0, t0), (y1, g1, t1) = _both(make, shape, x)

    def close(a, b):
        scale = float(jnp.max(jnp.abs(b))) or 1.0
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, rtol=0, atol=2e-6)

    for a, b in zip(jax.tree.leaves((y1, t1, g1)), jax.tree.leaves((y0, t0, g0)), strict=True):
        close(a, b)


@pytest.mark.parametrize("channels", [2, 6])  # the scaled-slice sum and the patch product
def test_conv_fast_lowering_second_derivatives(channels):
    shape = (2, 6, 5, channels)
    x = jnp.asarray(np.random.default_rng(4).standard_normal(shape), jnp.float32)
    results = []
    for lowering in ("reference", "fast"):
        layer = fn.Conv2D(3, 3, strides=(2, 1), padding="SAME", lowering=lowering)
        _, params, state = layer.init(jax.random.key(0), shape)

        def loss(p, xx, layer=layer, state=state):
            return jnp.sum(jnp.tanh(layer.apply(p, state, xx)[0]))

        direction = jax.tree.map(jnp.ones_like, params)
        hvp = jax.jvp(lambda p: jax.grad(loss)(p, x), (params,), (direction,))[1]
        mixed = jax.grad(lambda xx: jnp.sum(jax.grad(loss)(params, xx)["w"] ** 2))(x)
        results.append((hvp, mixed))
    for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [3, 16])  # the scaled-slice sum and the patch product
def test_conv_fast_lowering_keeps_bfloat16(channels):
    """bfloat16 in, bfloat16 out, summed in float32: values and input gradients within one
    bfloat16 rounding of the float32 results."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 9, 9, channels)), jnp.bfloat16)
    for make in (fn.Conv2D, lambda *a, **k: fn.ConvTranspose2D(*a, strides=2, **k)):
        fast, reference = make(16, 5, lowering="fast"), make(16, 5, lowering="reference")
        _, params, state = fast.init(jax.random.key(0), x.shape)
        wide = jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), params)
        y = fast.apply(params, state, x)[0]
        assert y.dtype == jnp.bfloat16
        probe = jnp.asarray(np.random.default_rng(4).standard_normal(y.shape), jnp.float32)
        got = (y, jax.grad(lambda v: jnp.sum(fast.apply(params, state, v)[0] * probe))(x))
        expected = (reference.apply(wide, state, x.astype(jnp.float32))[0],
                    jax.grad(lambda v: jnp.sum(reference.apply(wide, state, v)[0] * probe))(
                        x.astype(jnp.float32)))
        for a, b in zip(got, expected, strict=True):
            error = np.abs(np.asarray(a, np.float32) - np.asarray(b))
            assert error.max() <= 2.0**-8 * np.abs(np.asarray(b)).max()


def _count(layer, shape, wrt_input=True):
    """How often each primitive of interest occurs in the jaxpr of the layer's gradient."""
    _, params, state = layer.init(jax.random.key(0), shape)
    argnums = (0, 1) if wrt_input else 0
    grad = jax.grad(lambda p, xx: jnp.sum(layer.apply(p, state, xx)[0]), argnums=argnums)
    text = str(jax.make_jaxpr(grad)(params, jnp.ones(shape, jnp.float32)))
    names = ("reduce_window", "select_and_scatter_add", "select_and_gather_add",
             "conv_general_dilated", "dot_general")
    return {name: text.count(name + "[") for name in names}


def test_auto_follows_the_backend_and_reference_is_kept():
    assert use_fast("fast") and not use_fast("reference")
    assert use_fast("auto") == (jax.default_backend() == "cpu")
    shape = (2, 8, 8, 3)
    windows = ("reduce_window", "select_and_scatter_add", "select_and_gather_add")
    reference = _count(fn.MaxPool2D(2, lowering="reference"), shape)
    assert any(reference[name] for name in windows)
    assert not any(_count(fn.MaxPool2D(2, lowering="fast"), shape)[name] for name in windows)
    overlapping = _count(fn.MaxPool2D(3, strides=1, lowering="fast"), shape)
    assert any(overlapping[name] for name in windows)  # the fast lowering does not apply
    # Convolutions in the reference lowering, matrix products in the fast one (any channels).
    reference = _count(fn.Conv2D(4, 3, lowering="reference"), shape, wrt_input=False)
    assert (reference["conv_general_dilated"], reference["dot_general"]) == (2, 0)
    for channels in (3, 8):
        fast = _count(fn.Conv2D(4, 3, lowering="fast"), (2, 8, 8, channels))
        assert fast["conv_general_dilated"] == 0 and fast["dot_general"] >= 2
    depthwise = _count(fn.Conv2D(8, 3, groups=4, lowering="fast"), (2, 8, 8, 4))
    assert depthwise["conv_general_dilated"] == 0
    grouped = _count(fn.Conv2D(8, 3, groups=2, lowering="fast"), (2, 8, 8, 4))
    assert grouped["conv_general_dilated"] == 0
    transposed = _count(fn.ConvTranspose2D(4, 3, strides=2, lowering="fast"), shape)
    assert transposed["conv_general_dilated"] == 0
    auto = {"conv": _count(fn.Conv2D(4, 3), shape, wrt_input=False),
            "pool": _count(fn.MaxPool2D(2), shape)}
    expected_fast = jax.default_backend() == "cpu"
    assert (auto["conv"]["conv_general_dilated"] == 0) == expected_fast
    assert (not any(auto["pool"][name] for name in windows)) == expected_fast


def test_lowering_is_checked_and_not_part_of_the_architecture():
    allowed = r"\['auto', 'reference', 'fast'\]"
    with pytest.raises(ValueError,
                       match=rf"MaxPool2D: `lowering` must be one of {allowed}, got 'im2col'"):
        fn.MaxPool2D(2, lowering="im2col")
    with pytest.raises(ValueError, match=r"ConvTranspose1D: `lowering` must be one of .*got None"):
        fn.ConvTranspose1D(2, 3, lowering=None)
    assert "lowering" not in fn.Conv2D(4, 3, lowering="fast").config
    assert "lowering" not in fn.AvgPool1D(2, lowering="reference").config
