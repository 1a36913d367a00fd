"""The time loop of an RNN layer, with a gradient that takes the weight products out of the loop.

Autodiff of ``jax.lax.scan`` accumulates the weight gradients inside its backward loop: at each
step a small ``(units, N) @ (N, G units)`` product for ``du`` (and one for ``dw``), which XLA's
CPU backend runs poorly. For a cell that splits into linear products and an elementwise update
(:func:`funcnet.layers.recurrent_cells.splits`), :func:`scan_cell` has a custom VJP instead, as
cuDNN and PyTorch do: the forward loop saves each step's gate inputs and previous state; the
backward loop runs only the elementwise update's VJP (``jax.vjp`` of
:func:`funcnet.layers.recurrent_cells.update`) and ``dh_{t-1} = dz_h @ u.T``; after it, one product
over all ``T * N`` rows each gives ``du = H^T dZ_h``, ``dw = X^T dZ_x``, ``dx = dZ_x w^T`` and the
biases' sums.

The custom VJP serves reverse mode (``jax.grad``, ``jax.vjp``, also of a gradient); forward mode
(``jax.jvp``, ``jax.jacfwd``) raises JAX's ``TypeError`` "can't apply forward-mode autodiff (jvp)
to a custom_vjp function". The GRU with ``reset_after=False`` keeps plain autodiff of the scan.

What the loop reads at each step, time-major (``xs``): ``"x"`` ``(T, N, features)``; optionally
``"valid"`` ``(T, N)`` bool (a padded step keeps the state and outputs zeros) and ``"keep"``
``(T, N, units)``, the recurrent dropout's multiplier of the ``h`` the recurrent product reads.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.core import Array, Params
from funcnet.layers.recurrent_cells import Cell, gate_inputs, output_of, recurrent_product, splits, step, update


class Loop(NamedTuple):
    """How the time loop runs: the scan's direction and ``unroll``, and whether every step's output
    is returned."""

    reverse: bool
    unroll: int
    return_sequences: bool


def scan_cell(cell: Cell, loop: Loop, weights: Params, carry: Any, xs: dict[str, Array]) -> tuple[Any, Any]:
    """Runs ``cell`` over the steps of ``xs`` from ``carry``.

    Args:
        cell: the cell.
        loop: direction, unroll, and whether to return every step's output.
        weights: the cell's params in the compute dtype.
        carry: the initial state, ``h`` ``(N, units)`` or ``(h, c)``.
        xs: the per-step inputs (see the module docstring).

    Returns:
        ``(final_state, outputs)``: outputs ``(T, N, units)`` time-major if ``loop.return_sequences``,
        else None.
    """
    if splits(cell):
        return _split_scan(cell, loop, weights, carry, xs)
    return scan_plain(cell, loop, weights, carry, xs)


def scan_plain(cell: Cell, loop: Loop, weights: Params, carry: Any, xs: dict[str, Array]) -> tuple[Any, Any]:
    """:func:`scan_cell`'s loop with plain autodiff of ``jax.lax.scan`` (for a GRU with
    ``reset_after=False``, and the reference its custom VJP is tested against)."""
    return _forward(cell, loop, weights, carry, xs, save=False)[:2]


def _forward(cell: Cell, loop: Loop, weights: Params, carry: Any, xs: dict[str, Array], save: bool) -> tuple:
    """``(final_state, outputs or None, saved)``: ``saved`` (with ``save``) stacks each step's gate inputs,
    previous state and, with recurrent dropout, the ``h`` its product read."""

    def body(carry: Any, xs_t: dict[str, Array]) -> tuple[Any, tuple]:
        h_in = output_of(cell, carry)
        if "keep" in xs_t:
            h_in = h_in * xs_t["keep"]
        projected = xs_t["x"] @ weights["w"] + weights["b"]
        valid = xs_t.get("valid")
        if not splits(cell):
            new, out = _masked(cell, step(cell, weights, carry, projected, recurrent_input=h_in), carry, valid)
            return new, (out if loop.return_sequences else None, None)
        gates_in = gate_inputs(cell, projected, recurrent_product(cell, weights, h_in))
        new, out = _elementwise(cell, gates_in, carry, valid)
        saved = None
        if save:
            saved = {"gates_in": gates_in, "carry": carry, "h_in": h_in if "keep" in xs_t else None}
        return new, (out if loop.return_sequences else None, saved)

    final, (outputs, saved) = jax.lax.scan(body, carry, xs, reverse=loop.reverse, unroll=loop.unroll)
    return final, outputs, saved


def _elementwise(cell: Cell, gates_in: Any, carry: Any, valid: Array | None) -> tuple[Any, Array]:
    """The new state and the step's output, for a cell that splits."""
    return _masked(cell, update(cell, carry, gates_in), carry, valid)


def _masked(cell: Cell, new: Any, carry: Any, valid: Array | None) -> tuple[Any, Array]:
    """The step's state and output: a padded step (``valid`` False) keeps the state and outputs zeros."""
    out = output_of(cell, new)
    if valid is None:
        return new, out
    new = jax.tree.map(lambda n, c: jnp.where(valid[:, None], n, c), new, carry)
    return new, jnp.where(valid[:, None], out, jnp.zeros((), out.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _split_scan(cell: Cell, loop: Loop, weights: Params, carry: Any, xs: dict[str, Array]) -> tuple[Any, Any]:
    """:func:`scan_plain`'s values, with the gradient of :func:`_split_scan_backward`."""
    return scan_plain(cell, loop, weights, carry, xs)


def _split_scan_forward(cell: Cell, loop: Loop, weights: Params, carry: Any, xs: dict[str, Array]) -> tuple:
    """The values and the residuals: the weights, the per-step inputs and what the loop saved."""
    final, outputs, saved = _forward(cell, loop, weights, carry, xs, save=True)
    return (final, outputs), (weights, xs, saved)


def _split_scan_backward(cell: Cell, loop: Loop, residuals: tuple, cotangents: tuple) -> tuple:
    """The gradients of the weights, the initial state and ``xs["x"]`` (None for the mask and dropout
    multipliers, which do not depend on params): the loop carries only the state's gradient."""
    weights, xs, saved = residuals
    d_final, d_outputs = cotangents
    u_t = weights["u"].T
    per_step = {"saved": saved, "valid": xs.get("valid"), "keep": xs.get("keep"), "d_out": d_outputs}

    def body(d_carry: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
        saved_t, valid = inputs["saved"], inputs["valid"]
        new_and_out, vjp = jax.vjp(functools.partial(_elementwise, cell, valid=valid),
                                   saved_t["gates_in"], saved_t["carry"])
        d_out = inputs["d_out"]
        if d_out is None:  # outputs not returned: only the state carries a gradient
            d_out = jnp.zeros_like(new_and_out[1])
        d_gates_in, d_prev = vjp((d_carry, d_out))
        d_h = _d_recurrent(cell, d_gates_in) @ u_t
        if inputs["keep"] is not None:
            d_h = d_h * inputs["keep"]
        if cell.kind == "LSTMCell":
            return (d_prev[0] + d_h, d_prev[1]), d_gates_in
        return d_prev + d_h, d_gates_in

    d_carry, d_gates_in = jax.lax.scan(body, d_final, per_step, reverse=not loop.reverse, unroll=loop.unroll)
    d_z_x, d_z_h = _d_projection(cell, d_gates_in), _d_recurrent(cell, d_gates_in)
    h_in = output_of(cell, saved["carry"]) if saved["h_in"] is None else saved["h_in"]
    d_weights = {"w": jnp.einsum("tnf,tng->fg", xs["x"], d_z_x), "u": jnp.einsum("tnu,tng->ug", h_in, d_z_h),
                 "b": d_z_x.sum((0, 1))}
    if "b_u" in weights:
        d_weights["b_u"] = d_z_h.sum((0, 1))
    d_xs = {name: None for name in xs}
    d_xs["x"] = jnp.einsum("tng,fg->tnf", d_z_x, weights["w"])
    return d_weights, d_carry, d_xs


def _d_projection(cell: Cell, d_gates_in: Any) -> Array:
    """The gradient of ``z_x`` from that of :func:`gate_inputs` (the same array unless a GRU's pair)."""
    return d_gates_in[0] if cell.kind == "GRUCell" else d_gates_in


def _d_recurrent(cell: Cell, d_gates_in: Any) -> Array:
    """The gradient of ``z_h`` from that of :func:`gate_inputs`."""
    return d_gates_in[1] if cell.kind == "GRUCell" else d_gates_in


_split_scan.defvjp(_split_scan_forward, _split_scan_backward)
