"""Float64 NumPy references for attention, positions and RMSNorm, written from the equations (no funcnet code).

Attention is a loop over batch, head and query: a softmax over the keys that query may attend to, zeros when
there are none; grouped key/value heads are repeated; rotary embeddings rotate each pair of channels by its angle.
"""

from __future__ import annotations

import numpy as np


def rotate(x, positions, base=10000.0):
    """Rotary embedding of ``x`` (N, T, heads, D): channel i pairs with channel i + D/2 (split halves)."""
    half = x.shape[-1] // 2
    out = np.empty_like(x)
    for i in range(half):
        angle = positions[None, :, None] * base ** (-2 * i / x.shape[-1])
        x1, x2 = x[..., i], x[..., i + half]
        out[..., i] = x1 * np.cos(angle) - x2 * np.sin(angle)
        out[..., i + half] = x2 * np.cos(angle) + x1 * np.sin(angle)
    return out


def _project(params, x):
    y = np.einsum("ntc,chd->nthd", x, params["w"])
    return y + params["b"] if "b" in params else y


def attention(params, state, x, *, causal=False, rotary=False, base=10000.0, mask=None, bias=None, key=None,
              value=None, query_positions=None, key_positions=None):
    """MultiHeadAttention from its params: ``x`` is the query input; ``key``/``value`` default to it.

    ``mask`` is bool (N, S) or (N, T, S), True = attend; ``bias`` broadcasts to (N, H, T, S).
    """
    del state
    key = x if key is None else key
    value = key if value is None else value
    q, k, v = _project(params["query"], x), _project(params["key"], key), _project(params["value"], value)
    n, t, heads, d = q.shape
    s = k.shape[1]
    query_positions = np.arange(t) if query_positions is None else query_positions
    key_positions = np.arange(s) if key_positions is None else key_positions
    if rotary:
        q, k = rotate(q, query_positions, base), rotate(k, key_positions, base)
    group = heads // k.shape[2]
    allowed = np.ones((n, t, s), bool)
    if causal:
        allowed &= key_positions[None, None, :] <= query_positions[None, :, None]
    if mask is not None:
        allowed &= mask[:, None, :] if mask.ndim == 2 else mask
    extra = np.zeros((n, heads, t, s)) if bias is None else np.broadcast_to(bias, (n, heads, t, s))
    heads_out = np.zeros((n, t, heads, v.shape[-1]))
    for b in range(n):
        for h in range(heads):
            kv = h // group  # query head h reads key/value head h // group
            for i in range(t):
                keep = allowed[b, i]
                if not keep.any():
                    continue
                logits = k[b, :, kv] @ q[b, i, h] / np.sqrt(d) + extra[b, h, i]
                logits = np.where(keep, logits, -np.inf)
                weights = np.exp(logits - logits.max())
                heads_out[b, i, h] = (weights / weights.sum()) @ v[b, :, kv]
    y = np.einsum("nthd,hdo->nto", heads_out, params["output"]["w"])
    return y + params["output"]["b"] if "b" in params["output"] else y


def sinusoid(positions, features, base=10000.0):
    """Vaswani et al.: e[p, 2i] = sin(p / base^(2i/C)), e[p, 2i+1] = cos(p / base^(2i/C))."""
    e = np.zeros((len(positions), features))
    for c in range(features):
        angle = positions / base ** ((c - c % 2) / features)
        e[:, c] = np.sin(angle) if c % 2 == 0 else np.cos(angle)
    return e


def rms_norm(params, state, x, epsilon=1e-6):
    del state
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + epsilon) * params["scale"]
