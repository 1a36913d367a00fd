"""Independent float64 NumPy / SciPy reference implementations of the layers.

Each takes ``(params, state, x)`` as nested dicts / arrays of float64 and returns float64 output
in evaluation mode. They are written from the definitions, not from funcnet's code.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gelu_exact(params, state, x):
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def gelu_tanh(params, state, x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def dense(params, state, x):
    y = np.einsum("...i,ij->...j", x, params["w"])
    if "b" in params:
        y = y + params["b"]
    return y


# ---------------------------------------------------------------------------------------------
# Sliding windows (convolution, transposed convolution, pooling), channels-last, any rank.


def _per_axis(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _explicit_pads(padding, sizes, window, strides, dilation):
    """(low, high) zero padding per spatial axis. SAME as TensorFlow defines it: ceil(n / s) outputs,
    the needed padding split with the smaller half first."""
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes)
    if not isinstance(padding, str):
        return [tuple(p) for p in padding]
    if padding.upper() == "VALID":
        return [(0, 0)] * len(sizes)
    pads = []
    for n, k, s, d in zip(sizes, window, strides, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _taps(xp, window, strides, dilation, out):
    """For every window offset ``tap``: the input values that tap sees, shape (N, *out, C)."""
    for tap in np.ndindex(*window):
        index = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in zip(tap, dilation, strides, out))
        yield tap, xp[(slice(None), *index, slice(None))]


def conv(params, state, x, *, strides=1, padding="VALID", dilation=1, groups=1):
    """y[n, o, f] = sum over taps t and input channels c of the group of f:
    x_padded[n, o * stride + t * dilation, c] * w[t, c, f]  (+ b[f])."""
    w = params["w"]
    rank = w.ndim - 2
    window, strides, dilation = w.shape[:rank], _per_axis(strides, rank), _per_axis(dilation, rank)
    pads = _explicit_pads(padding, x.shape[1:-1], window, strides, dilation)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = [(p - (k - 1) * d - 1) // s + 1 for p, k, d, s in zip(xp.shape[1:-1], window, dilation, strides)]
    c_in, features = w.shape[-2], w.shape[-1]
    f_group = features // groups
    y = np.zeros((x.shape[0], *out, features))
    for tap, seen in _taps(xp, window, strides, dilation, out):
        for g in range(groups):
            y[..., g * f_group:(g + 1) * f_group] += (
                seen[..., g * c_in:(g + 1) * c_in] @ w[tap][:, g * f_group:(g + 1) * f_group])
    return y + params["b"] if "b" in params else y


def conv_transpose(params, state, x, *, strides=1, padding="VALID", dilation=1):
    """Scatter-add: input position i adds x[i] @ w[t] to output position i * stride + t * dilation.

    The full result has (n - 1) * s + dk positions (dk = (k - 1) * d + 1). Keras' output length is
    n * s + max(dk - s, 0) for VALID and n * s for SAME; the result is the window of that length
    starting at the low padding of the forward convolution it is the gradient of (0 for VALID),
    zero-extended past the full result. Explicit (low, high) pairs crop the full result.
    """
    w = params["w"]
    rank = w.ndim - 2
    window, strides, dilation = w.shape[:rank], _per_axis(strides, rank), _per_axis(dilation, rank)
    sizes = x.shape[1:-1]
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(sizes, strides, window, dilation)]
    y = np.zeros((x.shape[0], *full, w.shape[-1]))
    for tap in np.ndindex(*window):
        index = tuple(slice(t * d, t * d + (n - 1) * s + 1, s) for t, d, s, n in zip(tap, dilation, strides, sizes))
        y[(slice(None), *index, slice(None))] += x @ w[tap]
    spans = []
    for axis, (n, s, k, d, length) in enumerate(zip(sizes, strides, window, dilation, full)):
        dk = (k - 1) * d + 1
        if isinstance(padding, str) and padding.upper() == "VALID":
            spans.append((0, n * s + max(dk - s, 0)))
        elif isinstance(padding, str):
            out = n * s
            spans.append((max((n - 1) * s + dk - out, 0) // 2, out))
        else:
            low, high = (padding, padding) if isinstance(padding, int) else padding[axis]
            spans.append((low, length - low - high))
    extended = np.pad(y, [(0, 0)] + [(0, max(lo + out - length, 0)) for (lo, out), length in zip(spans, full)]
                      + [(0, 0)])
    y = extended[(slice(None), *(slice(lo, lo + out) for lo, out in spans), slice(None))]
    return y + params["b"] if "b" in params else y


def pool(params, state, x, *, pool_size, strides=None, padding="VALID", average=False):
    """Max or mean over each window of the real (not padded) values."""
    rank = x.ndim - 2
    window = _per_axis(pool_size, rank)
    strides = window if strides is None else _per_axis(strides, rank)
    pads = _explicit_pads(padding, x.shape[1:-1], window, strides, (1,) * rank)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out = [(p - k) // s + 1 for p, k, s in zip(xp.shape[1:-1], window, strides)]
    stacked = np.stack([seen for _, seen in _taps(xp, window, strides, (1,) * rank, out)])
    return np.nanmean(stacked, axis=0) if average else np.nanmax(stacked, axis=0)


# ---------------------------------------------------------------------------------------------
# Normalisation and embedding.


def _affine(params, y):
    if "scale" in params:
        y = y * params["scale"]
    return y + params["bias"] if "bias" in params else y


def batch_norm(params, state, x, *, epsilon=1e-3):
    """Evaluation mode: the running averages divided by their weight ``debias`` (zero-debiased);
    mean 0 and variance 1 before any training step (``debias`` 0)."""
    if state["debias"] > 0:
        mean, var = state["mean"] / state["debias"], state["var"] / state["debias"]
    else:
        mean, var = 0.0, 1.0
    return _affine(params, (x - mean) / np.sqrt(var + epsilon))


def batch_norm_train(params, state, x, *, momentum=0.99, epsilon=1e-3):
    """Training mode: batch statistics over every axis but the last; the running ones move towards
    them, using the biased batch variance."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    y = _affine(params, (x - mean) / np.sqrt(var + epsilon))
    new_state = {"mean": momentum * state["mean"] + (1 - momentum) * mean,
                 "var": momentum * state["var"] + (1 - momentum) * var,
                 "debias": momentum * state["debias"] + (1 - momentum)}
    return y, new_state


def layer_norm(params, state, x, *, epsilon=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return _affine(params, (x - mean) / np.sqrt(var + epsilon))


def group_norm(params, state, x, *, groups, epsilon=1e-5):
    """Each example's channels [g * C/G, (g + 1) * C/G), over every spatial position, standardised."""
    size = x.shape[-1] // groups
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, ..., g * size:(g + 1) * size]
            y[n, ..., g * size:(g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + epsilon)
    return _affine(params, y)


def embedding(params, state, x):
    return params["w"][x]
