"""Shared by the sliding-window layers (convolutions and pooling): argument normalisation,
input layout checks, padding and output sizes, for any number of spatial axes.

Padding follows Keras / TensorFlow. For a window of size ``k`` with dilation ``d`` (effective size
``dk = (k - 1) * d + 1``) and stride ``s`` over ``n`` positions:

* ``"VALID"``: no padding; ``out = (n - dk) // s + 1``.
* ``"SAME"``: ``out = ceil(n / s)``; the ``max((out - 1) * s + dk - n, 0)`` padded positions are
  split with the smaller half (``total // 2``) before the data and the rest after it.
* explicit ``(low, high)``: ``out = (n + low + high - dk) // s + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from funcnet.core import Shape, ShapeError, format_shape

Pads = tuple[tuple[int, int], ...]
Padding = str | Pads

_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def layout(rank: int) -> str:
    """The channels-last layout of an input with ``rank`` spatial axes, in words."""
    return "(batch, " + ", ".join(_AXES[rank]) + ", channels)"


def conv_dimension_numbers(rank: int) -> tuple[str, str, str]:
    """``lax.conv_general_dilated``'s layout strings for channels-last inputs and HWIO kernels."""
    spatial = "DHW"[-rank:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_tuple(value: Any, rank: int, argument: str, kind: str) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``rank`` ints) as a tuple of ``rank`` positive ints."""
    values = (value,) * rank if _is_int(value) else value
    if (not isinstance(values, Sequence) or isinstance(values, str) or len(values) != rank
            or not all(_is_int(v) and v > 0 for v in values)):
        raise ValueError(f"{kind}: `{argument}` must be a positive integer or a sequence of {rank} "
                         f"positive integers, got {value!r}.")
    return tuple(values)


def normalize_padding(padding: Any, rank: int, kind: str, *, explicit: bool = True) -> Padding:
    """``"SAME"`` / ``"VALID"`` (any case), or, if ``explicit``, ``rank`` (low, high) pairs."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    if explicit:
        if _is_int(padding) and padding >= 0:
            return ((padding, padding),) * rank
        def is_pair(p: Any) -> bool:
            return isinstance(p, Sequence) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p)

        if (isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == rank
                and all(is_pair(p) for p in padding)):
            return tuple((lo, hi) for lo, hi in padding)
    allowed = "'SAME' or 'VALID' (in any case)"
    if explicit:
        allowed = (f"'SAME', 'VALID' (in any case), a non-negative integer, or a sequence of "
                   f"{rank} (low, high) pairs of non-negative integers, one per spatial axis")
    raise ValueError(f"{kind}: `padding` must be {allowed}, got {padding!r}.")


def spatial_sizes(input_shape: Any, rank: int, kind: str) -> tuple[tuple[int, ...], int]:
    """Checks a channels-last input shape; returns ``(spatial sizes, channels)``."""
    if (not isinstance(input_shape, tuple) or len(input_shape) != rank + 2
            or not all(_is_int(d) and d > 0 for d in input_shape[1:])):
        hint = None
        if isinstance(input_shape, tuple) and len(input_shape) == rank + 1:
            hint = (f"add a channels axis, for example Reshape({tuple(input_shape[1:]) + (1,)}) "
                    "for single-channel data.")
        raise ShapeError(f"{kind} expects inputs of shape {layout(rank)} (rank {rank + 2}, sizes "
                         f"known past the batch), got {format_shape(input_shape)}.", hint=hint)
    return tuple(input_shape[1:-1]), input_shape[-1]


def _dilated(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    return tuple((k - 1) * d + 1 for k, d in zip(window, dilation, strict=True))


def window_pads(sizes: Sequence[int], window: Sequence[int], strides: Sequence[int],
                dilation: Sequence[int], padding: Padding, argument: str) -> tuple[Pads, Shape]:
    """The explicit ``(low, high)`` pads and the output sizes of a sliding window.

    Raises:
        ShapeError: if the (dilated) window is larger than the padded input.
    """
    effective = _dilated(window, dilation)
    if padding == "VALID":
        pads = tuple((0, 0) for _ in sizes)
    elif padding == "SAME":
        totals = [max((math.ceil(n / s) - 1) * s + dk - n, 0)
                  for n, s, dk in zip(sizes, strides, effective, strict=True)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple(padding)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(sizes, pads, strict=True))
    if any(p < dk for p, dk in zip(padded, effective, strict=True)):
        dilated = ""
        if any(d > 1 for d in dilation):
            dilated = f" ({effective} after dilation {tuple(dilation)})"
        raise ShapeError(
            f"{argument}={tuple(window)}{dilated} is larger than the spatial input size "
            f"{tuple(sizes)}" + (f" padded to {padded}" if padded != tuple(sizes) else "") + ".",
            hint=f"use a smaller {argument}, padding='SAME', or a larger input.",
        )
    out = tuple((p - dk) // s + 1 for p, dk, s in zip(padded, effective, strides, strict=True))
    return pads, out


def transpose_crops(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    dilation: Sequence[int], padding: Padding) -> tuple[Pads, Shape]:
    """How much a transposed convolution crops from each end of its full output; its output size.

    The full (uncropped) output of the scatter-add has ``(n - 1) * s + dk`` positions. As in Keras,
    ``"VALID"`` gives ``n * s + max(dk - s, 0)`` (so a negative high crop pads zeros when the kernel
    is shorter than the stride) and ``"SAME"`` gives ``n * s``, cropping ``max(dk - s, 0) // 2`` at
    the start; explicit ``(low, high)`` pairs crop that many positions from each end.

    Raises:
        ShapeError: if explicit crops leave no output.
    """
    effective = _dilated(kernel, dilation)
    if padding == "VALID":
        crops = [(0, min(dk - s, 0)) for s, dk in zip(strides, effective, strict=True)]
    elif padding == "SAME":
        lows = [max(dk - s, 0) // 2 for s, dk in zip(strides, effective, strict=True)]
        crops = [(lo, dk - s - lo) for lo, s, dk in zip(lows, strides, effective, strict=True)]
    else:
        crops = list(padding)
    out = tuple((n - 1) * s + dk - lo - hi
                for n, s, dk, (lo, hi) in zip(sizes, strides, effective, crops, strict=True))
    if any(o < 1 for o in out):
        raise ShapeError(f"padding {tuple(crops)} crops the whole output of the transposed "
                         f"convolution of spatial input {tuple(sizes)} (it would have size {out}).",
                         hint="use smaller explicit padding, or 'SAME' / 'VALID'.")
    return tuple(crops), out
