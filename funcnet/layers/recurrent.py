"""Recurrent layers: a cell (see :mod:`funcnet.layers.recurrent_cells`) scanned over the time axis.

``RNN(cell)`` takes ``(N, T, features)``; ``SimpleRNN``, ``GRU`` and ``LSTM`` are its shortcuts.
Each step of ``jax.lax.scan`` computes its input projection ``x_t @ w + b`` and the recurrent
part; compile time does not grow with the sequence length.
The initial state is zeros. Not yet supported: masks or per-example lengths, ``Bidirectional``,
dropout on inputs or state, an initial state as an input.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ParamsError,
    State,
    array_spec,
    as_compute,
    check_floating,
    check_input_shape,
    check_positive,
    check_rank,
    get_params,
    spec,
)
from funcnet.layers.recurrent_cells import (
    Cell,
    GRUCell,
    LSTMCell,
    SimpleRNNCell,
    cell_from_config,
    init_cell_params,
    output_of,
    param_names,
    step,
    zero_state,
)


def _check_flag(value: Any, argument: str, kind: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{kind}: `{argument}` must be True or False, got {value!r}.")


def _rnn_layer(cell: Cell, kind: str, config: dict[str, Any], return_sequences: bool, return_state: bool,
               reverse: bool, unroll: int, name: str | None) -> Layer:
    """The layer RNN and its shortcuts build: ``kind`` and ``config`` are what the architecture records."""
    for argument, value in (("return_sequences", return_sequences), ("return_state", return_state),
                            ("reverse", reverse)):
        _check_flag(value, argument, kind)
    check_positive(unroll, "unroll", kind)
    names = param_names(cell)
    width = cell.gates * cell.units

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        shape = x_spec.shape
        hint = None
        if isinstance(shape, tuple) and len(shape) == 2:
            hint = (f"add Reshape(({shape[1]}, 1)) before {kind} to read {shape[1]} steps of one feature, or "
                    f"Reshape((steps, {shape[1]} // steps)) for several features per step.")
        check_rank(shape, 3, "(batch, time, features)", hint)
        params = init_cell_params(cell, key, shape[-1])
        sequence = spec((None, shape[1], cell.units), x_spec.dtype)
        final = spec((None, cell.units), x_spec.dtype)
        out = sequence if return_sequences else final
        if return_state:
            # The state's structure is zero_state's: h, or (h, c) for an LSTM.
            out = (out, jax.tree.map(lambda h: spec(h.shape, h.dtype), zero_state(cell, 1, x_spec.dtype)))
        return out, params, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Any, State]:
        del key, train, context
        weights = dict(zip(names, get_params(params, names), strict=True))
        w, u = weights["w"], weights["u"]
        if w.shape[-1] != width or u.shape != (cell.units, width):
            raise ParamsError(f"params have w {tuple(w.shape)} and u {tuple(u.shape)}, but this {cell.kind} has "
                              f"units={cell.units} (w (features, {width}), u ({cell.units}, {width})).",
                              hint="were these params made by init of the same model?")
        check_floating(x)
        check_rank(tuple(x.shape), 3, "(batch, time, features)")
        check_input_shape(x, (None, None, w.shape[0]), f"w has shape {tuple(w.shape)}")
        # Each step projects its own input inside the scan: XLA's CPU backend trains this about twice
        # as fast as one product over all steps before it, whose (T, N, G units) buffers and their
        # gradients cost more than the larger product saves (docs/benchmarks.md, "Sequence models").
        weights = {k: as_compute(v, x) for k, v in weights.items()}

        def scan_step(carry: Any, x_t: Array) -> tuple[Any, Array]:
            new = step(cell, weights, carry, x_t @ weights["w"] + weights["b"])
            return new, output_of(cell, new)

        final, outputs = jax.lax.scan(scan_step, zero_state(cell, x.shape[0], x.dtype),
                                      jnp.swapaxes(x, 0, 1), reverse=reverse, unroll=unroll)
        y = jnp.swapaxes(outputs, 0, 1) if return_sequences else output_of(cell, final)
        return ((y, final) if return_state else y), state

    config = {**config, "return_sequences": return_sequences, "return_state": return_state,
              "reverse": reverse, "unroll": unroll}
    return Layer(init, apply, kind, config, (), name)


def RNN(cell: Cell | dict, *, return_sequences: bool = False, return_state: bool = False, reverse: bool = False,
        unroll: int = 1, name: str | None = None) -> Layer:
    """Runs ``cell`` over the time axis of ``(N, T, features)`` with ``jax.lax.scan``, from a zero state.

    Args:
        cell: a cell (:func:`SimpleRNNCell`, :func:`GRUCell`, :func:`LSTMCell`) or its ``config``.
        return_sequences: output every step's ``h`` ``(N, T, units)`` instead of the last ``(N, units)``.
        return_state: output ``(outputs, final_state)``; the final state is ``h`` ``(N, units)``, or
            ``(h, c)`` for an LSTM.
        reverse: read the sequence from its last step to its first. Outputs stay aligned with the
            input: ``outputs[:, t]`` is the state after reading steps ``T-1 .. t`` (Keras's
            ``go_backwards`` returns them in reversed order instead), and the final state is the
            one after step 0.
        unroll: steps per iteration of the scan's loop (``jax.lax.scan``'s ``unroll``): more
            compiles longer and may run faster.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, features) -> (N, units)``, or ``(N, T, units)`` with ``return_sequences``.

    Params:
        The cell's, e.g. ``{"w": (features, 4 units), "u": (units, 4 units), "b": (4 units,)}`` for an LSTM.

    Raises:
        ShapeError: at init, for an input that is not ``(batch, time, features)``.
        InputTypeError: at init, for a non-floating input.
    """
    cell = cell_from_config(cell)
    return _rnn_layer(cell, "RNN", {"cell": cell.config}, return_sequences, return_state, reverse, unroll, name)


def SimpleRNN(units: int, *, activation: str = "tanh", return_sequences: bool = False, return_state: bool = False,
              reverse: bool = False, unroll: int = 1, name: str | None = None) -> Layer:
    """``RNN(SimpleRNNCell(units, activation))``: ``h_t = activation(x_t @ w + b + h_{t-1} @ u)``.

    Args:
        units: the size of the state.
        activation: a name from ``ACTIVATIONS``.
        return_sequences, return_state, reverse, unroll, name: as for :func:`RNN`.
    """
    cell = SimpleRNNCell(units, activation)
    return _rnn_layer(cell, "SimpleRNN", {"units": units, "activation": cell.options["activation"]},
                      return_sequences, return_state, reverse, unroll, name)


def GRU(units: int, *, reset_after: bool = True, return_sequences: bool = False, return_state: bool = False,
        reverse: bool = False, unroll: int = 1, name: str | None = None) -> Layer:
    """``RNN(GRUCell(units, reset_after))``; see :func:`GRUCell` for the equations and gate order.

    Args:
        units: the size of the state.
        reset_after: True (PyTorch, Keras 3) or False (Cho et al.'s placement of the reset gate).
        return_sequences, return_state, reverse, unroll, name: as for :func:`RNN`.
    """
    cell = GRUCell(units, reset_after)
    return _rnn_layer(cell, "GRU", {"units": units, "reset_after": reset_after},
                      return_sequences, return_state, reverse, unroll, name)


def LSTM(units: int, *, unit_forget_bias: bool = True, return_sequences: bool = False, return_state: bool = False,
         reverse: bool = False, unroll: int = 1, name: str | None = None) -> Layer:
    """``RNN(LSTMCell(units, unit_forget_bias))``; see :func:`LSTMCell` for the equations and gate order.

    Args:
        units: the size of the state.
        unit_forget_bias: initialise the forget gate's bias to 1.
        return_sequences, return_state, reverse, unroll, name: as for :func:`RNN`.
    """
    cell = LSTMCell(units, unit_forget_bias)
    return _rnn_layer(cell, "LSTM", {"units": units, "unit_forget_bias": unit_forget_bias},
                      return_sequences, return_state, reverse, unroll, name)


__all__ = ["GRU", "LSTM", "RNN", "SimpleRNN"]
