"""Working with a whole model: a one-line predict function, parameter counts and a summary."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from funcnet.core import Array, Layer, Params, Spec, State, as_spec, child_names, format_spec


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


def _abstract_init(layer: Layer, input_spec: Spec) -> tuple[Spec, Params, State]:
    """``layer.init`` without computing any array: specs, shapes and dtypes only."""
    box = {}

    def run(key: Array) -> tuple[Params, State]:
        box["spec"], params, state = layer.init(key, input_spec)
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return box["spec"], params, state


def _rows(layer: Layer, path: str, input_spec: Spec, rows: list) -> Spec:
    """Appends ``(path, kind, output spec, params, state)`` rows; returns the output spec."""
    if layer.kind == "Serial":
        spec = input_spec
        for child_name, child in zip(child_names(layer.children), layer.children, strict=True):
            spec = _rows(child, f"{path}/{child_name}" if path else child_name, spec, rows)
        return spec
    spec, params, state = _abstract_init(layer, input_spec)
    rows.append((path or layer.kind.lower(), layer.kind, format_spec(spec), count_params(params),
                 count_params(state)))
    return spec


def summary(model: Layer, input_spec: Any) -> str:
    """A table of the model's layers: name, kind, output spec and parameter count, with totals.

    Nested ``serial`` models are expanded (names are paths, ``block/dense_0``); other
    combinators are one row each. Nothing is computed: shapes come from ``jax.eval_shape``.

    Args:
        model: the model.
        input_spec: its input spec (see :mod:`funcnet.core`), or a shape with the batch axis
            (``(None, 28, 28, 1)``, read as float32).

    Returns:
        The table as a string; print it.
    """
    rows: list = []
    input_spec = as_spec(input_spec)
    _rows(model, "", input_spec, rows)
    header = ("Layer", "Kind", "Output", "Params")
    table = [header] + [(r[0], r[1], r[2], f"{r[3]:,}") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    rule = "-" * (sum(widths) + 6)

    def line(row: tuple) -> str:
        return "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    trainable, state = sum(r[3] for r in rows), sum(r[4] for r in rows)
    lines = [line(header), rule, *(line(r) for r in table[1:]), rule,
             f"Input: {format_spec(input_spec)}",
             f"Parameters: {trainable:,}", f"State values (not trained): {state:,}"]
    return "\n".join(lines)
