"""Layers that only move data: Flatten, Reshape, Identity."""

from __future__ import annotations

import math
from typing import Any

from funcnet.core import Array, Context, Key, Layer, Params, ShapeError, State, array_spec, as_spec, format_shape, spec


def _shape_layer(kind: str, config: dict, name: str | None, out_shape) -> Layer:
    """A parameter-free layer that reshapes each example to ``out_shape(input_shape)[1:]``."""

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec)
        if any(d is None for d in x_spec.shape[1:]):
            raise ShapeError(f"needs every size past the batch axis, got {format_shape(x_spec.shape)}.")
        return spec(out_shape(x_spec.shape), x_spec.dtype), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, key, train, context
        target = out_shape(tuple(x.shape))
        return x.reshape((x.shape[0],) + tuple(target[1:])), state

    return Layer(init, apply, kind, config, (), name)


def Flatten(name: str | None = None) -> Layer:
    """Flattens each example: ``(N, d1, ..., dk) -> (N, d1 * ... * dk)``."""
    return _shape_layer("Flatten", {}, name, lambda shape: (shape[0], math.prod(shape[1:])))


def Reshape(shape: tuple[int, ...], name: str | None = None) -> Layer:
    """Reshapes each example to ``shape`` (one entry may be -1): ``(N, ...) -> (N, *shape)``."""
    shape = tuple(shape)
    if not shape or sum(d == -1 for d in shape) > 1 or any(
        not isinstance(d, int) or (d < 1 and d != -1) for d in shape
    ):
        raise ValueError(f"Reshape: `shape` must hold positive integers and at most one -1, got {shape!r}.")

    def out_shape(input_shape: tuple) -> tuple:
        size, known = math.prod(input_shape[1:]), math.prod(d for d in shape if d != -1)
        target = tuple(size // known if d == -1 else d for d in shape)
        if math.prod(target) != size:
            raise ShapeError(f"cannot reshape examples of shape {input_shape[1:]} ({size} values) "
                             f"into {shape}.")
        return (input_shape[0],) + target

    return _shape_layer("Reshape", {"shape": list(shape)}, name, out_shape)


def Identity(name: str | None = None) -> Layer:
    """Returns its input unchanged (any shape, any number of inputs)."""

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        return as_spec(input_spec), {}, {}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Any, State]:
        del params, key, train, context
        return x, state

    return Layer(init, apply, "Identity", {}, (), name)


