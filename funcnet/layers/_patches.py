"""Convolutions as matrix products with the input's patches: XLA's CPU backend runs them faster.

* :func:`conv` computes the convolution, its gradient with respect to the input and its gradient
  with respect to the kernel, all as matrix products with the input's patches: for each tap of the
  kernel's leading axes, the strided slices of the last axis' taps are concatenated along the
  channels, ``(N * out, k_last * C)``, and multiplied by that part of the kernel. Inside a compiled
  loop (``fit``'s whole-epoch scan) XLA's CPU backend runs ``lax.conv_general_dilated`` and its
  gradients several times more slowly than these products, and in a single step somewhat more
  slowly. With at most :data:`FEW_CHANNELS` input channels (an image's), the products would be too
  thin to pay, and the values are a sum of the taps' slices scaled by the kernel instead. The
  derivatives are a custom JVP, so forward and reverse mode both work; the patches are recomputed
  in the backward pass (``jax.checkpoint``) rather than stored.
* :func:`depthwise` computes a depthwise convolution (as many groups as input channels) as a sum
  over the kernel's taps of the input's slices scaled by the kernel, element-wise; XLA's CPU
  backend runs the grouped ``lax.conv_general_dilated`` and its gradients tens of times more
  slowly.
* :func:`grouped` computes any other grouped convolution as one :func:`conv` per group (tens of
  times faster than the grouped ``lax.conv_general_dilated`` there too).
* :func:`conv_transpose` follows the scatter-add definition: one matrix product
  ``(N, *sizes, C) @ (C, taps * F)`` gives every tap's contribution, and each tap's slice is
  placed at ``i * stride + tap * dilation`` by an interior-padded ``lax.pad`` and summed, with no
  multiplication by the zeros of a dilated input.

All of them add the same products as the reference lowering in another order, so they agree with
it to float rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from funcnet.core import Array

Pads = tuple[tuple[int, int], ...]
Ints = tuple[int, ...]

#: Up to this many input channels, :func:`conv` sums scaled slices rather than multiplying
#: patches (measured on the CPU, 3x3 kernels: with 1-4 channels the sum is 1.5-12x faster, with 8
#: slower).
FEW_CHANNELS = 4


def _matmul_last(x: Array, w: Array) -> Array:
    """``x @ w`` over the last axis of ``x`` (any leading axes), as one 2-D matrix product (XLA's
    CPU backend runs a 2-D product much faster than the same product with more leading axes).

    The result is in at least float32, so that sums of such products lose no precision; callers
    cast the final sum back to ``x``'s dtype.
    """
    rows = x.reshape(-1, x.shape[-1])
    product = jnp.matmul(rows, w, preferred_element_type=_wide(x.dtype))
    return product.reshape(*x.shape[:-1], w.shape[-1])


def _wide(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype sums are computed in: ``dtype``, or float32 if it is narrower."""
    return jnp.promote_types(dtype, jnp.float32)


def _tap_slices(x: Array, taps: Ints, strides: Ints, pads: Pads,
                dilation: Ints) -> Iterator[tuple[tuple[int, ...], Array]]:
    """``(tap, slice)`` for every tap of the kernel in row-major order: the ``(N, *out, C)``
    positions of the padded ``x`` that the tap multiplies."""
    if any(lo or hi for lo, hi in pads):
        config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, d, s in zip(x.shape[1:-1], taps, dilation, strides, strict=True)]
    for tap in np.ndindex(*taps):
        start = [t * d for t, d in zip(tap, dilation, strict=True)]
        limit = [b + s * (o - 1) + 1 for b, s, o in zip(start, strides, out, strict=True)]
        yield tap, jax.lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]),
                                 (1, *strides, 1))


@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _patch_product(x: Array, kernel: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    """The convolution of ``x`` with ``kernel``, as a sum of matrix products with ``x``'s patches
    (one product per tap of the kernel's leading axes, over its last axis' taps and the channels).
    """
    rank = x.ndim - 2
    taps, (channels, features) = kernel.shape[:rank], kernel.shape[rank:]
    # In float32 (at least) from the start, so that the input gradient, the transpose of these
    # slices, also sums its pieces in float32.
    slices = list(_tap_slices(x.astype(_wide(x.dtype)), taps, strides, pads, dilation))
    y = None
    for first in range(0, len(slices), taps[-1]):
        group = [piece for _, piece in slices[first:first + taps[-1]]]
        patches = group[0] if len(group) == 1 else jnp.concatenate(group, axis=-1)
        lead = slices[first][0][:-1]
        part = _matmul_last(patches, kernel[lead].reshape(taps[-1] * channels, features))
        y = part if y is None else y + part
    return y.astype(x.dtype)


def _tap_sum(x: Array, taps: Ints, strides: Ints, pads: Pads, dilation: Ints,
             term: Callable[[tuple[int, ...], Array], Array]) -> Array:
    """``sum(term(tap, slice))`` over the kernel's taps (see :func:`_tap_slices`), in at least
    float32 (as a matrix product would sum), cast back to ``x``'s dtype."""
    y = None
    for tap, piece in _tap_slices(x.astype(_wide(x.dtype)), taps, strides, pads, dilation):
        part = term(tap, piece)
        y = part if y is None else y + part
    return y.astype(x.dtype)


def _scaled_sum(x: Array, kernel: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    """The same convolution as a sum over taps and channels of ``slice * kernel[tap, channel]``,
    for inputs with few channels."""
    rank = x.ndim - 2

    def term(tap: tuple[int, ...], piece: Array) -> Array:
        parts = (piece[..., c:c + 1] * kernel[(*tap, c)].astype(piece.dtype)
                 for c in range(kernel.shape[rank]))
        return functools.reduce(jnp.add, parts)

    return _tap_sum(x, kernel.shape[:rank], strides, pads, dilation, term)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv(x: Array, w: Array, strides: Ints, pads: Pads, dilation: Ints) -> Array:
    few = x.shape[-1] <= FEW_CHANNELS
    return (_scaled_sum if few else _patch_product)(x, w, strides, pads, dilation)


def _conv_jvp(strides: Ints, pads: Pads, dilation: Ints, primals: tuple,
              tangents: tuple) -> tuple[Array, Array]:
    """Both tangents go through :func:`_patch_product`, whose transposes are matrix products
    (the transpose of :func:`_scaled_sum` with respect to the input is slow on the CPU)."""
    (x, w), (x_dot, w_dot) = primals, tangents
    y = _conv(x, w, strides, pads, dilation)
    y_dot = None
    if not isinstance(x_dot, SymbolicZero):
        y_dot = _patch_product(x_dot, w, strides, pads, dilation)
    if not isinstance(w_dot, SymbolicZero):
        part = _patch_product(x, w_dot, strides, pads, dilation)
        y_dot = part if y_dot is None else y_dot + part
    return y, jnp.zeros_like(y) if y_dot is None else y_dot


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def conv(x: Array, w: Array, *, strides: Sequence[int], pads: Pads,
         dilation: Sequence[int]) -> Array:
    """The convolution of ``lax.conv_general_dilated`` over channels-last ``x`` with an
    ``(*kernel, C, F)`` kernel, as matrix products, or sums of scaled slices for few channels
    (see the module's docstring).

    ``x`` is ``(N, *sizes, C)``, ``pads`` explicit ``(low, high)`` pairs; returns
    ``(N, *out, F)``.
    """
    return _conv(x, w, tuple(strides), tuple(pads), tuple(dilation))


def depthwise(x: Array, w: Array, *, strides: Sequence[int], pads: Pads,
              dilation: Sequence[int]) -> Array:
    """The depthwise convolution of ``lax.conv_general_dilated`` with ``feature_group_count``
    equal to the channels: output channel ``c * m + j`` is input channel ``c`` convolved with
    kernel column ``c * m + j`` (``m = F // C``), summed over the taps in at least float32.

    ``x`` is ``(N, *sizes, C)``, ``w`` ``(*kernel, 1, F)``, ``pads`` explicit ``(low, high)``
    pairs; returns ``(N, *out, F)``. Differentiated by JAX as written: both gradients are
    element-wise too.
    """
    rank = x.ndim - 2
    multiplier = w.shape[-1] // x.shape[-1]

    def term(tap: tuple[int, ...], piece: Array) -> Array:
        if multiplier > 1:
            piece = jnp.repeat(piece, multiplier, axis=-1)
        return piece * w[tap][0].astype(piece.dtype)

    return _tap_sum(x, w.shape[:rank], strides, pads, dilation, term)


def grouped(x: Array, w: Array, *, groups: int, strides: Sequence[int], pads: Pads,
            dilation: Sequence[int]) -> Array:
    """The grouped convolution of ``lax.conv_general_dilated`` with ``feature_group_count=groups``:
    group ``g`` of the output channels is :func:`conv` of group ``g`` of the input channels.

    ``x`` is ``(N, *sizes, C)``, ``w`` ``(*kernel, C // groups, F)``; returns ``(N, *out, F)``.
    """
    channels, features = x.shape[-1] // groups, w.shape[-1] // groups
    parts = [conv(x[..., g * channels:(g + 1) * channels], w[..., g * features:(g + 1) * features],
                  strides=strides, pads=pads, dilation=dilation) for g in range(groups)]
    return jnp.concatenate(parts, axis=-1)


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
    return y.astype(x.dtype)
