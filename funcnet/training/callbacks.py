"""Callbacks: code that ``fit`` runs at the start, after every epoch and at the end.

A callback subclasses :class:`Callback` and overrides what it needs; a plain function
``fn(epoch, logs, train_state)`` works too (it is wrapped in :class:`EpochHook`). A callback that
sets ``every_steps`` is also called in the middle of epochs (``fit`` then pauses its compiled loop
at those steps: in ``"scan"`` mode, each pause ends one compiled call).

The arrays in the :class:`~funcnet.training.TrainState` a callback receives are donated to the
next epoch's compiled step: to keep them, copy them (``jax.tree.map(jnp.copy, tree)``) or bring
them to the host (``jax.device_get``) before returning, as :class:`KeepBest` does. A checkpoint
callback saves the whole TrainState; ``fit(..., resume=restored)`` then continues the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.training.state import TrainState

__all__ = ["Callback", "EarlyStopping", "EpochHook", "KeepBest"]

Logs = Mapping[str, Any]
_HIGHER_IS_BETTER = ("acc", "f1", "precision", "recall")


class Callback:
    """Base class of callbacks; every method does nothing unless overridden.

    Attributes:
        every_steps: call :meth:`on_step_end` after every this many optimisation steps (counted
            from the start of training, so a resumed run keeps the schedule); None: never.
    """

    every_steps: int | None = None

    def on_train_begin(self, train_state: TrainState) -> None:
        """Called once before the first epoch."""

    def on_step_end(self, step: int, train_state: TrainState) -> bool | None:
        """Called in the middle of an epoch once ``step`` steps are done, when ``every_steps``
        divides ``step``, with the mid-epoch TrainState (``batch > 0``); a step that ends an epoch
        is reported by :meth:`on_epoch_end` instead. Return True to stop training there."""

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        """Called after each epoch (``epoch`` counts from 0) with its logs (``"loss"``,
        ``"val_loss"``, metrics, ...). Return True to stop training after this epoch."""

    def on_train_end(self, train_state: TrainState) -> TrainState | None:
        """Called once at the end with the state training reached; may return a TrainState to
        replace what ``fit`` returns."""


class EpochHook(Callback):
    """Calls ``fn(epoch, logs, train_state)`` after every epoch; a True result stops training."""

    def __init__(self, fn: Callable[[int, Logs, TrainState], Any]):
        if not callable(fn):
            raise ValueError(f"EpochHook: `fn` must be callable, got {fn!r}.")
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        return bool(self.fn(epoch, logs, train_state))


class _Monitor:
    """Tracks the best value of one logged quantity."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float = 0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner}: `mode` must be 'auto', 'min' or 'max', got {mode!r}.")
        if mode == "auto":
            mode = "max" if any(word in monitor.removeprefix("val_") for word in _HIGHER_IS_BETTER) else "min"
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs: Logs) -> float:
        if self.monitor not in logs:
            available = sorted(k for k, v in logs.items() if _is_scalar(v))
            hint = " Pass validation_data or validation_split to fit, or monitor='loss'." if self.monitor.startswith(
                "val_") else ""
            raise ValueError(f"{self.owner} monitors {self.monitor!r}, which fit does not report; "
                             f"available: {available}.{hint}")
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best = value
        return better


def _is_scalar(value: Any) -> bool:
    return not hasattr(value, "shape") or value.shape == ()


class EarlyStopping(Callback):
    """Stops training when a monitored quantity has stopped improving.

    Args:
        monitor: the logged name to watch (``"val_loss"``, ``"val_accuracy"``, ``"loss"``).
        patience: stop after this many epochs in a row without improvement (0 and 1 both stop
            at the first such epoch, as in Keras).
        min_delta: the smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy, F1, precision and recall;
            min otherwise).

    Attributes:
        stopped_epoch: the epoch after which it stopped training, or None.
        best: the best value seen.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 0, min_delta: float = 0.0, mode: str = "auto"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: `patience` must be a non-negative integer, got {patience!r}.")
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = patience
        self.wait = 0
        self.stopped_epoch: int | None = None

    @property
    def best(self) -> float:
        return self._monitor.best

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        if self._monitor.improved(self._monitor.value(logs)):
            self.wait = 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False


class KeepBest(Callback):
    """Keeps a copy of the params and state of the best epoch and restores them at the end.

    Args:
        monitor: the logged name to watch; mode: as in :class:`EarlyStopping`.

    Attributes:
        best: the best value; best_epoch: its epoch (from 0), or None.
    """

    def __init__(self, monitor: str = "val_loss", *, mode: str = "auto"):
        self._monitor = _Monitor("KeepBest", monitor, mode)
        self.best_epoch: int | None = None
        self._kept: tuple[Any, Any] | None = None

    @property
    def best(self) -> float:
        return self._monitor.best

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        if self._monitor.improved(self._monitor.value(logs)):
            self.best_epoch = epoch
            self._kept = jax.tree.map(jnp.copy, (train_state.params, train_state.state))
        return False

    def on_train_end(self, train_state: TrainState) -> TrainState | None:
        if self._kept is None:
            return None
        params, state = self._kept
        return train_state._replace(params=params, state=state)


def check_interval(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` (an ``every_*`` argument) is a positive integer or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{owner}: `{name}` must be a positive integer or None, got {value!r}.")


def as_callbacks(callbacks: Any) -> list[Callback]:
    """A list of Callback objects from callbacks and plain functions."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    result = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            check_interval(type(cb).__name__, "every_steps", cb.every_steps)
            result.append(cb)
        elif callable(cb):
            result.append(EpochHook(cb))
        else:
            raise ValueError(f"a callback must be a funcnet Callback or a function (epoch, logs, train_state), "
                             f"got {cb!r}.")
    return result
