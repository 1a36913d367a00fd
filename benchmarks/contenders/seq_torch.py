"""PyTorch eager contenders of the sequence benchmark: ``nn.LSTM`` and ``nn.TransformerEncoder``.

The loop is :class:`benchmarks.contenders.torch_peer.TorchEager`'s (Adam 1e-3,
``nn.CrossEntropyLoss``, the loss read only after a block of steps); the ``OneThread`` variants
run on one thread. The encoder's logits and targets are flattened to ``(N * T, vocab)`` and
``(N * T,)`` for the loss, which averages over tokens as the JAX contenders' does.
"""

from __future__ import annotations

import functools

import torch

from benchmarks.contenders.torch_peer import TorchEager


class LSTMNet(torch.nn.Module):
    """``nn.LSTM`` (batch first) and a ``Linear`` on its last ``h``."""

    def __init__(self, features: int, units: int, classes: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(features, units, batch_first=True)
        self.head = torch.nn.Linear(units, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[0])


class EncoderNet(torch.nn.Module):
    """Embedding, learned positions, ``nn.TransformerEncoder`` (pre-norm, no dropout, gelu's tanh
    form as in JAX), a final ``LayerNorm`` and a ``Linear`` per token; logits flattened."""

    def __init__(self, vocab: int, length: int, width: int, heads: int, mlp: int, blocks: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.positions = torch.nn.Parameter(0.02 * torch.randn(length, width))
        layer = torch.nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, batch_first=True, norm_first=True,
                                                 activation=functools.partial(torch.nn.functional.gelu,
                                                                              approximate="tanh"))
        self.blocks = torch.nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(tokens) + self.positions)
        logits = self.head(self.norm(x))
        return logits.reshape(-1, logits.shape[-1])


class TorchSeq(TorchEager):
    """Builds :meth:`network` on the spec and trains it with :class:`TorchEager`'s loop."""

    def network(self) -> torch.nn.Module:
        raise NotImplementedError

    def start(self) -> None:
        torch.set_num_threads(self.threads)
        torch.manual_seed(0)
        self.model = self.network()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = torch.nn.CrossEntropyLoss()
        x = torch.from_numpy(self.x)
        y = torch.from_numpy(self.y.astype("int64"))
        self.batches_t = [(x[self.batch(i)], y[self.batch(i)].reshape(-1)) for i in range(self.batches)]
        self.run(1)


class TorchLSTM(TorchSeq):
    def network(self) -> torch.nn.Module:
        return LSTMNet(self.spec.features, self.spec.units, self.spec.classes)


class TorchLSTMOneThread(TorchLSTM):
    threads = 1


class TorchEncoder(TorchSeq):
    def network(self) -> torch.nn.Module:
        s = self.spec
        return EncoderNet(s.vocab, s.length, s.width, s.heads, s.mlp, s.blocks)


class TorchEncoderOneThread(TorchEncoder):
    threads = 1
