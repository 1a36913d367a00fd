"""Combinators: layers made of layers.

Every combinator hands each child its own params and state (by the child's name), the ``train``
flag and its own key (``fold_in(key, position)``), and reports errors with the child's place.
A child's name is the one the user gave (``name=`` or :func:`named`), else ``<kind>_<count>``
counted per kind within the container: ``serial(Dense(8), Relu(), Dense(2))`` has params
``{"dense_0": ..., "dense_1": ...}`` (layers without params or state take no entry).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax.numpy as jnp

from funcnet.core import (
    Key,
    Layer,
    LayerError,
    Params,
    ParamsError,
    ShapeError,
    State,
    child_key,
    child_names,
    format_shape,
)


@contextlib.contextmanager
def _located(names: Sequence[str], layers: Sequence[Layer], position: int, source: int | None,
             model_input: Any) -> Iterator[None]:
    """Adds the failing child's place, and the sibling that produced its input, to a LayerError."""
    try:
        yield
    except LayerError as error:
        error.locate(names[position], layers[position].kind, position)
        if source is not None:
            error.set_source(names[source], layers[source].kind, source)
        error.model_input = format_shape(model_input)
        raise


def _check_children_keys(tree: Any, names: Sequence[str], what: str) -> None:
    """Raises ParamsError if ``tree`` (params or state) is not a dict of known children."""
    if not isinstance(tree, dict):
        raise ParamsError(f"expected {what} to be a dict keyed by layer name, got {type(tree).__name__}.")
    unknown = sorted(set(tree) - set(names))
    if unknown:
        raise ParamsError(
            f"{what} has entries {unknown} that match no layer here (layers: {list(names)}).",
            hint=f"were these {what} made by init of the same model?",
        )


def _collect(into: dict, name: str, tree: dict) -> None:
    if tree:
        into[name] = tree


def _children(layers: tuple) -> tuple[Layer, ...]:
    """Accepts ``f(a, b, c)`` and ``f([a, b, c])``; checks that each item is a Layer."""
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)) and not isinstance(layers[0], Layer):
        layers = tuple(layers[0])
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"argument {i} is a {type(layer).__name__}, not a Layer; layer constructors are called, "
                "as in `Relu()`."
            )
    return layers


def serial(*layers: Layer, name: str | None = None) -> Layer:
    """Chains layers: each one's output is the next one's input.

    Args:
        *layers: the layers in order (a single list is accepted too).
        name: this layer's name in an enclosing model.

    Returns:
        A Layer. Input shape: that of the first layer; output shape: that of the last.
        Params and state: ``{child_name: child_params}`` for children that have any.
    """
    layers = _children(layers)
    names = child_names(layers)

    def init(key: Key, input_shape: Any) -> tuple[Any, Params, State]:
        params, state, shape = {}, {}, input_shape
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, i - 1 if i else None, input_shape):
                shape, child_params, child_state = child.init(child_key(key, i), shape)
            _collect(params, child_name, child_params)
            _collect(state, child_name, child_state)
        return shape, params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False) -> tuple[Any, State]:
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        model_input, new_state = _shapes(x), {}
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, i - 1 if i else None, model_input):
                x, child_state = child.apply(params.get(child_name, {}), state.get(child_name, {}), x,
                                             key=child_key(key, i), train=train)
            _collect(new_state, child_name, child_state)
        return x, new_state

    return Layer(init, apply, "Serial", {}, layers, name)


def Sequential(layers: Sequence[Layer], name: str | None = None) -> Layer:  # noqa: N802
    """Keras-style spelling of :func:`serial`: ``Sequential([Dense(64), Relu(), Dense(10)])``."""
    return serial(*layers, name=name)


def _shapes(x: Any) -> Any:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(_shapes(item) for item in x)


def _check_tuple_input(x: Any, n: int, what: str) -> None:
    if not isinstance(x, (tuple, list)) or len(x) != n:
        got = f"a tuple of {len(x)}" if isinstance(x, (tuple, list)) else format_shape(_shapes(x))
        raise ShapeError(f"expected a tuple of {n} {what}, got {got}.",
                         hint="put FanOut(n) or branch(...) before it to make several inputs from one.")


def parallel(*layers: Layer, name: str | None = None) -> Layer:
    """Applies the i-th layer to the i-th input: ``(x_0, ..., x_n) -> (f_0(x_0), ..., f_n(x_n))``.

    Args:
        *layers: one layer per input (a single list is accepted too).
        name: this layer's name in an enclosing model.

    Returns:
        A Layer taking a tuple of n inputs (and n input shapes at init) and giving a tuple of n
        outputs. Params and state: ``{child_name: child_params}``.
    """
    layers = _children(layers)
    names = child_names(layers)

    def init(key: Key, input_shape: Any) -> tuple[Any, Params, State]:
        _check_tuple_input(input_shape, len(layers), "input shapes")
        params, state, shapes = {}, {}, []
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, None, input_shape):
                shape, child_params, child_state = child.init(child_key(key, i), input_shape[i])
            shapes.append(shape)
            _collect(params, child_name, child_params)
            _collect(state, child_name, child_state)
        return tuple(shapes), params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False) -> tuple[Any, State]:
        _check_tuple_input(x, len(layers), "inputs")
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        outputs, new_state = [], {}
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, None, _shapes(x)):
                y, child_state = child.apply(params.get(child_name, {}), state.get(child_name, {}),
                                             x[i], key=child_key(key, i), train=train)
            outputs.append(y)
            _collect(new_state, child_name, child_state)
        return tuple(outputs), new_state

    return Layer(init, apply, "Parallel", {}, layers, name)


def branch(*layers: Layer, name: str | None = None) -> Layer:
    """Applies every layer to the same input: ``x -> (f_0(x), ..., f_n(x))``.

    Equivalent to ``serial(FanOut(n), parallel(*layers))`` with flatter parameter names.

    Returns:
        A Layer giving a tuple of n outputs. Params and state: ``{child_name: child_params}``.
    """
    layers = _children(layers)
    inner = parallel(*layers)

    def init(key: Key, input_shape: Any) -> tuple[Any, Params, State]:
        return inner.init(key, (input_shape,) * len(layers))

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False) -> tuple[Any, State]:
        return inner.apply(params, state, (x,) * len(layers), key=key, train=train)

    return Layer(init, apply, "Branch", {}, layers, name)


def residual(*layers: Layer, shortcut: Layer | None = None, name: str | None = None) -> Layer:
    """A residual block: ``x -> body(x) + shortcut(x)``, with ``body = serial(*layers)``.

    Args:
        *layers: the body, applied in order.
        shortcut: applied to ``x`` on the skip path (a 1x1 Conv to change channels, say);
            the identity when omitted.
        name: this layer's name in an enclosing model.

    Returns:
        A Layer whose output shape is the body's, which must equal the shortcut's. Params and
        state: the body's entries (named as in :func:`serial`) plus ``"shortcut"`` if given.
    """
    layers = _children(layers)
    body = serial(*layers)
    shortcut_layers = (shortcut._replace(name="shortcut"),) if shortcut is not None else ()
    names = child_names(layers + shortcut_layers)
    shortcut_index = len(layers)

    def check_sum(body_shape: Any, skip_shape: Any) -> None:
        if tuple(body_shape[1:]) != tuple(skip_shape[1:]):
            raise ShapeError(
                f"the body's output {format_shape(body_shape)} cannot be added to the shortcut's "
                f"{format_shape(skip_shape)}.",
                hint="give residual a `shortcut=` layer that maps the input to the body's output shape.",
            )

    def init(key: Key, input_shape: Any) -> tuple[Any, Params, State]:
        shape, params, state = body.init(key, input_shape)
        skip_shape = input_shape
        if shortcut is not None:
            with _located(names, layers + shortcut_layers, shortcut_index, None, input_shape):
                skip_shape, skip_params, skip_state = shortcut.init(child_key(key, shortcut_index), input_shape)
            _collect(params, "shortcut", skip_params)
            _collect(state, "shortcut", skip_state)
        check_sum(shape, skip_shape)
        return shape, params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False) -> tuple[Any, State]:
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        body_params = {k: v for k, v in params.items() if k != "shortcut"}
        body_state = {k: v for k, v in state.items() if k != "shortcut"}
        y, new_state = body.apply(body_params, body_state, x, key=key, train=train)
        skip = x
        if shortcut is not None:
            with _located(names, layers + shortcut_layers, shortcut_index, None, _shapes(x)):
                skip, skip_state = shortcut.apply(params.get("shortcut", {}), state.get("shortcut", {}), x,
                                                  key=child_key(key, shortcut_index), train=train)
            _collect(new_state, "shortcut", skip_state)
        check_sum(y.shape, skip.shape)
        return y + skip.astype(y.dtype), new_state

    return Layer(init, apply, "Residual", {"shortcut": shortcut is not None}, layers + shortcut_layers, name)


def named(name: str, layer: Layer) -> Layer:
    """Gives ``layer`` a name: its key in the enclosing container's params and state."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"named: `name` must be a non-empty string without '/', got {name!r}.")
    return layer._replace(name=name)


# ---------------------------------------------------------------------------------------------
# Fan-out and fan-in: parameter-free layers that make or merge several streams.


def _stateless(kind: str, config: dict, name: str | None, out_shape, fn) -> Layer:
    def init(key: Key, input_shape: Any) -> tuple[Any, Params, State]:
        del key
        return out_shape(input_shape), {}, {}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False) -> tuple[Any, State]:
        del key, train
        if params:
            raise ParamsError(f"this layer has no parameters, got entries {sorted(params)}.")
        out_shape(_shapes(x))
        return fn(x), state

    return Layer(init, apply, kind, config, (), name)


def FanOut(num: int, name: str | None = None) -> Layer:  # noqa: N802
    """Copies its input into a tuple of ``num`` streams: ``x -> (x,) * num``."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"FanOut: `num` must be a positive integer, got {num!r}.")
    return _stateless("FanOut", {"num": num}, name, lambda shape: (shape,) * num, lambda x: (x,) * num)


def _same_shapes(shapes: Any, kind: str) -> None:
    if not isinstance(shapes, tuple) or not shapes or not all(isinstance(s, tuple) for s in shapes):
        raise ShapeError(f"expected a tuple of input shapes, got {format_shape(shapes)}.",
                         hint="put FanOut(n), branch(...) or parallel(...) before it.")


def FanInSum(name: str | None = None) -> Layer:  # noqa: N802
    """Adds a tuple of inputs of one shape: ``(x_0, ..., x_n) -> x_0 + ... + x_n``."""

    def out_shape(shapes: Any) -> Any:
        _same_shapes(shapes, "FanInSum")
        if any(tuple(s[1:]) != tuple(shapes[0][1:]) for s in shapes):
            raise ShapeError(f"inputs must share one shape to be added, got {', '.join(map(format_shape, shapes))}.")
        return shapes[0]

    return _stateless("FanInSum", {}, name, out_shape, lambda xs: sum(xs[1:], xs[0]))


def FanInConcat(axis: int = -1, name: str | None = None) -> Layer:  # noqa: N802
    """Concatenates a tuple of inputs along ``axis`` (default: the last, channels)."""
    if not isinstance(axis, int):
        raise ValueError(f"FanInConcat: `axis` must be an integer, got {axis!r}.")

    def out_shape(shapes: Any) -> Any:
        _same_shapes(shapes, "FanInConcat")
        rank = len(shapes[0])
        if not -rank < axis < rank or axis % rank == 0:
            raise ShapeError(f"cannot concatenate along axis {axis} of inputs of rank {rank} (axis 0 is the batch).")
        ax = axis % rank
        rest = [tuple(d for i, d in enumerate(s) if i not in (0, ax)) for s in shapes]
        if any(len(s) != rank for s in shapes) or any(r != rest[0] for r in rest):
            raise ShapeError(f"inputs must agree on every axis but {axis}, got "
                             f"{', '.join(map(format_shape, shapes))}.")
        return shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]

    return _stateless("FanInConcat", {"axis": axis}, name, out_shape, lambda xs: jnp.concatenate(xs, axis=axis))
