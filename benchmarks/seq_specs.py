"""The sequence benchmark's networks, described once so that every library builds the same one.

* :class:`LSTMSpec`: an LSTM classifier on MNIST rows, ``(batch, steps, features)`` floats ->
  ``LSTM(units)`` (its last ``h``) -> ``Dense(classes)``; labels ``(batch,)`` integers.
* :class:`EncoderSpec`: a transformer encoder over tokens ``(batch, length)`` int32: an
  embedding, learned positions, ``blocks`` pre-norm blocks (``x + attention(LayerNorm(x))``,
  then ``x + Dense(width)(gelu(Dense(mlp)(LayerNorm(x))))``, gelu's tanh form), a final
  ``LayerNorm`` and ``Dense(vocab)`` per token; labels ``(batch, length)`` token ids.

The loss is softmax cross-entropy (per token for the encoder, averaged), the optimizer Adam 1e-3;
no dropout.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LSTMSpec:
    """An LSTM classifier and its batch size.

    Attributes:
        name: the key used in reports (``"lstm"``).
        title: how the report names it.
        batch: examples per step.
        steps: time steps per example.
        features: input features per step.
        units: the LSTM's state size.
        classes: output units.
    """

    name: str
    title: str
    batch: int
    steps: int = 28
    features: int = 28
    units: int = 128
    classes: int = 10
    family = "lstm"
    dropout = 0.0

    def flops_per_step(self) -> float:
        """Multiply-adds times 2 of the forward pass times 3 (forward and backward), per step."""
        per_example = self.steps * (self.features + self.units) * 4 * self.units + self.units * self.classes
        return 2.0 * 3.0 * per_example * self.batch

    def random_data(self, batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs in [0, 1) ``(batches * batch, steps, features)`` and integer labels."""
        rng = np.random.default_rng(seed)
        n = batches * self.batch
        x = rng.random((n, self.steps, self.features), dtype=np.float32)
        return x, rng.integers(0, self.classes, size=n).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """A pre-norm transformer encoder over tokens and its batch size.

    Attributes:
        name: the key used in reports (``"encoder"``).
        title: how the report names it.
        batch: sequences per step.
        length: tokens per sequence.
        width: the model width ``C``.
        heads: attention heads (each ``width // heads`` wide).
        mlp: the MLP's hidden width.
        blocks: encoder blocks.
        vocab: tokens in the vocabulary (also the output's width).
    """

    name: str
    title: str
    batch: int
    length: int = 128
    width: int = 128
    heads: int = 4
    mlp: int = 512
    blocks: int = 2
    vocab: int = 256
    family = "encoder"
    dropout = 0.0
    epsilon = 1e-5  # every library's LayerNorm

    def flops_per_step(self) -> float:
        """Multiply-adds times 2 of the forward pass times 3, per step (attention's two products
        included, the embedding lookup not)."""
        c, t = self.width, self.length
        per_token_block = 4 * c * c + 2 * c * self.mlp + 2 * t * c
        per_token = self.blocks * per_token_block + c * self.vocab
        return 2.0 * 3.0 * per_token * t * self.batch

    def random_data(self, batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random token ids ``(batches * batch, length)`` int32 and random target ids alike."""
        rng = np.random.default_rng(seed)
        shape = (batches * self.batch, self.length)
        x = rng.integers(0, self.vocab, size=shape).astype(np.int32)
        return x, rng.integers(0, self.vocab, size=shape).astype(np.int32)


SEQ_MODELS = {
    "lstm": LSTMSpec("lstm", "LSTM(128) classifier, 28 steps x 28 features, batch 128", 128),
    "encoder": EncoderSpec("encoder", "Transformer encoder, 2 pre-norm blocks, width 128, 4 heads, MLP 512, "
                           "256 tokens, sequence 128, batch 32", 32),
}

#: The same shapes of network, tiny, for smoke tests of the harness.
SMOKE_SEQ_MODELS = {
    "lstm": LSTMSpec("lstm", "LSTM(8) classifier, 5 steps x 3 features, batch 4 (smoke)", 4, steps=5, features=3,
                     units=8),
    "encoder": EncoderSpec("encoder", "Transformer encoder, 1 block, width 8, 2 heads, MLP 16, 11 tokens, "
                           "sequence 6, batch 2 (smoke)", 2, length=6, width=8, heads=2, mlp=16, blocks=1, vocab=11),
}
