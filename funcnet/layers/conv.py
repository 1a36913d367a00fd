"""Convolutions and transposed convolutions over channels-last inputs, 1-D to 3-D.

The six constructors are thin wrappers over one N-D implementation; padding and output sizes are
defined in :mod:`funcnet.layers._spatial` (Keras' rules).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Initializer,
    Key,
    Layer,
    Params,
    ShapeError,
    State,
    array_spec,
    as_compute,
    check_callable,
    check_floating,
    check_input_shape,
    check_positive,
    get_params,
    spec,
)
from funcnet.layers import _patches
from funcnet.layers._lowering import by_platform
from funcnet.layers._spatial import (
    conv_dimension_numbers,
    int_tuple,
    normalize_padding,
    spatial_sizes,
    transpose_crops,
    window_pads,
)
from funcnet.layers.activations import resolve_activation

glorot_uniform = jax.nn.initializers.glorot_uniform()
zeros = jax.nn.initializers.zeros

IntOrTuple = int | Sequence[int]
Ints = tuple[int, ...]
Pads = tuple[tuple[int, int], ...]
PaddingArg = str | int | Sequence[tuple[int, int]]


@partial(jax.jit, static_argnames=("transpose", "strides", "pads", "dilation", "groups",
                                   "activation"))
def _convolve(x: Array, w: Array, b: Array | None, *, transpose: bool, strides: Ints, pads: Pads,
              dilation: Ints, groups: int, activation: Callable[[Array], Array]) -> Array:
    """``activation(conv(x, w) + b)`` in ``x``'s dtype, compiled as one (eager calls stay fast;
    inside an outer ``jit`` it is inlined).

    For a transposed convolution ``pads`` are the crops of its full output (see
    :func:`funcnet.layers._spatial.transpose_crops`). The convolution takes the lowering that
    :func:`funcnet.layers._lowering.by_platform` chooses.
    """
    w = as_compute(w, x)
    config = {"transpose": transpose, "strides": strides, "pads": pads, "dilation": dilation,
              "groups": groups}
    y = by_platform(partial(_fast_convolution, **config), partial(_reference_convolution, **config),
                    x, w)
    if b is not None:
        y = y + as_compute(b, x)
    return activation(y)


def _fast_convolution(x: Array, w: Array, *, transpose: bool, strides: Ints, pads: Pads,
                      dilation: Ints, groups: int) -> Array:
    """The convolution in the fast lowering of :mod:`funcnet.layers._patches`."""
    if groups == 1:
        if transpose:
            return _patches.conv_transpose(x, w, strides=strides, crops=pads, dilation=dilation)
        return _patches.conv(x, w, strides=strides, pads=pads, dilation=dilation)
    if groups == x.shape[-1]:  # depthwise (transposed convolutions have groups=1)
        return _patches.depthwise(x, w, strides=strides, pads=pads, dilation=dilation)
    return _patches.grouped(x, w, groups=groups, strides=strides, pads=pads, dilation=dilation)


def _reference_convolution(x: Array, w: Array, *, transpose: bool, strides: Ints, pads: Pads,
                           dilation: Ints, groups: int) -> Array:
    """The convolution as ``lax.conv_general_dilated``."""
    rank = x.ndim - 2
    if transpose:
        # Scatter-add definition, as a stride-1 convolution over the input dilated by `strides`
        # with the spatially flipped kernel; a crop of c positions is dk - 1 - c of padding.
        effective = ((k - 1) * d + 1 for k, d in zip(w.shape[:rank], dilation, strict=True))
        conv_pads = tuple((dk - 1 - lo, dk - 1 - hi)
                          for dk, (lo, hi) in zip(effective, pads, strict=True))
        return jax.lax.conv_general_dilated(x, jnp.flip(w, tuple(range(rank))), (1,) * rank,
                                            conv_pads, lhs_dilation=strides, rhs_dilation=dilation,
                                            dimension_numbers=conv_dimension_numbers(rank))
    return jax.lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                        feature_group_count=groups,
                                        dimension_numbers=conv_dimension_numbers(rank))


def _conv_nd(rank: int, transpose: bool, kind: str, filters: int, kernel_size: IntOrTuple,
             strides: IntOrTuple, padding: PaddingArg, dilation: IntOrTuple, groups: int,
             activation: str | Callable | None, use_bias: bool, w_init: Initializer,
             b_init: Initializer, name: str | None) -> Layer:
    """The N-D (transposed) convolution behind every constructor in this module."""
    check_callable(w_init, "w_init", kind)
    check_callable(b_init, "b_init", kind)
    check_positive(filters, "filters", kind)
    check_positive(groups, "groups", kind)
    kernel = int_tuple(kernel_size, rank, "kernel_size", kind)
    strides = int_tuple(strides, rank, "strides", kind)
    dilation = int_tuple(dilation, rank, "dilation", kind)
    padding = normalize_padding(padding, rank, kind)
    if filters % groups:
        raise ValueError(f"{kind}: `groups`={groups} must divide `filters`={filters}.")
    if transpose and isinstance(padding, tuple):
        limits = tuple((k - 1) * d for k, d in zip(kernel, dilation, strict=True))
        if any(max(pair) > limit for pair, limit in zip(padding, limits, strict=True)):
            raise ValueError(f"{kind}: explicit `padding` {padding} crops the output and must "
                             f"be at most (kernel_size - 1) * dilation = {limits} per axis.")
    act, act_name = resolve_activation(activation, kind)
    names = ("w", "b") if use_bias else ("w",)

    def output_sizes(sizes: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """``(pads or crops, output sizes)`` for spatial input ``sizes``; raises ShapeError."""
        if transpose:
            return transpose_crops(sizes, kernel, strides, dilation, padding)
        return window_pads(sizes, kernel, strides, dilation, padding, "kernel_size")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        sizes, channels = spatial_sizes(input_shape, rank, kind)
        if channels % groups:
            raise ShapeError(f"the input's {channels} channels cannot be split into "
                             f"groups={groups}: both channels and filters must be divisible by "
                             "groups.")
        _, out = output_sizes(sizes)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, kernel + (channels // groups, filters), jnp.float32)}
        if use_bias:
            params["b"] = b_init(b_key, (filters,), jnp.float32)
        return spec((None, *out, filters), x_spec.dtype), params, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        weights = get_params(params, names)
        w = weights[0]
        check_floating(x)
        sizes, _ = spatial_sizes(tuple(x.shape), rank, kind)
        check_input_shape(x, (None, *sizes, w.shape[-2] * groups), f"w has shape {tuple(w.shape)}")
        pads, _ = output_sizes(sizes)
        y = _convolve(x, w, weights[1] if use_bias else None, transpose=transpose,
                      strides=strides, pads=pads, dilation=dilation, groups=groups,
                      activation=act)
        return y, state

    config = {"filters": filters, "kernel_size": list(kernel), "strides": list(strides),
              "padding": padding if isinstance(padding, str) else [list(p) for p in padding],
              "dilation": list(dilation), "activation": act_name, "use_bias": use_bias}
    if not transpose:
        config["groups"] = groups
    return Layer(init, apply, kind, config, (), name)


def Conv2D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 2-D convolution over images: ``y = activation(conv(x, w) + b)``.

    On the CPU the convolution and both its gradients run as matrix products with the input's
    patches (faster on XLA's CPU backend, equal to float rounding), elsewhere as
    ``lax.conv_general_dilated``; :func:`funcnet.layers.set_lowering` overrides the choice.

    Args:
        filters: number of output channels.
        kernel_size: the window's size, an int (the same on every spatial axis) or one int per
            spatial axis.
        strides: the step between windows, an int or one per spatial axis.
        padding: ``"VALID"`` (no padding), ``"SAME"`` (output size ``ceil(n / stride)``, Keras'
            split: the smaller half before the data), an int (the same number of zeros on every
            side) or one ``(low, high)`` pair per spatial axis. Case-insensitive.
        dilation: the spacing between kernel taps (atrous convolution), an int or one per axis.
        groups: feature groups: input channels and ``filters`` are split into ``groups`` groups
            and group ``g`` of the output sees only group ``g`` of the input (``groups`` equal to
            the input channels gives a depthwise convolution).
        activation: applied to the output: a name (see ``ACTIVATIONS``), a function or None.
        use_bias: whether to add ``b``.
        w_init, b_init: initializers from ``jax.nn.initializers`` (Glorot uniform, zeros).
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, H, W, C) -> (N, H', W', filters)``; per axis, with ``dk = (k - 1) * dilation + 1``:
        ``VALID``: ``(n - dk) // stride + 1``; ``SAME``: ``ceil(n / stride)``; explicit:
        ``(n + low + high - dk) // stride + 1``.

    Params:
        ``{"w": (kh, kw, C // groups, filters), "b": (filters,)}``.

    Raises:
        ValueError: for bad configuration; :class:`~funcnet.ShapeError` at init for an input of
            another rank, channels not divisible by ``groups`` or a kernel larger than the padded
            input, and at apply for an input with other channels than ``w`` was built for.
    """
    return _conv_nd(2, False, "Conv2D", filters, kernel_size, strides, padding, dilation,
                    groups, activation, use_bias, w_init, b_init, name)


def Conv1D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 1-D convolution over sequences; arguments as for :func:`Conv2D`.

    Shapes:
        ``(N, L, C) -> (N, L', filters)``, ``L'`` as in :func:`Conv2D`.

    Params:
        ``{"w": (k, C // groups, filters), "b": (filters,)}``.
    """
    return _conv_nd(1, False, "Conv1D", filters, kernel_size, strides, padding, dilation,
                    groups, activation, use_bias, w_init, b_init, name)


def Conv3D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 3-D convolution over volumes; arguments as for :func:`Conv2D`.

    Shapes:
        ``(N, D, H, W, C) -> (N, D', H', W', filters)``, sizes as in :func:`Conv2D`.

    Params:
        ``{"w": (kd, kh, kw, C // groups, filters), "b": (filters,)}``.
    """
    return _conv_nd(3, False, "Conv3D", filters, kernel_size, strides, padding, dilation,
                    groups, activation, use_bias, w_init, b_init, name)


def ConvTranspose2D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 2-D transposed convolution (the adjoint of :func:`Conv2D`; upsamples by ``strides``).

    Each input position ``i`` adds ``x[i] @ w[j]`` to output position ``i * stride + j * dilation``
    for every kernel tap ``j``; padding then crops that full output of ``(n - 1) * stride + dk``
    positions (``dk = (k - 1) * dilation + 1``), as Keras' ``Conv2DTranspose`` does.

    Args:
        filters: number of output channels.
        kernel_size, strides, dilation: an int or one int per spatial axis.
        padding: ``"VALID"``: output ``n * stride + max(dk - stride, 0)``, that is
            ``(n - 1) * stride + dk`` unless the kernel is shorter than the stride;
            ``"SAME"``: output ``n * stride``; an int or one ``(low, high)`` pair per axis: that
            many positions cropped from each end of the full output (PyTorch's ``padding``), each
            at most ``(k - 1) * dilation``. Case-insensitive.
        activation, use_bias, w_init, b_init, name: as for :func:`Conv2D`.

    Shapes:
        ``(N, H, W, C) -> (N, H', W', filters)``.

    Params:
        ``{"w": (kh, kw, C, filters), "b": (filters,)}``: the same kernel layout as
        :func:`Conv2D` (Keras stores ``(kh, kw, filters, C)``).
    """
    return _conv_nd(2, True, "ConvTranspose2D", filters, kernel_size, strides, padding, dilation,
                    1, activation, use_bias, w_init, b_init, name)


def ConvTranspose1D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 1-D transposed convolution; arguments and sizes as for :func:`ConvTranspose2D`.

    Shapes:
        ``(N, L, C) -> (N, L', filters)``.

    Params:
        ``{"w": (k, C, filters), "b": (filters,)}``.
    """
    return _conv_nd(1, True, "ConvTranspose1D", filters, kernel_size, strides, padding, dilation,
                    1, activation, use_bias, w_init, b_init, name)


def ConvTranspose3D(
    filters: int,
    kernel_size: IntOrTuple,
    *,
    strides: IntOrTuple = 1,
    padding: PaddingArg = "VALID",
    dilation: IntOrTuple = 1,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    name: str | None = None,
) -> Layer:
    """A 3-D transposed convolution; arguments and sizes as for :func:`ConvTranspose2D`.

    Shapes:
        ``(N, D, H, W, C) -> (N, D', H', W', filters)``.

    Params:
        ``{"w": (kd, kh, kw, C, filters), "b": (filters,)}``.
    """
    return _conv_nd(3, True, "ConvTranspose3D", filters, kernel_size, strides, padding, dilation,
                    1, activation, use_bias, w_init, b_init, name)
