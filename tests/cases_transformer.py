"""Registry cases for the transformer blocks (see layer_cases.py), against tests/references_transformer.py."""

from __future__ import annotations

from functools import partial as p

import funcnet as fn
from tests import references_transformer as ref
from tests.layer_cases import LayerCase


def _encoder(**options):
    return lambda params, state, x: ref.encoder_block(params, x, **options)


def _decoder(**options):
    return lambda params, state, x: ref.decoder_block(params, x, **options)


TRANSFORMER = [
    LayerCase("transformer_encoder", lambda: fn.TransformerEncoderBlock(2, 12), (2, 5, 8), _encoder()),
    LayerCase("transformer_encoder_causal_rms_rotary", p(fn.TransformerEncoderBlock, 2, 6, key_size=4, causal=True,
                                                         norm="rms", rotary=True),
              (2, 4, 6), _encoder(norm="rms", causal=True, rotary=True)),
    LayerCase("transformer_decoder", lambda: fn.TransformerDecoderBlock(2, 8), (2, 4, 6), _decoder()),
]
