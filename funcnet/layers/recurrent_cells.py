"""Recurrent cells: one step of a recurrence, described by a JSON-able config.

A cell is not a layer: :func:`funcnet.layers.recurrent.RNN` runs it over the time axis. A cell
says how many gates it has, makes its params and its zero state, and computes one step from the
input projection of that step (``x_t @ w + b``, which RNN computes inside its scan) and the
previous state.

Param structure, for ``features`` input features and ``G`` gates of ``units`` each (gates
concatenated along the last axis in the order each cell states)::

    {"w": (features, G * units), "u": (units, G * units), "b": (G * units,)}

GRU with ``reset_after=True`` adds the recurrent bias ``"b_u": (3 * units,)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.core import Array, Key, Params, check_positive
from funcnet.layers.activations import resolve_activation

glorot_uniform = jax.nn.initializers.glorot_uniform()
orthogonal = jax.nn.initializers.orthogonal()


class Cell(NamedTuple):
    """A recurrent cell: its kind, size and options (use the constructors, such as :func:`LSTMCell`).

    Attributes:
        kind: ``"SimpleRNNCell"``, ``"GRUCell"`` or ``"LSTMCell"``.
        units: the size of the state ``h``.
        options: the cell's other arguments, as JSON-able values.
    """

    kind: str
    units: int
    options: Mapping[str, Any] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The cell as JSON: ``{"kind": ..., "units": ..., **options}``; :func:`cell_from_config` inverts it."""
        return {"kind": self.kind, "units": self.units, **self.options}

    @property
    def gates(self) -> int:
        """How many blocks of ``units`` columns ``w`` and ``u`` have."""
        return {"SimpleRNNCell": 1, "GRUCell": 3, "LSTMCell": 4}[self.kind]


def SimpleRNNCell(units: int, activation: str = "tanh") -> Cell:
    """The Elman cell: ``h_t = activation(x_t @ w + b + h_{t-1} @ u)``.

    Args:
        units: the size of the state.
        activation: a name from ``ACTIVATIONS`` (a function cannot be recorded in the architecture).

    Params:
        ``{"w": (features, units), "u": (units, units), "b": (units,)}``. State: ``h`` ``(N, units)``.
    """
    check_positive(units, "units", "SimpleRNNCell")
    _, act_name = resolve_activation(activation, "SimpleRNNCell")
    if not isinstance(act_name, str):
        raise ValueError(f"SimpleRNNCell: `activation` must be one of the named activations, got {activation!r}.")
    return Cell("SimpleRNNCell", units, {"activation": act_name})


def GRUCell(units: int, reset_after: bool = True) -> Cell:
    """The gated recurrent unit, gates in Keras order ``z`` (update), ``r`` (reset), ``h`` (candidate).

    With ``a = x_t @ w + b`` split into ``a_z, a_r, a_h`` and ``u`` into ``u_z, u_r, u_h``::

        z = sigmoid(a_z + h @ u_z + b_u_z)
        r = sigmoid(a_r + h @ u_r + b_u_r)
        reset_after=True  (PyTorch, Keras 3):  n = tanh(a_h + r * (h @ u_h + b_u_h))
        reset_after=False (Cho et al. 2014):   n = tanh(a_h + (r * h) @ u_h)
        h_t = z * h + (1 - z) * n

    (PyTorch orders its gates r, z, n; its ``h_t = (1 - z) * n + z * h`` is the same update.)

    Args:
        units: the size of the state.
        reset_after: where the reset gate applies (see above).

    Params:
        ``{"w": (features, 3 units), "u": (units, 3 units), "b": (3 units,)}``, plus the recurrent
        bias ``"b_u": (3 units,)`` when ``reset_after``. State: ``h`` ``(N, units)``.
    """
    check_positive(units, "units", "GRUCell")
    if not isinstance(reset_after, bool):
        raise TypeError(f"GRUCell: `reset_after` must be True or False, got {reset_after!r}.")
    return Cell("GRUCell", units, {"reset_after": reset_after})


def LSTMCell(units: int, unit_forget_bias: bool = True) -> Cell:
    """The long short-term memory cell, gates in Keras (and PyTorch) order ``i, f, c, o``.

    With ``a = x_t @ w + b + h @ u`` split into ``a_i, a_f, a_c, a_o``::

        i = sigmoid(a_i); f = sigmoid(a_f); g = tanh(a_c); o = sigmoid(a_o)
        c_t = f * c + i * g
        h_t = o * tanh(c_t)

    Args:
        units: the size of the state.
        unit_forget_bias: initialise the forget gate's bias to 1 (Jozefowicz et al. 2015), else 0.

    Params:
        ``{"w": (features, 4 units), "u": (units, 4 units), "b": (4 units,)}``. State: ``(h, c)``,
        each ``(N, units)``.
    """
    check_positive(units, "units", "LSTMCell")
    if not isinstance(unit_forget_bias, bool):
        raise TypeError(f"LSTMCell: `unit_forget_bias` must be True or False, got {unit_forget_bias!r}.")
    return Cell("LSTMCell", units, {"unit_forget_bias": unit_forget_bias})


#: The cell constructors, by kind: what a recorded cell config may name.
CELLS = {"SimpleRNNCell": SimpleRNNCell, "GRUCell": GRUCell, "LSTMCell": LSTMCell}


def cell_from_config(config: Any) -> Cell:
    """The cell a :attr:`Cell.config` stands for (or ``config`` itself if it is a :class:`Cell`).

    Raises:
        ValueError: an unknown kind, or keys the kind does not record.
    """
    if isinstance(config, Cell):
        return config
    if not isinstance(config, Mapping) or config.get("kind") not in CELLS:
        raise ValueError(f"RNN: `cell` must be a cell such as LSTMCell(32), or its config with a 'kind' among "
                         f"{sorted(CELLS)}, got {config!r:.120}.")
    arguments = {k: v for k, v in config.items() if k != "kind"}
    make = CELLS[config["kind"]]
    recorded = set(make(1).config) - {"kind"}
    extra = sorted(set(arguments) - recorded)
    if extra or "units" not in arguments:
        raise ValueError(f"RNN: a {config['kind']} config records the keys {sorted(recorded)}, got "
                         f"{sorted(arguments)}.")
    return make(**arguments)


def init_cell_params(cell: Cell, key: Key, features: int) -> Params:
    """Fresh float32 params: Glorot-uniform ``w``, orthogonal ``u``, zero biases (LSTM's forget bias
    1 with ``unit_forget_bias``)."""
    width = cell.gates * cell.units
    w_key, u_key = jax.random.split(key)
    params = {"w": glorot_uniform(w_key, (features, width), jnp.float32),
              "u": orthogonal(u_key, (cell.units, width), jnp.float32),
              "b": jnp.zeros((width,), jnp.float32)}
    if cell.kind == "LSTMCell" and cell.options["unit_forget_bias"]:
        params["b"] = params["b"].at[cell.units:2 * cell.units].set(1.0)
    if cell.kind == "GRUCell" and cell.options["reset_after"]:
        params["b_u"] = jnp.zeros((width,), jnp.float32)
    return params


def param_names(cell: Cell) -> tuple[str, ...]:
    """The keys of the cell's params."""
    reset_after = cell.kind == "GRUCell" and cell.options["reset_after"]
    return ("w", "u", "b", "b_u") if reset_after else ("w", "u", "b")


def zero_state(cell: Cell, batch: int, dtype: Any) -> Any:
    """The initial state: ``h`` zeros ``(batch, units)``, or ``(h, c)`` for an LSTM."""
    h = jnp.zeros((batch, cell.units), dtype)
    return (h, h) if cell.kind == "LSTMCell" else h


def output_of(cell: Cell, state: Any) -> Array:
    """The output ``h`` of a state."""
    return state[0] if cell.kind == "LSTMCell" else state


def step(cell: Cell, params: Params, state: Any, projected: Array, recurrent_input: Array | None = None) -> Any:
    """One step: the new state from the previous one and ``projected = x_t @ w + b`` ``(N, G units)``.

    ``params`` holds ``u`` (and ``b_u``) already cast to the compute dtype. ``recurrent_input`` is
    the ``h`` that the recurrent products read (``h`` after recurrent dropout); it defaults to the
    state's ``h``, which the update itself (GRU's ``z * h``) always uses.
    """
    u = params["u"]
    h_in = output_of(cell, state) if recurrent_input is None else recurrent_input
    if cell.kind == "SimpleRNNCell":
        act, _ = resolve_activation(cell.options["activation"], "SimpleRNNCell")
        return act(projected + h_in @ u)
    if cell.kind == "LSTMCell":
        _, c = state
        i, f, g, o = jnp.split(projected + h_in @ u, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c
    h, units = state, cell.units
    a_z, a_r, a_h = jnp.split(projected, 3, axis=-1)
    if cell.options["reset_after"]:
        r_z, r_r, r_h = jnp.split(h_in @ u + params["b_u"], 3, axis=-1)
        z, r = jax.nn.sigmoid(a_z + r_z), jax.nn.sigmoid(a_r + r_r)
        n = jnp.tanh(a_h + r * r_h)
    else:
        r_z, r_r = jnp.split(h_in @ u[:, :2 * units], 2, axis=-1)
        z, r = jax.nn.sigmoid(a_z + r_z), jax.nn.sigmoid(a_r + r_r)
        n = jnp.tanh(a_h + (r * h_in) @ u[:, 2 * units:])
    return z * h + (1 - z) * n
