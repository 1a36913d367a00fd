"""Working with a whole model: a one-line predict function, parameter counts and a summary."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from funcnet.core import Array, Layer, Params, State, child_names, format_shape


def predict_fn(model: Layer, state: State | None = None, *, jit: bool = True) -> Callable[[Params, Any], Any]:
    """Returns ``predict(params, x) -> y``: the model in evaluation mode, jitted by default.

    For a model without state or randomness this is all that is needed::

        _, params, _ = model.init(jax.random.key(0), (None, 784))
        predict = predict_fn(model)
        logits = predict(params, x)

    Args:
        model: the model.
        state: the model's layer state (BatchNorm statistics), if it has any.
        jit: whether to wrap the function in ``jax.jit``.
    """
    fixed_state = {} if state is None else state

    def predict(params: Params, x: Any) -> Any:
        return model.apply(params, fixed_state, x, train=False)[0]

    return jax.jit(predict) if jit else predict


def count_params(tree: Params | State) -> int:
    """The number of scalars in a pytree of arrays (params, state or anything else)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def _abstract_init(layer: Layer, input_shape: Any) -> tuple[Any, Params, State]:
    """``layer.init`` without computing any array: shapes and dtypes only."""
    box = {}

    def run(key: Array) -> tuple[Params, State]:
        box["shape"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return box["shape"], params, state


def _rows(layer: Layer, path: str, input_shape: Any, rows: list) -> Any:
    """Appends ``(path, kind, output shape, params, state)`` rows; returns the output shape."""
    if layer.kind == "Serial":
        shape = input_shape
        for child_name, child in zip(child_names(layer.children), layer.children, strict=True):
            shape = _rows(child, f"{path}/{child_name}" if path else child_name, shape, rows)
        return shape
    shape, params, state = _abstract_init(layer, input_shape)
    rows.append((path or layer.kind.lower(), layer.kind, format_shape(shape), count_params(params),
                 count_params(state)))
    return shape


def summary(model: Layer, input_shape: Any) -> str:
    """A table of the model's layers: name, kind, output shape and parameter count, with totals.

    Nested ``serial`` models are expanded (names are paths, ``block/dense_0``); other
    combinators are one row each. Nothing is computed: shapes come from ``jax.eval_shape``.

    Args:
        model: the model.
        input_shape: its input shape, batch axis included (``(None, 28, 28, 1)``).

    Returns:
        The table as a string; print it.
    """
    rows: list = []
    _rows(model, "", input_shape, rows)
    header = ("Layer", "Kind", "Output shape", "Params")
    table = [header] + [(r[0], r[1], r[2], f"{r[3]:,}") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    rule = "-" * (sum(widths) + 6)

    def line(row: tuple) -> str:
        return "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    trainable, state = sum(r[3] for r in rows), sum(r[4] for r in rows)
    lines = [line(header), rule, *(line(r) for r in table[1:]), rule,
             f"Input shape: {format_shape(input_shape)}",
             f"Parameters: {trainable:,}", f"State values (not trained): {state:,}"]
    return "\n".join(lines)
