"""Pooling over non-overlapping windows as a reduction over a reshaped view: the fast lowering.

When every stride is at least the window's size, each input position lies in at most one window,
so the input can be padded (or cropped) to ``out * stride`` positions per axis and reshaped to
``(N, out_1, stride_1, ..., out_r, stride_r, C)``; the first ``window_i`` entries of each block
axis are the window. XLA's CPU backend reduces such a view, and differentiates the reduction, much
faster than ``lax.reduce_window`` and its ``select_and_scatter`` gradient.

Results equal the reference lowering's (see :mod:`funcnet.layers._lowering`):

* max: the same values; the gradient (and the forward-mode derivative) of each window goes to its
  first maximal element in row-major window order, padded positions included, which is what
  ``reduce_window``'s gradient does. (A window holding a NaN has a NaN maximum in both lowerings;
  its gradient is not specified.)
* average: the sum over each window divided by the number of real (not padded) values, as Keras
  does. XLA chooses the order of the additions in both lowerings, so they agree to float rounding;
  on the CPU (jaxlib 0.10.2) the sums come out bitwise equal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Array

Pads = tuple[tuple[int, int], ...]


def applies(window: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether the windows do not overlap, so that this lowering applies."""
    return all(s >= k for k, s in zip(window, strides, strict=True))


def _view(x: Array, window: Sequence[int], strides: Sequence[int], pads: Pads, out: Sequence[int],
          fill: float) -> Array:
    """The windows of ``x``: ``(N, *sizes, C) -> (N, out_1, window_1, ..., window_r, C)``.

    Padded positions hold ``fill``.
    """
    sizes = x.shape[1:-1]
    # Pad low as asked, and high (or crop: lax.pad takes negative pads) to out * stride positions;
    # positions past the last window's end are cut off below with the block's tail.
    config = [(0, 0, 0)]
    config += [(lo, o * s - n - lo, 0)
               for n, (lo, _), o, s in zip(sizes, pads, out, strides, strict=True)]
    config += [(0, 0, 0)]
    if any(lo or hi for lo, hi, _ in config):
        x = jax.lax.pad(x, jnp.array(fill, x.dtype), config)
    blocks = [d for o, s in zip(out, strides, strict=True) for d in (o, s)]
    view = x.reshape(x.shape[0], *blocks, x.shape[-1])
    if any(s > k for k, s in zip(window, strides, strict=True)):
        keep = (i for k in window for i in (slice(None), slice(0, k)))
        view = view[(slice(None), *keep, slice(None))]
    return view


def _window_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(2, 2 * rank + 1, 2))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def first_max(view: Array, axes: tuple[int, ...]) -> Array:
    """The maximum of ``view`` over ``axes`` (``jnp.max``), with the derivative of each result
    flowing through its first maximal element in row-major order over ``axes`` (``jnp.max``'s
    splits it evenly between ties)."""
    return jnp.max(view, axis=axes)


@first_max.defjvp
def _first_max_jvp(axes: tuple[int, ...], primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    """The derivative flows through the first maximal element of each window (row-major order)."""
    (view,), (tangent,) = primals, tangents
    top = jnp.max(view, axis=axes)
    first = jnp.expand_dims(_first_maximum(view, top, axes), axes)
    picked = jnp.where(_window_index(view, axes) == first, tangent, jnp.zeros((), tangent.dtype))
    return top, jnp.sum(picked, axis=axes)


def _window_index(view: Array, axes: tuple[int, ...]) -> Array:
    """Each element's row-major index within its window, broadcastable against ``view``."""
    index = jnp.zeros((1,) * view.ndim, jnp.int32)
    for axis in axes:
        shape = [1] * view.ndim
        shape[axis] = view.shape[axis]
        index = index * view.shape[axis] + jax.lax.broadcasted_iota(jnp.int32, shape, axis)
    return index


#: Windows of up to this many elements find their first maximum by comparing each element in turn
#: (measured on 2x2 windows after a convolution and a ReLU, batch 128, 2 CPU cores: their gradient
#: 1.8x faster than with the reduction); larger windows use the reduction, a smaller program.
_UNROLLED_WINDOW = 16


def _first_maximum(view: Array, top: Array, axes: tuple[int, ...]) -> Array:
    """The row-major index, within its window, of each window's first element equal to ``top``
    (the last index where none is: a window holding a NaN).

    Small windows compare their elements one by one, from the last to the first, in one
    element-wise pass that XLA's CPU backend runs faster than the equivalent reduction (see
    :data:`_UNROLLED_WINDOW`); larger windows take the minimum over a reduction.
    """
    sizes = [view.shape[a] for a in axes]
    count = math.prod(sizes)
    if count > _UNROLLED_WINDOW:
        equal = view == jnp.expand_dims(top, axes)
        return jnp.min(jnp.where(equal, _window_index(view, axes), count - 1), axis=axes)
    first = jnp.full(top.shape, count - 1, jnp.int32)
    for k in range(count - 2, -1, -1):
        element = [slice(None)] * view.ndim
        for axis, i in zip(axes, np.unravel_index(k, sizes), strict=True):
            element[axis] = int(i)
        first = jnp.where(view[tuple(element)] == top, k, first)
    return first


def _counts(sizes: Sequence[int], window: Sequence[int], strides: Sequence[int], pads: Pads,
            out: Sequence[int]) -> np.ndarray:
    """The number of real (not padded) positions in each window, shape ``(1, *out, 1)``."""
    counts = np.ones((1,) * (len(sizes) + 2))
    axes = zip(sizes, window, strides, pads, out, strict=True)
    for axis, (n, k, s, (lo, _), o) in enumerate(axes):
        starts = np.arange(o) * s - lo
        real = np.minimum(starts + k, n) - np.maximum(starts, 0)
        shape = [1] * counts.ndim
        shape[axis + 1] = o
        counts = counts * real.reshape(shape)
    return counts


def pool(x: Array, *, window: tuple[int, ...], strides: tuple[int, ...], pads: Pads,
         average: bool) -> Array:
    """Max or average pooling of ``x`` ``(N, *sizes, C)`` over non-overlapping windows.

    Requires :func:`applies`; ``pads`` are the explicit ``(low, high)`` pads of each spatial axis
    (see :func:`funcnet.layers._spatial.window_pads`). Returns ``(N, *out, C)``.
    """
    sizes = x.shape[1:-1]
    out = tuple((n + lo + hi - k) // s + 1
                for n, (lo, hi), k, s in zip(sizes, pads, window, strides, strict=True))
    axes = _window_axes(len(window))
    if not average:
        return first_max(_view(x, window, strides, pads, out, -np.inf), axes)
    sums = jnp.sum(_view(x, window, strides, pads, out, 0), axis=axes)
    if not any(lo or hi for lo, hi in pads):
        return sums / math.prod(window)
    return sums / _counts(sizes, window, strides, pads, out).astype(x.dtype)
