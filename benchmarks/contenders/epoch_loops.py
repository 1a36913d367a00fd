"""Whole-epoch loops for the epoch and modes benchmarks: each :meth:`run` is one shuffled epoch.

* :class:`HandScanEpoch`: the hand-written JAX step inside one jitted ``jax.lax.scan`` over the
  epoch, the data on the device and each batch gathered inside the scan from a permutation.
* :class:`HandHostLoop`: the hand-written step, jitted, called once per batch on NumPy batches cut
  on the host from a NumPy permutation (the usual loop over a data loader).
* :class:`TorchEpoch`: PyTorch eager over host batches cut from a ``torch.randperm``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from benchmarks.contenders.base import Runner
from benchmarks.contenders.jax_peers import hand_params, hand_step


class HandScanEpoch(Runner):
    def start(self) -> None:
        tx = optax.adam(1e-3)
        step = hand_step(self.spec, tx)
        batch, steps = self.spec.batch, self.batches

        def epoch(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple:
            order = jax.random.permutation(key, x.shape[0])[: steps * batch].reshape(steps, batch)

            def body(carry: tuple, indices: jax.Array) -> tuple:
                params, opt_state, loss = step(*carry, x[indices], y[indices])
                return (params, opt_state), loss

            (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), order)
            return params, opt_state, losses[-1]

        self.epoch = jax.jit(epoch, donate_argnums=(0, 1))
        params = hand_params(self.spec, jax.random.key(0))
        self.carry = (params, tx.init(params))
        self.data = jax.device_put((self.x, self.y))
        self.count = 0
        self.first_call_steps = self.batches
        self.run(self.batches)

    def run(self, steps: int) -> None:
        if steps != self.batches:
            raise ValueError(f"one call is one epoch of {self.batches} steps, asked {steps}")
        key = jax.random.key(self.count)
        params, opt_state, self.last_loss = self.epoch(*self.carry, *self.data, key)
        self.carry = (params, opt_state)
        self.count += 1
        jax.block_until_ready(self.last_loss)

    def loss(self) -> float:
        return float(self.last_loss)


class HandHostLoop(Runner):
    def start(self) -> None:
        tx = optax.adam(1e-3)
        self.step = jax.jit(hand_step(self.spec, tx), donate_argnums=(0, 1))
        params = hand_params(self.spec, jax.random.key(0))
        self.carry = (params, tx.init(params))
        self.rng = np.random.default_rng(0)
        self.first_call_steps = self.batches
        self.run(self.batches)

    def run(self, steps: int) -> None:
        order = self.rng.permutation(len(self.x))
        batch = self.spec.batch
        params, opt_state = self.carry
        loss = None
        for i in range(steps):
            indices = order[i * batch:(i + 1) * batch]
            params, opt_state, loss = self.step(params, opt_state, self.x[indices], self.y[indices])
        self.carry, self.last_loss = (params, opt_state), loss
        jax.block_until_ready(loss)

    def loss(self) -> float:
        return float(self.last_loss)


class TorchEpoch(Runner):
    threads: int | None = None  # None: PyTorch's default

    def start(self) -> None:
        import torch

        from benchmarks.contenders.torch_peer import TorchEager, TorchEagerOneThread

        self.torch = torch
        loop = TorchEagerOneThread if self.threads == 1 else TorchEager
        self.inner = loop(self.spec, self.x[: self.spec.batch], self.y[: self.spec.batch])
        self.inner.start()
        self.tx = torch.from_numpy(self.x.transpose(0, 3, 1, 2).copy())
        self.ty = torch.from_numpy(self.y.astype("int64"))
        self.first_call_steps = self.batches
        self.run(self.batches)

    def run(self, steps: int) -> None:
        torch, inner, batch = self.torch, self.inner, self.spec.batch
        torch.set_num_threads(inner.threads)
        order = torch.randperm(len(self.tx))
        loss = None
        for i in range(steps):
            indices = order[i * batch:(i + 1) * batch]
            inner.optimizer.zero_grad(set_to_none=True)
            loss = inner.criterion(inner.model(self.tx[indices]), self.ty[indices])
            loss.backward()
            inner.optimizer.step()
        self.last_loss = float(loss.detach())

    def loss(self) -> float:
        return self.last_loss


class TorchEpochOneThread(TorchEpoch):
    threads = 1
