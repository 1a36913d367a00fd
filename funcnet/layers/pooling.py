"""Max and average pooling over channels-last inputs (1-D to 3-D), and global pooling.

Pooling layers have no params or state and keep the channels. Window sizes and padding follow
Keras (see :mod:`funcnet.layers._spatial`); ``strides`` default to ``pool_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ShapeError,
    State,
    array_spec,
    check_floating,
    format_shape,
    spec,
)
from funcnet.layers import _windows
from funcnet.layers._lowering import by_platform
from funcnet.layers._spatial import int_tuple, normalize_padding, spatial_sizes, window_pads

IntOrTuple = int | Sequence[int]


@partial(jax.jit, static_argnames=("window", "strides", "pads", "average"))
def _pool(x: Array, *, window: tuple[int, ...], strides: tuple[int, ...],
          pads: tuple[tuple[int, int], ...], average: bool) -> Array:
    """Max or mean over each window of the real (not padded) values, compiled as one.

    Non-overlapping windows take the lowering that :func:`funcnet.layers._lowering.by_platform`
    chooses (the fast one is :mod:`funcnet.layers._windows`); overlapping ones the reference.
    """
    config = {"window": window, "strides": strides, "pads": pads, "average": average}
    if _windows.applies(window, strides):
        return by_platform(partial(_windows.pool, **config), partial(_reference_pool, **config), x)
    return _reference_pool(x, **config)


def _reference_pool(x: Array, *, window: tuple[int, ...], strides: tuple[int, ...],
                    pads: tuple[tuple[int, int], ...], average: bool) -> Array:
    """Pooling as ``lax.reduce_window``."""
    dims, steps, pads = (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    if not average:
        return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, dims, steps, pads)
    sums = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, dims, steps, pads)
    if not any(lo or hi for lo, hi in pads):
        return sums / math.prod(window)
    # Divide by the number of real (not padded) values in each window, as Keras does.
    ones = np.ones((1, *x.shape[1:-1], 1), x.dtype)
    counts = jax.lax.reduce_window(ones, np.array(0, x.dtype), jax.lax.add, dims, steps, pads)
    return sums / counts


def _pool_nd(rank: int, average: bool, kind: str, pool_size: IntOrTuple, strides: IntOrTuple | None,
             padding: str, name: str | None) -> Layer:
    """The N-D max (``average=False``) or average pooling behind the constructors below."""
    window = int_tuple(pool_size, rank, "pool_size", kind)
    strides = window if strides is None else int_tuple(strides, rank, "strides", kind)
    padding = normalize_padding(padding, rank, kind, explicit=False)
    no_dilation = (1,) * rank

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        sizes, channels = spatial_sizes(input_shape, rank, kind)
        _, out = window_pads(sizes, window, strides, no_dilation, padding, "pool_size")
        return spec((None, *out, channels), x_spec.dtype), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, key, train, context
        check_floating(x)
        sizes, _ = spatial_sizes(tuple(x.shape), rank, kind)
        pads, _ = window_pads(sizes, window, strides, no_dilation, padding, "pool_size")
        return _pool(x, window=window, strides=strides, pads=pads, average=average), state

    config = {"pool_size": list(window), "strides": list(strides), "padding": padding}
    return Layer(init, apply, kind, config, (), name)


def MaxPool2D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """The maximum over each window of an image; padded positions never win.

    The gradient of a window goes to its first maximal element in row-major window order. On the
    CPU non-overlapping windows (``strides >= pool_size``) are reduced over a reshaped view
    (faster on XLA's CPU backend, bitwise the same values and gradients), elsewhere by
    ``lax.reduce_window``; :func:`funcnet.layers.set_lowering` overrides the choice.

    Args:
        pool_size: the window's size, an int (the same on every spatial axis) or one per axis.
        strides: the step between windows, likewise; None (the default) means ``pool_size``.
        padding: ``"VALID"`` (windows inside the input: ``(n - k) // stride + 1`` outputs) or
            ``"SAME"`` (``ceil(n / stride)`` outputs), case-insensitive.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, H, W, C) -> (N, H', W', C)``. No params or state.

    Raises:
        ValueError: for bad configuration; :class:`~funcnet.ShapeError` for an input of another
            rank, or a window larger than the input with ``"VALID"``.
    """
    return _pool_nd(2, False, "MaxPool2D", pool_size, strides, padding, name)


def MaxPool1D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """Max pooling over sequences, ``(N, L, C) -> (N, L', C)``; see :func:`MaxPool2D`."""
    return _pool_nd(1, False, "MaxPool1D", pool_size, strides, padding, name)


def MaxPool3D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """Max pooling over volumes, ``(N, D, H, W, C) -> (N, D', H', W', C)``; arguments as for
    :func:`MaxPool2D`."""
    return _pool_nd(3, False, "MaxPool3D", pool_size, strides, padding, name)


def AvgPool2D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """The mean over each window of an image.

    With ``"SAME"`` padding a window at the border averages only the real values it covers (the
    padding is not counted), as in Keras. Arguments, shapes and errors as for :func:`MaxPool2D`.
    """
    return _pool_nd(2, True, "AvgPool2D", pool_size, strides, padding, name)


def AvgPool1D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """Average pooling over sequences, ``(N, L, C) -> (N, L', C)``; see :func:`AvgPool2D`."""
    return _pool_nd(1, True, "AvgPool1D", pool_size, strides, padding, name)


def AvgPool3D(
    pool_size: IntOrTuple = 2,
    strides: IntOrTuple | None = None,
    padding: str = "VALID",
    name: str | None = None,
) -> Layer:
    """Average pooling over volumes, ``(N, D, H, W, C) -> (N, D', H', W', C)``; see
    :func:`AvgPool2D`."""
    return _pool_nd(3, True, "AvgPool3D", pool_size, strides, padding, name)


def _global_pool(kind: str, reduce: Callable[..., Array], name: str | None) -> Layer:
    def check(shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) < 3:
            raise ShapeError(f"{kind} expects inputs of shape (batch, *spatial, channels) with at "
                             f"least one spatial axis, got {format_shape(shape)}.")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        check(input_shape)
        return spec((None, input_shape[-1]), x_spec.dtype), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, key, train, context
        check_floating(x)
        check(tuple(x.shape))
        return reduce(x, tuple(range(1, x.ndim - 1))), state

    return Layer(init, apply, kind, {}, (), name)


def GlobalAvgPool(name: str | None = None) -> Layer:
    """The mean over every spatial axis: ``(N, *spatial, C) -> (N, C)``, for any number of
    spatial axes."""
    return _global_pool("GlobalAvgPool", jnp.mean, name)


def GlobalMaxPool(name: str | None = None) -> Layer:
    """The maximum over every spatial axis: ``(N, *spatial, C) -> (N, C)``, for any number of
    spatial axes.

    As in :func:`MaxPool2D`, the gradient of tied maxima goes to the first of them in row-major
    order over the spatial axes (bitwise what ``MaxPool2D`` with a window the size of the input
    gives), not split between them.
    """
    return _global_pool("GlobalMaxPool", _windows.first_max, name)
