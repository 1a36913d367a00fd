"""Side inputs: named entries of a dict input moved into the ``context`` every layer receives.

A padding mask or a conditioning vector is needed by a few layers deep in a stack; instead of
threading tuples through every block, :func:`with_context` puts it in the ``context`` mapping that
every combinator passes unchanged to every child, and a layer reads it with
:func:`funcnet.core.side_input`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from funcnet.core import Context, Key, Layer, Params, ShapeError, Spec, State, as_spec, format_spec


def _move_to_context(x: Any, names: Sequence[str], context: Context | None) -> tuple[Any, dict[str, Any]]:
    """Splits a dict input into ``(the rest, the context with the named entries merged over it)``."""
    if not isinstance(x, Mapping) or any(n not in x for n in names):
        got = f"a dict with keys {sorted(x)}" if isinstance(x, Mapping) else format_spec(x)
        raise ShapeError(f"expected a dict input with the side inputs {list(names)} among its keys, got {got}.",
                         hint="give the model a dict input, e.g. {'x': images, 'padding_mask': mask}.")
    rest = {k: v for k, v in x.items() if k not in names}
    if not rest:
        raise ShapeError(f"the dict input holds only the side inputs {list(names)}; nothing is left as x.")
    merged = {**(context or {}), **{n: x[n] for n in names}}
    return (next(iter(rest.values())) if len(rest) == 1 else rest), merged


def with_context(body: Layer, *names: str, name: str | None = None) -> Layer:
    """Moves named entries of a dict input into the ``context`` that every layer of ``body`` gets.

    ``with_context(model, "padding_mask")`` takes ``{"x": x, "padding_mask": m}``: ``model`` runs
    on ``x`` (the one remaining entry, unwrapped; with several remaining entries, the dict of them),
    and any layer inside it, however deep, reads the mask with
    ``funcnet.core.side_input(context, "padding_mask", kind)`` at apply (and its spec at init).
    The entries are merged over any context coming from outside. Since the input is one dict,
    ``fit``, ``evaluate`` and checkpoints work unchanged.

    Args:
        body: the layer (or model) that runs on the rest of the input.
        *names: the side inputs' keys in the dict input.
        name: this layer's name in an enclosing model.

    Returns:
        A Layer with the body's params, state and output (it adds no level to their names).
    """
    if not isinstance(body, Layer):
        raise TypeError(f"with_context: `body` must be a Layer, got {type(body).__name__}.")
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"with_context: give the side inputs' names as non-empty strings, got {names!r}.")

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        x, merged = _move_to_context(as_spec(input_spec), names, context)
        return body.init(key, x, context=merged)

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        rest, merged = _move_to_context(x, names, context)
        return body.apply(params, state, rest, key=key, train=train, context=merged)

    return Layer(init, apply, "WithContext", {"names": list(names)}, (body,), name, body.penalty)
