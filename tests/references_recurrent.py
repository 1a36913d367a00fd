"""Float64 NumPy references for the recurrent cells and RNN, written from the equations (no funcnet code).

Each step is a plain Python loop over time, gate by gate, with the gates' columns sliced by name.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _gate(params, name, index, units):
    """Columns ``index * units : (index + 1) * units`` of params[name]."""
    return params[name][..., index * units:(index + 1) * units]


def simple_rnn_step(params, h, x_t, activation=np.tanh, h_in=None):
    """``h_in`` is the h the recurrent product reads (after recurrent dropout); default h."""
    h_in = h if h_in is None else h_in
    return activation(x_t @ params["w"] + params["b"] + h_in @ params["u"])


def lstm_step(params, state, x_t, h_in=None):
    h, c = state
    h_in = h if h_in is None else h_in
    units = h.shape[-1]
    a = {gate: x_t @ _gate(params, "w", k, units) + h_in @ _gate(params, "u", k, units) + _gate(params, "b", k, units)
         for k, gate in enumerate("ifco")}
    c = _sigmoid(a["f"]) * c + _sigmoid(a["i"]) * np.tanh(a["c"])
    return _sigmoid(a["o"]) * np.tanh(c), c


def gru_step(params, h, x_t, reset_after=True, h_in=None):
    h_in = h if h_in is None else h_in
    units = h.shape[-1]
    w = {g: _gate(params, "w", k, units) for k, g in enumerate("zrh")}
    u = {g: _gate(params, "u", k, units) for k, g in enumerate("zrh")}
    b = {g: _gate(params, "b", k, units) for k, g in enumerate("zrh")}
    if reset_after:
        bu = {g: _gate(params, "b_u", k, units) for k, g in enumerate("zrh")}
        z = _sigmoid(x_t @ w["z"] + b["z"] + h_in @ u["z"] + bu["z"])
        r = _sigmoid(x_t @ w["r"] + b["r"] + h_in @ u["r"] + bu["r"])
        n = np.tanh(x_t @ w["h"] + b["h"] + r * (h_in @ u["h"] + bu["h"]))
    else:
        z = _sigmoid(x_t @ w["z"] + b["z"] + h_in @ u["z"])
        r = _sigmoid(x_t @ w["r"] + b["r"] + h_in @ u["r"])
        n = np.tanh(x_t @ w["h"] + b["h"] + (r * h_in) @ u["h"])
    return z * h + (1 - z) * n


def rnn(params, state, x, *, kind, return_sequences=False, return_state=False, reverse=False, valid=None,
        initial_state=None, input_keep=None, dropout=0.0, state_keep=None, recurrent_dropout=0.0, **options):
    """The whole layer: ``kind`` is "simple", "gru" or "lstm"; options go to the step.

    Args:
        valid: bool (N, T), True at real steps: a padded step keeps the state and outputs zeros.
        initial_state: h, or (h, c) for "lstm"; zeros if None.
        input_keep, dropout: a 0/1 (N, T, features) mask applied to x, kept values scaled by 1 / (1 - dropout).
        state_keep, recurrent_dropout: 0/1 (T, N, units) masks, the one of step t applied to the h that
            step t's recurrent product reads (indexed by the step's position, in either direction).
    """
    del state
    batch, steps, _ = x.shape
    units = params["u"].shape[0]
    zeros = np.zeros((batch, units))
    carry = ((zeros, zeros) if kind == "lstm" else zeros) if initial_state is None else initial_state
    valid = np.ones((batch, steps), bool) if valid is None else np.asarray(valid, bool)
    if input_keep is not None:
        x = x * input_keep / (1 - dropout)
    step = {"simple": simple_rnn_step, "gru": gru_step, "lstm": lstm_step}[kind]
    outputs = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        h = carry[0] if kind == "lstm" else carry
        h_in = h if state_keep is None else h * state_keep[t] / (1 - recurrent_dropout)
        new = step(params, carry, x[:, t], h_in=h_in, **options)
        keep = valid[:, t][:, None]
        carry = tuple(np.where(keep, n, c) for n, c in zip(new, carry)) if kind == "lstm" else \
            np.where(keep, new, carry)
        outputs[t] = np.where(keep, carry[0] if kind == "lstm" else carry, 0.0)
    h = carry[0] if kind == "lstm" else carry
    y = np.stack(outputs, axis=1) if return_sequences else h
    return (y, carry) if return_state else y


def bidirectional(params, state, x, *, kind, merge, **options):
    """Both directions of :func:`rnn`, each with its own params (``params["forward"]``,
    ``params["backward"]``), the backward one reading the other way, merged."""
    forward = rnn(params["forward"], state, x, kind=kind, **options)
    backward = rnn(params["backward"], state, x, kind=kind, **{**options, "reverse": not options.get("reverse")})
    return {"concat": lambda: np.concatenate([forward, backward], -1), "sum": lambda: forward + backward,
            "mul": lambda: forward * backward, "ave": lambda: (forward + backward) / 2}[merge]()
