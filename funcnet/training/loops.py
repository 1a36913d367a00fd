"""The compiled loops behind ``fit``, ``evaluate`` and ``predict``.

With the data on the device, a batch is gathered inside the compiled function from the epoch's
index matrix (see :mod:`funcnet.training.batching`), so a training step needs no host work: in
``"step"`` mode Python dispatches one compiled step per batch; in ``"scan"`` mode one call runs a
whole epoch (or ``steps_per_call`` steps) as one compiled loop. Both run the same step body,
which threads a :class:`Carry` holding the params, the optimizer state and the running metrics.
Data that does not fit on the device is batched on the host and copied ahead of the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Array, Key, Params, State
from funcnet.training.batching import gather, padding_mask, step_key
from funcnet.training.cache import cached
from funcnet.training.sharded import Layout, jit_on
from funcnet.training.step import TrainProgram

__all__ = ["Batches", "Carry", "EvalLoop", "TrainLoop", "eval_order"]


class Carry(NamedTuple):
    """What a training step passes to the next: all of it lives on the device."""

    params: Params
    state: State
    opt_state: Any
    acc: dict
    row: Array  # the batch's row in the epoch's index matrix
    step: Array  # optimisation steps since the start of training


@dataclasses.dataclass(frozen=True)
class Batches:
    """How batches are cut: ``n`` examples, ``batch_size`` per batch, weights or not.

    ``masked`` is True when batches carry weights: a padded last batch, or sample weights.
    """

    n: int
    batch_size: int
    masked: bool

    def take(self, data: tuple, order: Array, row: Array) -> tuple[Any, Any, Array | None]:
        """Batch ``row`` of ``order`` from device-resident ``data = (x, y, sample_weight)``."""
        x, y, sample_weight = data
        indices = jax.lax.dynamic_index_in_dim(order, row, keepdims=False)
        weights = None
        if self.masked:
            weights = padding_mask(row, self.n, self.batch_size)
            if sample_weight is not None:
                weights = weights * gather(sample_weight, indices).astype(jnp.float32)
        return gather(x, indices), gather(y, indices), weights


def eval_order(n: int, batch_size: int) -> np.ndarray:
    """Indices ``0..n-1`` in rows of ``batch_size``, the last row padded with the first examples."""
    rows = -(-n // batch_size)
    return (np.arange(rows * batch_size) % n).reshape(rows, batch_size).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class TrainLoop:
    """Builds the jitted functions one fit uses (each compiles once per shape).

    With a ``layout`` (a device mesh), they are :class:`funcnet.training.sharded.ShardedJit`: the
    carry placed as parameters (replicated or FSDP), the data and host batches split over the
    data axis, and every batch gathered on the devices constrained to that split, so that each
    device computes its part of it.
    """

    program: TrainProgram
    batches: Batches
    layout: Layout | None = None

    def apply(self, carry: Carry, x: Any, y: Any, weights: Array | None, step_root: Key) -> Carry:
        if self.layout is not None:
            x, y, weights = self.layout.constrain_batch((x, y, weights))
        key = step_key(step_root, carry.step)
        params, state, opt_state, loss, outputs, finite = self.program.update(
            carry.params, carry.state, carry.opt_state, x, y, weights, key)
        bad_run = None if finite is None else opt_state.guard.bad_run
        acc = self.program.tracker.update(carry.acc, loss, y, outputs, weights, finite, bad_run)
        return Carry(params, state, opt_state, acc, carry.row + 1, carry.step + 1)

    def step_on_device(self) -> Callable:
        """``(carry, data, order, step_root) -> carry``: one step on batch ``carry.row``."""
        return cached(("step_on_device", self), self._step_on_device)

    def _step_on_device(self) -> Callable:
        def train_step_on_device(carry: Carry, data: tuple, order: Array, step_root: Key) -> Carry:
            return self.apply(carry, *self.batches.take(data, order, carry.row), step_root)

        return jit_on(self.layout, train_step_on_device, ("params", "batch", "replicated", "replicated"), 0, 0)

    def scan_on_device(self) -> Callable:
        """``(carry, data, order, step_root, length) -> carry``: ``length`` steps in one call.

        ``length`` is traced, not static: calls of every length share one compilation.
        """
        return cached(("scan_on_device", self), self._scan_on_device)

    def _scan_on_device(self) -> Callable:
        def train_steps_scan(carry: Carry, data: tuple, order: Array, step_root: Key, length: Array) -> Carry:
            def body(_: Array, c: Carry) -> Carry:
                return self.apply(c, *self.batches.take(data, order, c.row), step_root)

            return jax.lax.fori_loop(0, length, body, carry)

        return jit_on(self.layout, train_steps_scan, ("params", "batch", "replicated", "replicated", "replicated"), 0,
                      0)

    def step_on_host(self) -> Callable:
        """``(carry, batch, step_root) -> carry`` for a batch ``(x, y, weights)`` already on the device."""
        return cached(("step_on_host", self), self._step_on_host)

    def _step_on_host(self) -> Callable:
        def train_step_on_host_batch(carry: Carry, batch: tuple, step_root: Key) -> Carry:
            return self.apply(carry, *batch, step_root)

        return jit_on(self.layout, train_step_on_host_batch, ("params", "batch", "replicated"), 0, 0)

    def summarize(self) -> Callable:
        """``acc -> logs``: the running loss and metrics, plus the skip counters."""
        return cached(("summarize", self), self._summarize)

    def _summarize(self) -> Callable:
        def summarize(acc: dict) -> dict:
            logs = self.program.tracker.compute(acc)
            logs["skipped"], logs["bad_run"] = acc["skipped"], acc["bad_run"]
            return logs

        return jax.jit(summarize)


@dataclasses.dataclass(frozen=True)
class EvalLoop:
    """Evaluation (accumulated metrics) and prediction (stacked outputs) over padded batches
    (data-parallel with a ``layout``, as :class:`TrainLoop`)."""

    program: TrainProgram
    batches: Batches
    layout: Layout | None = None

    def take(self, data: tuple, order: Array, row: Array) -> tuple[Any, Any, Array | None]:
        """Batch ``row`` of ``order``, split over the data axis with a layout."""
        batch = self.batches.take(data, order, row)
        return batch if self.layout is None else self.layout.constrain_batch(batch)

    def evaluate_device(self) -> Callable:
        """``(params, state, acc, data, order) -> acc`` over every row of ``order`` in one call."""
        return cached(("evaluate_device", self), self._evaluate_device)

    def _evaluate_device(self) -> Callable:
        def evaluate_on_device(params: Params, state: State, acc: dict, data: tuple, order: Array) -> dict:
            def body(a: dict, row: Array) -> tuple[dict, None]:
                x, y, weights = self.take(data, order, row)
                return self.program.evaluate(params, state, a, x, y, weights), None

            return jax.lax.scan(body, acc, jnp.arange(order.shape[0]))[0]

        return jit_on(self.layout, evaluate_on_device, ("params", "params", "params", "batch", "replicated"), 2)

    def evaluate_host(self) -> Callable:
        """``(params, state, acc, batch) -> acc`` for one batch already on the device."""
        return cached(("evaluate_host", self), self._evaluate_host)

    def _evaluate_host(self) -> Callable:
        def evaluate_host_batch(params: Params, state: State, acc: dict, batch: tuple) -> dict:
            return self.program.evaluate(params, state, acc, *batch)

        return jit_on(self.layout, evaluate_host_batch, ("params", "params", "params", "batch"), 2)

    def predict_device(self) -> Callable:
        """``(params, state, x, order) -> outputs`` of shape ``(rows * batch_size, ...)``."""
        return cached(("predict_device", self), self._predict_device)

    def _predict_device(self) -> Callable:
        model = self.program.model

        def predict_on_device(params: Params, state: State, x: Any, order: Array) -> Any:
            def body(_: None, indices: Array) -> tuple[None, Any]:
                batch = gather(x, indices)
                if self.layout is not None:
                    batch = self.layout.constrain_batch(batch)
                return None, model.apply(params, state, batch, train=False)[0]

            stacked = jax.lax.scan(body, None, order)[1]
            return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), stacked)

        return jit_on(self.layout, predict_on_device, ("params", "params", "batch", "replicated"), "batch")

    def predict_host(self) -> Callable:
        """``(params, state, x) -> outputs`` for one batch already on the device."""
        return cached(("predict_host", self), self._predict_host)

    def _predict_host(self) -> Callable:
        model = self.program.model

        def predict_host_batch(params: Params, state: State, x: Any) -> Any:
            return model.apply(params, state, x, train=False)[0]

        return jit_on(self.layout, predict_host_batch, ("params", "params", "batch"), "batch")
