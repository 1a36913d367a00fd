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
from funcnet.layers import set_lowering
from funcnet.layers._lowering import lowering_mode


def _both(make, shape, x, probe_seed=0):
    """``(y, grads wrt (params, x), jvp tangent)`` for the reference and for the fast lowering."""
    results = {}
    for lowering in ("reference", "fast"):
        layer = make()
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

        with set_lowering(lowering):
            results[lowering] = everything(params, x, probe, tangent_in)
    return results["reference"], results["fast"]


def _maker(constructor, *args, **kwargs):
    """``() -> layer``."""
    return lambda: constructor(*args, **kwargs)


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
    f = jax.jit(lambda xx: make().apply({}, {}, xx)[0])
    one = x[:1, ..., :1]
    with set_lowering("fast"):
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
    layer = fn.MaxPool2D((3, 2))
    with set_lowering(lowering):
        grad = jax.grad(lambda xx: jnp.sum(layer.apply({}, {}, xx)[0]))(x)
    np.testing.assert_array_equal(grad, _first_max_gradient(np.asarray(x), (3, 2)))


@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (2, 4, 6, 3), (2, 3, 2, 2, 3)],
                         ids=["2d_unrolled", "2d_reduction", "3d"])
def test_global_max_pool_gradient_goes_to_first_maximum_like_max_pool(shape):
    """Ties are the rule after a ReLU; the gradient goes to the first maximum (it was split)."""
    x = _tied(shape, seed=7)
    probe = jnp.asarray(np.random.default_rng(8).standard_normal((shape[0], shape[-1])), jnp.float32)
    spatial = shape[1:-1]
    grad = jax.grad(lambda v: jnp.sum(fn.GlobalMaxPool().apply({}, {}, v)[0] * probe))(x)
    spatial_axes = tuple(range(1, len(shape) - 1))
    expected = _first_max_gradient(np.asarray(x), spatial) * np.expand_dims(np.asarray(probe), spatial_axes)
    np.testing.assert_array_equal(grad, expected)
    pool = {2: fn.MaxPool2D, 3: fn.MaxPool3D}[len(spatial)](spatial)
    for mode in ("fast", "reference"):
        with set_lowering(mode):
            pooled = jax.grad(lambda v: jnp.sum(pool.apply({}, {}, v)[0].reshape(probe.shape) * probe))(x)
        np.testing.assert_array_equal(grad, pooled)
    values = fn.GlobalMaxPool().apply({}, {}, x)[0]
    np.testing.assert_array_equal(values, np.max(np.asarray(x), axis=spatial_axes))


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
    layer = fn.MaxPool2D(2)

    def f(xx):
        return jnp.sum(jnp.sin(layer.apply({}, {}, xx)[0]))

    for lowering in ("reference", "fast"):
        with set_lowering(lowering):
            hvp = jax.jvp(jax.grad(f), (x,), (jnp.ones_like(x),))[1]
            per_example = jax.vmap(lambda xi: layer.apply({}, {}, xi[None])[0][0])(x)
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
    layer = fn.Conv2D(3, 3, strides=(2, 1), padding="SAME")
    _, params, state = layer.init(jax.random.key(0), shape)

    def loss(p, xx):
        return jnp.sum(jnp.tanh(layer.apply(p, state, xx)[0]))

    direction = jax.tree.map(jnp.ones_like, params)
    for lowering in ("reference", "fast"):
        with set_lowering(lowering):
            hvp = jax.jvp(lambda p: jax.grad(loss)(p, x), (params,), (direction,))[1]
            mixed = jax.grad(lambda xx: jnp.sum(jax.grad(loss)(params, xx)["w"] ** 2))(x)
        results.append((hvp, mixed))
    for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0]), strict=True):
        # Relative to the largest entry: sums of many products, added in another order.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("channels", [3, 16])  # the scaled-slice sum and the patch product
def test_conv_fast_lowering_keeps_bfloat16(channels):
    """bfloat16 in, bfloat16 out, summed in float32: values and input gradients within one
    bfloat16 rounding of the float32 results."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 9, 9, channels)), jnp.bfloat16)
    for layer in (fn.Conv2D(16, 5), fn.ConvTranspose2D(16, 5, strides=2)):
        _, params, state = layer.init(jax.random.key(0), x.shape)
        wide = jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), params)

        def values_and_input_gradient(p, v, layer=layer, state=state):
            y = layer.apply(p, state, v)[0]
            probe = jnp.asarray(np.random.default_rng(4).standard_normal(y.shape), jnp.float32)
            return y, jax.grad(lambda u: jnp.sum(layer.apply(p, state, u)[0] * probe))(v)

        with set_lowering("fast"):
            got = values_and_input_gradient(params, x)
        with set_lowering("reference"):
            expected = values_and_input_gradient(wide, x.astype(jnp.float32))
        assert got[0].dtype == jnp.bfloat16
        for a, b in zip(got, expected, strict=True):
            error = np.abs(np.asarray(a, np.float32) - np.asarray(b))
            assert error.max() <= 2.0**-8 * np.abs(np.asarray(b)).max()


def _count(layer, shape, lowering, wrt_input=True):
    """How often each primitive of interest occurs in the jaxpr of the layer's gradient, traced
    under ``set_lowering(lowering)``."""
    _, params, state = layer.init(jax.random.key(0), shape)
    argnums = (0, 1) if wrt_input else 0
    grad = jax.grad(lambda p, xx: jnp.sum(layer.apply(p, state, xx)[0]), argnums=argnums)
    with set_lowering(lowering):
        text = str(jax.make_jaxpr(grad)(params, jnp.ones(shape, jnp.float32)))
    names = ("reduce_window", "select_and_scatter_add", "select_and_gather_add",
             "conv_general_dilated", "dot_general")
    return {name: text.count(name + "[") for name in names}


WINDOW_PRIMITIVES = ("reduce_window", "select_and_scatter_add", "select_and_gather_add")


def test_fast_and_reference_modes_trace_their_own_lowering():
    shape = (2, 8, 8, 3)
    reference = _count(fn.MaxPool2D(2), shape, "reference")
    assert any(reference[name] for name in WINDOW_PRIMITIVES)
    assert not any(_count(fn.MaxPool2D(2), shape, "fast")[name] for name in WINDOW_PRIMITIVES)
    overlapping = _count(fn.MaxPool2D(3, strides=1), shape, "fast")
    assert any(overlapping[name] for name in WINDOW_PRIMITIVES)  # the fast lowering does not apply
    # Convolutions in the reference lowering, matrix products in the fast one (any channels).
    reference = _count(fn.Conv2D(4, 3), shape, "reference", wrt_input=False)
    assert (reference["conv_general_dilated"], reference["dot_general"]) == (2, 0)
    for channels in (3, 8):
        fast = _count(fn.Conv2D(4, 3), (2, 8, 8, channels), "fast")
        assert fast["conv_general_dilated"] == 0 and fast["dot_general"] >= 2
    for layer, shape_in in ((fn.Conv2D(8, 3, groups=4), (2, 8, 8, 4)),  # depthwise
                            (fn.Conv2D(8, 3, groups=2), (2, 8, 8, 4)),  # grouped
                            (fn.ConvTranspose2D(4, 3, strides=2), shape)):
        assert _count(layer, shape_in, "fast")["conv_general_dilated"] == 0


def _cnn_and_input():
    model = fn.Sequential([fn.Conv2D(4, 3, activation="relu"), fn.MaxPool2D(2), fn.Flatten(),
                           fn.Dense(3)])
    _, params, state = model.init(jax.random.key(0), (None, 8, 8, 2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 2)), jnp.float32)
    return model, params, state, x


def _training_gradient(model, state):
    """The loss gradient with respect to params and input: what a train step lowers."""
    return jax.grad(lambda p, xx: jnp.sum(model.apply(p, state, xx)[0] ** 2), argnums=(0, 1))


# Operations of the reference lowering in StableHLO text (reduce_window's JVP and gradient
# lower to reduce_window and select_and_scatter).
REFERENCE_OPS = ("stablehlo.convolution", "stablehlo.reduce_window", "stablehlo.select_and_scatter")


def test_auto_resolves_for_the_platform_it_is_lowered_for():
    model, params, state, x = _cnn_and_input()
    grad = jax.jit(_training_gradient(model, state))
    assert lowering_mode() == "auto"
    for_cpu = jax.export.export(grad, platforms=["cpu"])(params, x).mlir_module()
    for_cuda = jax.export.export(grad, platforms=["cuda"])(params, x).mlir_module()
    assert not any(op in for_cpu for op in REFERENCE_OPS)
    assert all(op in for_cuda for op in REFERENCE_OPS)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks what runs on the CPU")
def test_auto_runs_the_fast_lowering_on_the_cpu_bitwise():
    model, params, state, x = _cnn_and_input()
    grad = _training_gradient(model, state)
    results = {}
    for mode in ("auto", "fast", "reference"):
        with set_lowering(mode):
            results[mode] = jax.jit(grad)(params, x)
            text = jax.jit(grad).lower(params, x).as_text()
        assert any(op in text for op in REFERENCE_OPS) == (mode == "reference"), mode
    for got, fast in zip(jax.tree.leaves(results["auto"]), jax.tree.leaves(results["fast"]), strict=True):
        np.testing.assert_array_equal(got, fast)
    # The reference lowering adds in another order: not bitwise equal, so the comparison above
    # tells the lowerings apart.
    conv_w_grad = (results["auto"][0]["conv2d_0"]["w"], results["reference"][0]["conv2d_0"]["w"])
    assert not np.array_equal(*conv_w_grad)
    np.testing.assert_allclose(*conv_w_grad, rtol=1e-5, atol=1e-6)


def test_set_lowering_is_checked_scoped_and_not_part_of_the_architecture():
    allowed = r"\['auto', 'reference', 'fast'\]"
    with pytest.raises(ValueError, match=rf"set_lowering: `mode` must be one of {allowed}, got 'im2col'"):
        set_lowering("im2col")
    assert lowering_mode() == "auto"
    with set_lowering("reference"):
        assert lowering_mode() == "reference"
        with set_lowering("fast"):
            assert lowering_mode() == "fast"
        assert lowering_mode() == "reference"
    assert lowering_mode() == "auto"
    with pytest.raises(TypeError, match="lowering"):
        fn.Conv2D(4, 3, lowering="fast")
    assert "lowering" not in fn.Conv2D(4, 3).config


def test_a_jitted_function_is_traced_again_under_another_mode():
    layer = fn.MaxPool2D(2)
    apply = jax.jit(lambda xx: layer.apply({}, {}, xx)[0])
    x = jnp.ones((1, 4, 4, 1))
    for mode in ("fast", "reference", "fast"):
        with set_lowering(mode):
            text = apply.lower(x).as_text()
            apply(x)
        assert ("stablehlo.reduce_window" in text) == (mode == "reference")
    assert apply._cache_size() == 2
