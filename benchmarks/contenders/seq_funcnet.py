"""funcnet's contenders of the sequence benchmark: its step and ``fit`` on the sequence networks.

The loops are :mod:`benchmarks.contenders.funcnet_runners`' (``make_train_step`` with its defaults,
and ``fn.fit``); only the network and its input spec differ.
"""

from __future__ import annotations

from typing import Any

import funcnet as fn
from benchmarks.contenders.funcnet_runners import FuncnetFit, FuncnetStep, FuncnetStepNoGuard


def lstm_model(spec: Any) -> fn.Layer:
    """``LSTM(units)`` (its last ``h``) and ``Dense(classes)``."""
    return fn.Sequential([fn.LSTM(spec.units), fn.Dense(spec.classes)])


def encoder_model(spec: Any) -> fn.Layer:
    """Embedding, learned positions, ``TransformerEncoderBlock`` s, LayerNorm, Dense(vocab) per token."""
    blocks = [fn.TransformerEncoderBlock(spec.heads, spec.mlp) for _ in range(spec.blocks)]
    return fn.Sequential([fn.Embedding(spec.vocab, spec.width), fn.PositionalEmbedding(spec.length), *blocks,
                          fn.LayerNorm(epsilon=spec.epsilon), fn.Dense(spec.vocab, rank=3)])


class LSTMNetwork:
    """Mixin: the LSTM classifier, on ``(None, steps, features)`` float inputs."""

    def network(self) -> fn.Layer:
        return lstm_model(self.spec)

    def input_spec(self) -> Any:
        return (None, self.spec.steps, self.spec.features)


class EncoderNetwork:
    """Mixin: the encoder, on ``(None, length)`` int32 tokens."""

    def network(self) -> fn.Layer:
        return encoder_model(self.spec)

    def input_spec(self) -> Any:
        return fn.spec((None, self.spec.length), "int32")


class LSTMStep(LSTMNetwork, FuncnetStep):
    pass


class LSTMStepNoGuard(LSTMNetwork, FuncnetStepNoGuard):
    pass


class LSTMFit(LSTMNetwork, FuncnetFit):
    pass


class EncoderStep(EncoderNetwork, FuncnetStep):
    pass


class EncoderStepNoGuard(EncoderNetwork, FuncnetStepNoGuard):
    pass


class EncoderFit(EncoderNetwork, FuncnetFit):
    pass
