"""PositionalEmbedding and SinusoidalEncoding in decode mode and their length check; RMSNorm's float32 statistics.

Their plain forward passes and gradients are registry cases (cases_attention.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from tests import references_attention as ref


def test_positional_embedding_adds_rows_t_onwards_in_decode_mode():
    layer = fn.PositionalEmbedding(8)
    _, params, state = layer.init(jax.random.key(0), (None, 3, 4),
                                  context={"decode": jax.ShapeDtypeStruct((2, 8), jnp.int32)})
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    y, _ = jax.jit(lambda xx, t: layer.apply(params, state, xx, context={"decode": t}))(x, 5)
    np.testing.assert_allclose(y, x + np.asarray(params["embeddings"])[None, 5:8], rtol=1e-6)


def test_positional_embedding_refuses_sequences_longer_than_max_length_at_init():
    layer = fn.PositionalEmbedding(4)
    with pytest.raises(fn.ShapeError, match=r"PositionalEmbedding\(max_length=4\) cannot embed an input of shape "
                                            r"\(N, 5, 3\): it has 5 positions.*\nHint: build it with max_length >= 5"):
        layer.init(jax.random.key(0), (None, 5, 3))
    with pytest.raises(fn.ShapeError, match=r"cannot embed a decode cache of length 6"):
        layer.init(jax.random.key(0), (None, 1, 3), context={"decode": jax.ShapeDtypeStruct((2, 6), jnp.int32)})


def test_sinusoidal_encoding_of_positions_t_onwards_in_decode_mode():
    layer = fn.SinusoidalEncoding()
    x = np.zeros((1, 2, 6), np.float32)
    y, _ = layer.apply({}, {}, x, context={"decode": 40})
    np.testing.assert_allclose(y[0], ref.sinusoid(np.arange(40, 42), 6), rtol=1e-5, atol=1e-6)


def test_rms_norm_computes_its_statistics_in_float32_for_bfloat16_inputs():
    layer = fn.RMSNorm()
    _, params, _ = layer.init(jax.random.key(0), (None, 256))
    x = np.random.default_rng(1).standard_normal((2, 256)) * 300 + 1000
    y, _ = layer.apply(params, {}, jnp.asarray(x, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    x_bf16 = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    # Rounded once to bfloat16 at the end: within bfloat16's resolution (2**-8) of the float64 result.
    np.testing.assert_allclose(np.asarray(y, np.float64), ref.rms_norm({"scale": np.ones(256)}, {}, x_bf16),
                               rtol=2**-8)
