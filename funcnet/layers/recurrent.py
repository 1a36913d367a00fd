"""Recurrent layers: a cell (see :mod:`funcnet.layers.recurrent_cells`) scanned over the time axis.

``RNN(cell)`` takes ``(N, T, features)``; ``SimpleRNN``, ``GRU`` and ``LSTM`` are its shortcuts.
Each step of ``jax.lax.scan`` computes its input projection ``x_t @ w + b`` and the recurrent
part; compile time does not grow with the sequence length.
The initial state is zeros, or given with the input as ``(x, initial_state)``; a padding mask or
per-example lengths come as a side input named by ``mask=`` (:mod:`funcnet.layers.recurrent_inputs`);
``dropout`` and ``recurrent_dropout`` drop inputs and the recurrent ``h`` while training.
:func:`funcnet.layers.bidirectional.Bidirectional` runs a layer of this family both ways.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    MissingKeyError,
    Params,
    ParamsError,
    State,
    array_spec,
    as_compute,
    as_spec,
    check_floating,
    check_input_shape,
    check_positive,
    check_rank,
    get_params,
    side_input,
    spec,
)
from funcnet.layers.dropout import Dropout, check_rate
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
from funcnet.layers.recurrent_inputs import check_initial_state, check_mask, split_input, valid_steps


class ScanOptions(NamedTuple):
    """The options every RNN-family layer takes (see :func:`RNN`), recorded in its config."""

    return_sequences: bool = False
    return_state: bool = False
    reverse: bool = False
    unroll: int = 1
    mask: str | None = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0


def _check_options(options: ScanOptions, kind: str) -> None:
    for argument in ("return_sequences", "return_state", "reverse"):
        value = getattr(options, argument)
        if not isinstance(value, bool):
            raise TypeError(f"{kind}: `{argument}` must be True or False, got {value!r}.")
    check_positive(options.unroll, "unroll", kind)
    if options.mask is not None and not (isinstance(options.mask, str) and options.mask):
        raise TypeError(f"{kind}: `mask` names a side input and must be a non-empty string or None, got "
                        f"{options.mask!r}.")
    for argument in ("dropout", "recurrent_dropout"):
        check_rate(getattr(options, argument), argument, kind)


def _state_spec(cell: Cell, dtype: Any) -> Any:
    """The spec of the state: zero_state's structure (h, or (h, c) for an LSTM), batch None."""
    return jax.tree.map(lambda h: spec(h.shape, h.dtype), zero_state(cell, 1, dtype))


def _rnn_layer(cell: Cell, kind: str, config: dict[str, Any], options: ScanOptions, name: str | None) -> Layer:
    """The layer RNN and its shortcuts build: ``kind`` and ``config`` are what the architecture records."""
    _check_options(options, kind)
    names = param_names(cell)
    width = cell.gates * cell.units

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        x_spec, initial_spec = split_input(as_spec(input_spec))
        x_spec = array_spec(x_spec, dtype=jnp.floating)
        shape = x_spec.shape
        hint = None
        if isinstance(shape, tuple) and len(shape) == 2:
            hint = (f"add Reshape(({shape[1]}, 1)) before {kind} to read {shape[1]} steps of one feature, or "
                    f"Reshape((steps, {shape[1]} // steps)) for several features per step.")
        check_rank(shape, 3, "(batch, time, features)", hint)
        if initial_spec is not None:
            check_initial_state(initial_spec, _state_spec(cell, x_spec.dtype))
        if options.mask is not None:
            check_mask(side_input(context, options.mask, kind), options.mask, shape)
        params = init_cell_params(cell, key, shape[-1])
        sequence = spec((None, shape[1], cell.units), x_spec.dtype)
        out = sequence if options.return_sequences else spec((None, cell.units), x_spec.dtype)
        return ((out, _state_spec(cell, x_spec.dtype)) if options.return_state else out), params, {}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Any, State]:
        x, initial = split_input(x)
        weights = dict(zip(names, get_params(params, names), strict=True))
        w, u = weights["w"], weights["u"]
        if w.shape[-1] != width or u.shape != (cell.units, width):
            raise ParamsError(f"params have w {tuple(w.shape)} and u {tuple(u.shape)}, but this {cell.kind} has "
                              f"units={cell.units} (w (features, {width}), u ({cell.units}, {width})).",
                              hint="were these params made by init of the same model?")
        check_floating(x)
        check_rank(tuple(x.shape), 3, "(batch, time, features)")
        check_input_shape(x, (None, None, w.shape[0]), f"w has shape {tuple(w.shape)}")
        batch, steps = x.shape[0], x.shape[1]
        if initial is None:
            carry = zero_state(cell, batch, x.dtype)
        else:
            check_initial_state(initial, zero_state(cell, batch, x.dtype), batch)
            carry = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), tuple(initial) if isinstance(initial, list)
                                 else initial)
        drop_inputs, drop_state = train and options.dropout > 0, train and options.recurrent_dropout > 0
        if (drop_inputs or drop_state) and key is None:
            raise MissingKeyError(f"train=True with dropout={options.dropout}, recurrent_dropout="
                                  f"{options.recurrent_dropout} needs a random key, got key=None.",
                                  hint="pass key=jax.random.key(seed) to apply (fit and the train step do this "
                                  "for you).")
        if drop_inputs:  # one mask over (N, T, features)
            x = Dropout(options.dropout).apply({}, {}, x, key=jax.random.fold_in(key, 0), train=True)[0]
        # Each step projects its own input inside the scan: XLA's CPU backend trains this about twice
        # as fast as one product over all steps before it, whose (T, N, G units) buffers and their
        # gradients cost more than the larger product saves (docs/benchmarks.md, "Sequence models").
        # Autodiff of this scan, not a cuDNN-style custom VJP (weight gradients as one product after
        # the backward loop): on 2 quiet cores that ran at 0.92x-0.96x, as autodiff's backward loop
        # runs its small weight-gradient products on the second core alongside dh (the benchmark's
        # "hand-written JAX (custom VJP)" contender).
        weights = {k: as_compute(v, x) for k, v in weights.items()}
        # What the scan reads at each step, time-major: only what the options need.
        xs = {"x": jnp.swapaxes(x, 0, 1)}
        if options.mask is not None:
            mask = side_input(context, options.mask, kind)
            check_mask(mask, options.mask, tuple(x.shape))
            xs["valid"] = valid_steps(mask, steps).T
        if drop_state:
            xs["t"] = jnp.arange(steps)
            state_dropout, state_key = Dropout(options.recurrent_dropout), jax.random.fold_in(key, 1)

        def scan_step(carry: Any, xs_t: dict[str, Array]) -> tuple[Any, Array]:
            h = output_of(cell, carry)
            if "t" in xs_t:  # a fresh mask per step, from the step's position
                h = state_dropout.apply({}, {}, h, key=jax.random.fold_in(state_key, xs_t["t"]), train=True)[0]
            projected = xs_t["x"] @ weights["w"] + weights["b"]
            new = step(cell, weights, carry, projected, recurrent_input=h)
            out = output_of(cell, new)
            if "valid" in xs_t:  # padded steps keep the state and output zeros
                valid = xs_t["valid"][:, None]
                new = jax.tree.map(lambda n, c: jnp.where(valid, n, c), new, carry)
                out = jnp.where(valid, out, jnp.zeros((), out.dtype))
            return new, out

        final, outputs = jax.lax.scan(scan_step, carry, xs, reverse=options.reverse, unroll=options.unroll)
        y = jnp.swapaxes(outputs, 0, 1) if options.return_sequences else output_of(cell, final)
        return ((y, final) if options.return_state else y), state

    return Layer(init, apply, kind, {**config, **options._asdict()}, (), name)


def RNN(cell: Cell | dict, *, return_sequences: bool = False, return_state: bool = False, reverse: bool = False,
        unroll: int = 1, mask: str | None = None, dropout: float = 0.0, recurrent_dropout: float = 0.0,
        name: str | None = None) -> Layer:
    """Runs ``cell`` over the time axis of ``(N, T, features)`` with ``jax.lax.scan``.

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
        mask: the name of a side input (see :func:`funcnet.with_context`) holding a bool ``(N, T)``
            padding mask, True at real steps, or integer lengths ``(N,)`` (the first ``length``
            steps are real). Padded steps keep the state and output zeros, so the final state is
            the last real step's and ``reverse`` reads only the real steps, last to first.
        dropout: the probability of dropping each input value while training (one mask over
            ``(N, T, features)``, drawn from ``fold_in(key, 0)``), scaling the rest as
            :func:`Dropout` does.
        recurrent_dropout: the same for the ``h`` that the recurrent product reads, a fresh mask
            ``(N, units)`` at each step ``t`` from ``fold_in(fold_in(key, 1), t)``.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, features) -> (N, units)``, or ``(N, T, units)`` with ``return_sequences``. The
        input may be a pair ``(x, initial_state)``, the state structured as ``return_state``
        returns it (``h``, or ``(h, c)`` for an LSTM, each ``(N, units)``); the initial state is
        zeros otherwise.

    Params:
        The cell's, e.g. ``{"w": (features, 4 units), "u": (units, 4 units), "b": (4 units,)}`` for an LSTM.

    Raises:
        ShapeError: at init, for an input that is not ``(batch, time, features)``, an initial
            state of another structure or shape, or a mask of the wrong shape.
        InputTypeError: at init, for a non-floating input or a mask that is neither bool nor integer.
        MissingInputError: at init, when the side input named by ``mask`` is not in the context.
        MissingKeyError: at apply, for ``train=True`` with a dropout rate above 0 and no key.
    """
    cell = cell_from_config(cell)
    options = ScanOptions(return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout)
    return _rnn_layer(cell, "RNN", {"cell": cell.config}, options, name)


def SimpleRNN(units: int, *, activation: str = "tanh", return_sequences: bool = False, return_state: bool = False,
              reverse: bool = False, unroll: int = 1, mask: str | None = None, dropout: float = 0.0,
              recurrent_dropout: float = 0.0, name: str | None = None) -> Layer:
    """``RNN(SimpleRNNCell(units, activation))``: ``h_t = activation(x_t @ w + b + h_{t-1} @ u)``.

    Args:
        units: the size of the state.
        activation: a name from ``ACTIVATIONS``.
        return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout, name:
            as for :func:`RNN`.

    Shapes:
        ``(N, T, features)`` or ``(x, h)`` ``-> (N, units)`` (``(N, T, units)`` with ``return_sequences``).

    Params:
        ``{"w": (features, units), "u": (units, units), "b": (units,)}``.
    """
    cell = SimpleRNNCell(units, activation)
    options = ScanOptions(return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout)
    return _rnn_layer(cell, "SimpleRNN", {"units": units, "activation": cell.options["activation"]}, options, name)


def GRU(units: int, *, reset_after: bool = True, return_sequences: bool = False, return_state: bool = False,
        reverse: bool = False, unroll: int = 1, mask: str | None = None, dropout: float = 0.0,
        recurrent_dropout: float = 0.0, name: str | None = None) -> Layer:
    """``RNN(GRUCell(units, reset_after))``; see :func:`GRUCell` for the equations and gate order.

    Args:
        units: the size of the state.
        reset_after: True (PyTorch, Keras 3) or False (Cho et al.'s placement of the reset gate).
        return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout, name:
            as for :func:`RNN`.

    Shapes:
        ``(N, T, features)`` or ``(x, h)`` ``-> (N, units)`` (``(N, T, units)`` with ``return_sequences``).

    Params:
        ``{"w": (features, 3 units), "u": (units, 3 units), "b": (3 units,)}``, plus ``"b_u": (3 units,)``
        when ``reset_after``.
    """
    cell = GRUCell(units, reset_after)
    options = ScanOptions(return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout)
    return _rnn_layer(cell, "GRU", {"units": units, "reset_after": reset_after}, options, name)


def LSTM(units: int, *, unit_forget_bias: bool = True, return_sequences: bool = False, return_state: bool = False,
         reverse: bool = False, unroll: int = 1, mask: str | None = None, dropout: float = 0.0,
         recurrent_dropout: float = 0.0, name: str | None = None) -> Layer:
    """``RNN(LSTMCell(units, unit_forget_bias))``; see :func:`LSTMCell` for the equations and gate order.

    Args:
        units: the size of the state.
        unit_forget_bias: initialise the forget gate's bias to 1.
        return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout, name:
            as for :func:`RNN`.

    Shapes:
        ``(N, T, features)`` or ``(x, (h, c))`` ``-> (N, units)`` (``(N, T, units)`` with
        ``return_sequences``); the state is ``(h, c)``.

    Params:
        ``{"w": (features, 4 units), "u": (units, 4 units), "b": (4 units,)}``.
    """
    cell = LSTMCell(units, unit_forget_bias)
    options = ScanOptions(return_sequences, return_state, reverse, unroll, mask, dropout, recurrent_dropout)
    return _rnn_layer(cell, "LSTM", {"units": units, "unit_forget_bias": unit_forget_bias}, options, name)


#: The RNN-family constructors, by kind (what :func:`funcnet.layers.Bidirectional` wraps).
RNN_LAYERS = {"RNN": RNN, "SimpleRNN": SimpleRNN, "GRU": GRU, "LSTM": LSTM}

__all__ = ["GRU", "LSTM", "RNN", "SimpleRNN"]
