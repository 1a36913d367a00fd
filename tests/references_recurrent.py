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


def simple_rnn_step(params, h, x_t, activation=np.tanh):
    return activation(x_t @ params["w"] + params["b"] + h @ params["u"])


def lstm_step(params, state, x_t):
    h, c = state
    units = h.shape[-1]
    a = {gate: x_t @ _gate(params, "w", k, units) + h @ _gate(params, "u", k, units) + _gate(params, "b", k, units)
         for k, gate in enumerate("ifco")}
    c = _sigmoid(a["f"]) * c + _sigmoid(a["i"]) * np.tanh(a["c"])
    return _sigmoid(a["o"]) * np.tanh(c), c


def gru_step(params, h, x_t, reset_after=True):
    units = h.shape[-1]
    w = {g: _gate(params, "w", k, units) for k, g in enumerate("zrh")}
    u = {g: _gate(params, "u", k, units) for k, g in enumerate("zrh")}
    b = {g: _gate(params, "b", k, units) for k, g in enumerate("zrh")}
    if reset_after:
        bu = {g: _gate(params, "b_u", k, units) for k, g in enumerate("zrh")}
        z = _sigmoid(x_t @ w["z"] + b["z"] + h @ u["z"] + bu["z"])
        r = _sigmoid(x_t @ w["r"] + b["r"] + h @ u["r"] + bu["r"])
        n = np.tanh(x_t @ w["h"] + b["h"] + r * (h @ u["h"] + bu["h"]))
    else:
        z = _sigmoid(x_t @ w["z"] + b["z"] + h @ u["z"])
        r = _sigmoid(x_t @ w["r"] + b["r"] + h @ u["r"])
        n = np.tanh(x_t @ w["h"] + b["h"] + (r * h) @ u["h"])
    return z * h + (1 - z) * n


def rnn(params, state, x, *, kind, return_sequences=False, return_state=False, reverse=False, **options):
    """The whole layer: ``kind`` is "simple", "gru" or "lstm"; options go to the step."""
    del state
    batch, steps, _ = x.shape
    units = params["u"].shape[0]
    zeros = np.zeros((batch, units))
    carry = (zeros, zeros) if kind == "lstm" else zeros
    step = {"simple": simple_rnn_step, "gru": gru_step, "lstm": lstm_step}[kind]
    outputs = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        carry = step(params, carry, x[:, t], **options)
        outputs[t] = carry[0] if kind == "lstm" else carry
    h = carry[0] if kind == "lstm" else carry
    y = np.stack(outputs, axis=1) if return_sequences else h
    return (y, carry) if return_state else y
