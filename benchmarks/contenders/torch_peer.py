"""PyTorch eager on the CPU: ``nn.Sequential``, ``torch.optim.Adam``, ``nn.CrossEntropyLoss``.

Channels-first images, as PyTorch's layers expect. :class:`TorchEager` uses PyTorch's default
number of threads (the machine's cores), :class:`TorchEagerOneThread` one thread: on a loaded
machine PyTorch's thread synchronisation can cost more than the arithmetic, so both are shown.
The loss is read (a synchronisation) only after a block of steps, as JAX's are.
"""

from __future__ import annotations

import torch

from benchmarks.contenders.base import Runner

DEFAULT_THREADS = torch.get_num_threads()


class TorchEager(Runner):
    threads = DEFAULT_THREADS

    def start(self) -> None:
        torch.set_num_threads(self.threads)
        torch.manual_seed(0)
        spec, layers, channels = self.spec, [], self.spec.image[-1]
        for filters, pooled in spec.convs:
            layers += [torch.nn.Conv2d(channels, filters, 3), torch.nn.ReLU()]
            if pooled:
                layers.append(torch.nn.MaxPool2d(2))
            channels = filters
        layers.append(torch.nn.Flatten())
        features = spec.flat_features()
        for units in spec.dense:
            layers += [torch.nn.Linear(features, units), torch.nn.ReLU()]
            features = units
        layers.append(torch.nn.Linear(features, spec.classes))
        self.model = torch.nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = torch.nn.CrossEntropyLoss()
        x = torch.from_numpy(self.x.transpose(0, 3, 1, 2).copy())
        y = torch.from_numpy(self.y.astype("int64"))
        self.batches_t = [(x[self.batch(i)], y[self.batch(i)]) for i in range(self.batches)]
        self.run(1)

    def run(self, steps: int) -> None:
        torch.set_num_threads(self.threads)  # process-wide: set for each block
        loss = None
        for _ in range(steps):
            x, y = self.batches_t[self.step_count % self.batches]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criterion(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.step_count += 1
        self.last_loss = float(loss.detach())

    def loss(self) -> float:
        return self.last_loss


class TorchEagerOneThread(TorchEager):
    threads = 1
