"""Convolutions whose slow parts on XLA's CPU backend are written as matrix products.

* :func:`conv` computes the convolution, and its gradient with respect to the input, with
  ``lax.conv_general_dilated`` itself (XLA's CPU backend runs those well), but the gradient with
  respect to the kernel, which XLA's CPU backend computes several times more slowly than the
  forward pass, as matrix products with the input's patches: for each tap of the kernel's leading
  axes, the strided slices of the last axis' taps are concatenated along the channels,
  ``(N * out, k_last * C)``, and multiplied by the output's gradient. This is a custom JVP, so
  forward and reverse mode both work; the patches are recomputed in the backward pass
  (``jax.checkpoint``) rather than stored.
* :func:`conv_transpose` follows the scatter-add definition: one matrix product
  ``(N, *sizes, C) @ (C, taps * F)`` gives every tap's contribution, and each tap's slice is
  placed at ``i * stride + tap * dilation`` by an interior-padded ``lax.pad`` and summed, with no
  multiplication by the zeros of a dilated input.

The convolution's values and input gradient are bitwise those of the reference lowering; its
kernel gradient, and the transposed convolution, add the same products in another order, so they
agree with it to float rounding. Only ungrouped convolutions (``groups=1``) take this lowering.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from funcnet.core import Array
from funcnet.layers._spatial import conv_dimension_numbers

Pads = tuple[tuple[int, int], ...]
Ints = tuple[int, ...]


def _matmul_last(x: Array, w: Array) -> Array:
    """``x @ w`` over the last axis of ``x`` (any leading axes), as one 2-D matrix product (XLA's
    CPU backend runs a 2-D product much faster than the same product with more leading axes)."""
    rows = x.reshape(-1, x.shape[-1])
    return (rows @ w).reshape(*x.shape[:-1], w.shape[-1])


def _reference(x: Array, w: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    return jax.lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                        dimension_numbers=conv_dimension_numbers(x.ndim - 2))


@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _kernel_product(x: Array, kernel: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    """The convolution of ``x`` with ``kernel``, as a sum of matrix products with ``x``'s patches.

    It is linear in ``kernel``: its transpose, the kernel gradient, is a matrix product of each
    group of patches with the output's gradient.
    """
    rank = x.ndim - 2
    taps, (channels, features) = kernel.shape[:rank], kernel.shape[rank:]
    if any(lo or hi for lo, hi in pads):
        config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    sizes = x.shape[1:-1]
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, d, s in zip(sizes, taps, dilation, strides, strict=True)]
    y = None
    for lead in np.ndindex(*taps[:-1]):
        columns = []
        for last in range(taps[-1]):
            start = [t * d for t, d in zip((*lead, last), dilation, strict=True)]
            limit = [b + s * (o - 1) + 1 for b, s, o in zip(start, strides, out, strict=True)]
            columns.append(jax.lax.slice(x, (0, *start, 0), (x.shape[0], *limit, channels),
                                         (1, *strides, 1)))
        patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
        part = _matmul_last(patches, kernel[lead].reshape(taps[-1] * channels, features))
        y = part if y is None else y + part
    return y


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv(x: Array, w: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    return _reference(x, w, strides, pads, dilation)


def _conv_jvp(strides: Ints, pads: Pads, dilation: Ints, primals: tuple,
              tangents: tuple) -> tuple[Array, Array]:
    (x, w), (x_dot, w_dot) = primals, tangents
    y = _reference(x, w, strides, pads, dilation)
    y_dot = None
    if not isinstance(x_dot, SymbolicZero):
        y_dot = _reference(x_dot, w, strides, pads, dilation)
    if not isinstance(w_dot, SymbolicZero):
        part = _kernel_product(x, w_dot, strides, pads, dilation)
        y_dot = part if y_dot is None else y_dot + part
    return y, jnp.zeros_like(y) if y_dot is None else y_dot


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def conv(x: Array, w: Array, *, strides: Sequence[int], pads: Pads,
         dilation: Sequence[int]) -> Array:
    """``lax.conv_general_dilated`` over channels-last ``x`` with an ``(*kernel, C, F)`` kernel,
    with a faster kernel gradient (see the module's docstring).

    ``x`` is ``(N, *sizes, C)``, ``pads`` explicit ``(low, high)`` pairs; returns
    ``(N, *out, F)``.
    """
    return _conv(x, w, tuple(strides), tuple(pads), tuple(dilation))


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
