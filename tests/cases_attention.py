"""Registry cases for attention, positions and RMSNorm (see layer_cases.py), against tests/references_attention.py.

Side inputs (masks, a bias), cross-attention and decode mode are tested in test_attention.py.
"""

from __future__ import annotations

from functools import partial as p

import numpy as np

import funcnet as fn
from tests import references_attention as ref
from tests.layer_cases import LayerCase

ATTENTION = [
    LayerCase("attention", lambda: fn.MultiHeadAttention(2, 3), (2, 4, 5), ref.attention),
    LayerCase("attention_causal_gqa_rotary",
              lambda: fn.MultiHeadAttention(4, 4, num_kv_heads=2, causal=True, rotary=True, out_features=3),
              (2, 5, 6), p(ref.attention, causal=True, rotary=True)),
    LayerCase("attention_mqa_value_size_no_bias",
              lambda: fn.MultiHeadAttention(3, 2, value_size=3, num_kv_heads=1, use_bias=False, causal=True),
              (2, 4, 3), p(ref.attention, causal=True)),
    LayerCase("attention_dropout", lambda: fn.MultiHeadAttention(2, 2, dropout=0.2), (2, 3, 4), ref.attention,
              random_in_training=True),
    LayerCase("positional_embedding", lambda: fn.PositionalEmbedding(6), (2, 4, 3),
              lambda params, s, x: x + params["embeddings"][None, :x.shape[1]]),
    LayerCase("sinusoidal_encoding", lambda: fn.SinusoidalEncoding(base=100.0), (2, 5, 5),
              lambda params, s, x: x + ref.sinusoid(np.arange(x.shape[1]), x.shape[-1], 100.0)[None]),
    LayerCase("rms_norm", lambda: fn.RMSNorm(), (3, 4), ref.rms_norm),
    LayerCase("rms_norm_rank4_epsilon", lambda: fn.RMSNorm(epsilon=0.5), (2, 3, 2, 5), p(ref.rms_norm, epsilon=0.5)),
]
