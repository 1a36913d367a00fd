"""Convolutions as matrix products: the fast lowering of (transposed) convolutions.

* :func:`conv` gathers the input's patches, one strided slice per kernel tap concatenated along
  the channels, into ``(N, *out, taps * C)`` and multiplies them by the kernel reshaped to
  ``(taps * C, F)``: one large matrix product instead of XLA's direct convolution, which the CPU
  backend runs slowly for the few channels of small networks (and differentiates more slowly
  still).
* :func:`conv_transpose` follows the scatter-add definition: one matrix product
  ``(N, *sizes, C) @ (C, taps * F)`` gives every tap's contribution, and each tap's slice is
  placed at ``i * stride + tap * dilation`` by an interior-padded ``lax.pad`` and summed, with no
  multiplication by the zeros of a dilated input.

Both compute the same sums as ``lax.conv_general_dilated`` in another order, so they agree with
it to float rounding. Only ungrouped convolutions (``groups=1``) take this lowering.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Array

Pads = tuple[tuple[int, int], ...]


def _matmul_last(x: Array, w: Array) -> Array:
    """``x @ w`` over the last axis of ``x`` (any leading axes)."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def conv(x: Array, w: Array, *, strides: Sequence[int], pads: Pads,
         dilation: Sequence[int]) -> Array:
    """``lax.conv_general_dilated`` over channels-last ``x`` with an ``(*kernel, C, F)`` kernel.

    ``x`` is ``(N, *sizes, C)``, ``pads`` explicit ``(low, high)`` pairs; returns
    ``(N, *out, F)``.
    """
    rank = x.ndim - 2
    kernel, (channels, features) = w.shape[:rank], w.shape[rank:]
    if any(lo or hi for lo, hi in pads):
        config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    sizes = x.shape[1:-1]
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, d, s in zip(sizes, kernel, dilation, strides, strict=True)]
    columns = []
    for tap in np.ndindex(*kernel):
        start = [t * d for t, d in zip(tap, dilation, strict=True)]
        limit = [b + s * (o - 1) + 1 for b, s, o in zip(start, strides, out, strict=True)]
        columns.append(jax.lax.slice(x, (0, *start, 0), (x.shape[0], *limit, channels),
                                     (1, *strides, 1)))
    patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    return _matmul_last(patches, w.reshape(math.prod(kernel) * channels, features))


def conv_transpose(x: Array, w: Array, *, strides: Sequence[int], crops: Pads,
                   dilation: Sequence[int]) -> Array:
    """The transposed convolution: input position ``i`` adds ``x[i] @ w[tap]`` to output position
    ``i * stride + tap * dilation``; ``crops`` ``(low, high)`` are then removed from each end of
    the full output of ``(n - 1) * stride + (k - 1) * dilation + 1`` positions (a negative high crop
    extends it with zeros).

    ``x`` is ``(N, *sizes, C)``, ``w`` ``(*kernel, C, F)``; returns ``(N, *out, F)``.
    """
    rank = x.ndim - 2
    kernel, (channels, features) = w.shape[:rank], w.shape[rank:]
    sizes = x.shape[1:-1]
    taps = math.prod(kernel)
    matrix = jnp.moveaxis(w.reshape(taps, channels, features), 0, 1)
    matrix = matrix.reshape(channels, taps * features)
    products = _matmul_last(x, matrix).reshape(*x.shape[:-1], taps, features)
    full = [(n - 1) * s + (k - 1) * d + 1
            for n, s, k, d in zip(sizes, strides, kernel, dilation, strict=True)]
    zero = jnp.zeros((), products.dtype)
    y = None
    for index, tap in enumerate(np.ndindex(*kernel)):
        config = [(0, 0, 0)]
        axes = zip(tap, dilation, sizes, strides, full, crops, strict=True)
        for t, d, n, s, length, (lo, hi) in axes:
            before = t * d
            after = length - before - (n - 1) * s - 1
            config.append((before - lo, after - hi, s - 1))
        config.append((0, 0, 0))
        placed = jax.lax.pad(products[..., index, :], zero, config)
        y = placed if y is None else y + placed
    return y
