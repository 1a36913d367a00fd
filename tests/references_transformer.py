"""Float64 NumPy references for the pre-norm transformer blocks, written from the equations.

Params are nested dicts as the blocks' ``init`` makes them (see funcnet/layers/transformer.py):
``{"self_attention": {"norm", "attention"}, "mlp": {"norm", "hidden", "output"}}`` and, for a
decoder given memory, ``"cross_attention": {"norm", "attention"}``. Attention params follow the
MultiHeadAttention layout ``{"query": {"w": (C, H, D), "b": (H, D)}, "key": ..., "value": ...,
"output": {"w": (H, Dv, out), "b": (out,)}}``.
"""

from __future__ import annotations

import numpy as np

from tests import references as ref


def layer_norm(params, x, epsilon=1e-5):
    return ref.layer_norm(params, {}, x, epsilon=epsilon)


def rms_norm(params, x, epsilon=1e-6):
    return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + epsilon) * params["scale"]


def rotate(x, positions, base=10000.0):
    """Rotary embedding, split-half convention: channel i pairs with i + D/2, angle pos * base^(-2i/D).
    ``x`` is ``(N, T, heads, D)``, ``positions`` ``(T,)``."""
    half = x.shape[-1] // 2
    frequencies = base ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = positions[:, None] * frequencies[None, :]
    cos, sin = np.cos(angles)[None, :, None, :], np.sin(angles)[None, :, None, :]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def attention(params, query, key, *, causal=False, mask=None, rotary=False):
    """Multi-head attention of ``query (N, T, Cq)`` over ``key (N, S, Ck)`` (values = keys).

    ``mask``: bool ``(N, S)`` or ``(N, T, S)``, True where a query may attend; a query with no key
    left gives zeros before the output projection.
    """
    def project(part, x):
        p = params[part]
        y = np.einsum("nsc,chd->nshd", x, p["w"])
        return y + p["b"] if "b" in p else y

    q, k, v = project("query", query), project("key", key), project("value", key)
    if rotary:
        q, k = rotate(q, np.arange(q.shape[1], dtype=np.float64)), rotate(k, np.arange(k.shape[1], dtype=np.float64))
    heads, kv_heads = q.shape[2], k.shape[2]
    k, v = np.repeat(k, heads // kv_heads, axis=2), np.repeat(v, heads // kv_heads, axis=2)
    logits = np.einsum("nthd,nshd->nhts", q, k) / np.sqrt(q.shape[-1])
    allowed = np.ones((query.shape[0], 1, query.shape[1], key.shape[1]), bool)
    if causal:
        allowed = allowed & np.tril(np.ones((query.shape[1], key.shape[1]), bool))[None, None]
    if mask is not None:
        allowed = allowed & (mask[:, None, None, :] if mask.ndim == 2 else mask[:, None])
    logits = np.where(allowed, logits, -np.inf)
    top = np.max(np.where(allowed, logits, -1e300), axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(logits - top), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.where(total > 0, weights / np.where(total > 0, total, 1), 0.0)
    heads_out = np.einsum("nhts,nshd->nthd", weights, v)
    out = np.einsum("nthd,hdo->nto", heads_out, params["output"]["w"])
    return out + params["output"]["b"] if "b" in params["output"] else out


def _norm(kind):
    return layer_norm if kind == "layer" else rms_norm


def mlp(params, x, norm="layer"):
    hidden = _norm(norm)(params["norm"], x) @ params["hidden"]["w"] + params["hidden"]["b"]
    return x + ref.gelu_tanh({}, {}, hidden) @ params["output"]["w"] + params["output"]["b"]


def encoder_block(params, x, *, norm="layer", causal=False, mask=None, rotary=False):
    """``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""
    branch = params["self_attention"]
    normed = _norm(norm)(branch["norm"], x)
    x = x + attention(branch["attention"], normed, normed, causal=causal, mask=mask, rotary=rotary)
    return mlp(params["mlp"], x, norm)


def decoder_block(params, x, memory=None, *, norm="layer", mask=None, rotary=False):
    """Causal self-attention, then (with memory) cross-attention to it, then the MLP."""
    branch = params["self_attention"]
    normed = _norm(norm)(branch["norm"], x)
    x = x + attention(branch["attention"], normed, normed, causal=True, mask=mask, rotary=rotary)
    if memory is not None:
        cross = params["cross_attention"]
        x = x + attention(cross["attention"], _norm(norm)(cross["norm"], x), memory)
    return mlp(params["mlp"], x, norm)
