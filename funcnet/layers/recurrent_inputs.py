"""What an RNN reads besides its sequence: an initial state in the input, and a padding mask side input.

The input of an RNN is ``x`` ``(N, T, features)`` or a pair ``(x, initial_state)``, the state
structured as the layer returns it (``h``, or ``(h, c)`` for an LSTM, each ``(N, units)``).
A padding mask is a side input (see :func:`funcnet.core.side_input`) that is either a bool
``(N, T)`` mask, True at real steps, or integer lengths ``(N,)`` (the first ``length`` steps are
real). Each check takes specs (at init) or arrays (at apply) alike.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import Array, InputTypeError, ShapeError, format_shape, format_spec


def split_input(x: Any) -> tuple[Any, Any]:
    """``(x, initial_state)`` from an RNN's input: a pair is split, anything else has no initial state."""
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return x[0], x[1]
    if isinstance(x, (tuple, list, dict)):
        raise ShapeError(f"expected x (batch, time, features) or a pair (x, initial_state), got {format_spec(x)}.")
    return x, None


def _per_example(leaf: Any) -> tuple:
    return tuple(leaf.shape[1:])


def check_initial_state(state: Any, expected: Any, batch: int | None = None) -> None:
    """Raises :class:`ShapeError` unless ``state`` has the structure, shapes and a floating dtype of
    ``expected`` (the spec of the state the layer returns); ``batch``, if given, is x's batch size."""
    state = tuple(state) if isinstance(state, list) else state
    leaves = jax.tree.leaves(state)
    shown = format_spec(jax.tree.map(lambda s: jax.ShapeDtypeStruct((None, *s.shape[1:]), s.dtype), expected))
    same = (jax.tree.structure(state) == jax.tree.structure(expected)
            and all(hasattr(a, "shape") and hasattr(a, "dtype") for a in leaves)
            and all(_per_example(a) == _per_example(e) for a, e in zip(leaves, jax.tree.leaves(expected))))
    if not same:
        got = format_spec(state) if all(hasattr(a, "shape") for a in leaves) else repr(state)[:80]
        raise ShapeError(f"initial_state must be structured like the state this layer returns, {shown}; "
                         f"got {got}.", hint="give the input as (x, initial_state), e.g. (x, (h, c)) for an LSTM.")
    if not all(jnp.issubdtype(a.dtype, jnp.floating) for a in leaves):
        raise InputTypeError(f"initial_state must have a floating dtype, got {format_spec(state)}.")
    if batch is not None and any(a.shape[0] != batch for a in leaves):
        raise ShapeError(f"initial_state has batch size {[a.shape[0] for a in leaves]}, x has {batch}.")


def check_mask(mask: Any, name: str, x_shape: tuple) -> None:
    """Raises :class:`InputTypeError` / :class:`ShapeError` unless the side input ``name`` (a spec or
    array) is a bool ``(N, T)`` padding mask or integer lengths ``(N,)`` for ``x`` of ``x_shape``."""
    steps = x_shape[1]
    bool_shape = format_shape((x_shape[0], steps))
    what = f"side input {name!r} (the padding mask)"
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        raise ShapeError(f"{what} must be an array, got {type(mask).__name__}.")
    shape = tuple(mask.shape)
    if jnp.issubdtype(mask.dtype, jnp.bool_):
        if len(shape) != 2 or steps is not None and shape[1] is not None and shape[1] != steps:
            raise ShapeError(f"{what} is a bool padding mask, so it must be {bool_shape} (batch, time) for the "
                             f"input {format_shape(x_shape)}; got {format_shape(shape)}.")
    elif jnp.issubdtype(mask.dtype, jnp.integer):
        if len(shape) != 1:
            raise ShapeError(f"{what} has an integer dtype, so it is read as lengths and must be (N,); got "
                             f"{format_shape(shape)}.",
                             hint=f"for a 0/1 padding mask {bool_shape}, pass mask.astype(bool).")
    else:
        raise InputTypeError(f"{what} must be a bool mask {bool_shape} (True at real steps) or integer lengths "
                             f"(N,), got dtype {jnp.dtype(mask.dtype).name}.",
                             hint="pass mask > 0 for a 0/1 float mask, or lengths.astype('int32').")
    if x_shape[0] is not None and shape[0] is not None and shape[0] != x_shape[0]:
        raise ShapeError(f"{what} has batch size {shape[0]}, the input has {x_shape[0]}.")


def valid_steps(mask: Array, steps: int) -> Array:
    """The bool ``(N, steps)`` mask of real steps, from a bool mask or integer lengths."""
    if jnp.issubdtype(mask.dtype, jnp.bool_):
        return mask
    return jnp.arange(steps)[None, :] < mask[:, None]
