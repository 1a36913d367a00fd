"""Checkpointing inside ``fit``, and resuming a run from its latest checkpoint.

::

    ckpt = CheckpointCallback("runs/ckpts", every_epochs=1, every_steps=500, max_to_keep=3,
                              model=model, input_shape=(None, 784))
    resume = ckpt.restore_latest()          # None on the first run
    fit(model, None if resume else params, None if resume else state, x, y, epochs=10,
        callbacks=[ckpt], resume=resume, ...)
    ckpt.history                            # every epoch's logs, those before the restart included

What is saved is fit's whole :class:`~funcnet.training.TrainState` (params, layer state, optimizer
state, step count, epochs done, key, the position in the epoch's batches and the epoch's running
loss and metric sums), so the resumed run is bit-identical to an uninterrupted one (on the same
versions and backend), loss history included, plus the per-epoch logs so far. With
``every_steps``, checkpoints also fall in the middle of epochs (the metadata's ``batch_index``
says where).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from funcnet.checkpoint.io import Restored
from funcnet.checkpoint.manager import CheckpointManager
from funcnet.core import Layer
from funcnet.training.callbacks import Callback, Logs, check_interval
from funcnet.training.state import TrainState


def _json_logs(logs: Logs) -> dict[str, Any]:
    """The numeric entries of one epoch's logs as plain floats/ints."""
    out: dict[str, Any] = {}
    for name, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        out[name] = int(value) if isinstance(value, int) and not isinstance(value, bool) else number
    return out


class CheckpointCallback(Callback):
    """Saves fit's TrainState every ``every_epochs`` epochs or ``every_steps`` steps through a
    :class:`CheckpointManager`; checkpoints are named by their step.

    Args:
        directory: the checkpoint directory, or a :class:`CheckpointManager` to use.
        every_epochs: save after every this many epochs (None: only by steps). Counted from the
            start of training, so a resumed run keeps the same schedule; the state at the end of
            training is always saved.
        every_steps: also save after every this many optimisation steps, in the middle of an
            epoch or at its end (None: only by epochs).
        max_to_keep, best_metric, best_mode: retention, as for :class:`CheckpointManager` (the
            metric is one of fit's logs, e.g. ``"val_loss"``); ignored when a manager is given.
        model, input_shape: recorded as the architecture, so the model can be rebuilt from the
            checkpoint with no user code.

    Attributes:
        manager: the :class:`CheckpointManager`.
        history: ``{name: [one value per epoch]}`` since the start of training, including the
            epochs before a restart once :meth:`restore_latest` has loaded them.
    """

    def __init__(self, directory: str | Path | CheckpointManager, *, every_epochs: int | None = 1,
                 every_steps: int | None = None, max_to_keep: int | None = 3, best_metric: str | None = None,
                 best_mode: str = "min", model: Layer | None = None, input_shape: Any = None):
        check_interval("CheckpointCallback", "every_epochs", every_epochs)
        check_interval("CheckpointCallback", "every_steps", every_steps)
        if every_epochs is None and every_steps is None:
            raise ValueError("CheckpointCallback: pass `every_epochs`, `every_steps` or both; with neither it would "
                             "save only at the end of training.")
        self.manager = directory if isinstance(directory, CheckpointManager) else CheckpointManager(
            directory, max_to_keep=max_to_keep, best_metric=best_metric, best_mode=best_mode)
        self.every_epochs, self.every_steps = every_epochs, every_steps
        self.model, self.input_shape = model, input_shape
        self.history: dict[str, list] = {}
        self._last_saved_step: int | None = None

    def restore_latest(self, like: TrainState | None = None, **kwargs: Any) -> TrainState | None:
        """The TrainState of the latest checkpoint (None if there is none), for ``fit(resume=...)``.

        Also loads the saved history into :attr:`history`, so it continues across the restart.

        Args:
            like: a TrainState to restore into (optional: without it, the saved structure, optax
                classes included, is rebuilt exactly).
            **kwargs: passed to :meth:`CheckpointManager.restore_latest` (``fallback=True``).
        """
        restored = self.manager.restore_latest(like, **kwargs)
        if restored is None:
            return None
        return self._load(restored)

    def _load(self, restored: Restored) -> TrainState:
        tree = restored.tree
        if not (isinstance(tree, tuple) and getattr(type(tree), "_fields", None) == TrainState._fields):
            raise ValueError(f"checkpoint {restored.path} does not hold a fit TrainState.")
        history = restored.metadata.get("history") or {}
        self.history = {k: list(v) for k, v in history.items() if isinstance(v, list)}
        state = TrainState(*tree)
        self._last_saved_step = int(state.step)
        return state

    def _save(self, train_state: TrainState) -> None:
        metrics = {k: v[-1] for k, v in self.history.items() if v and isinstance(v[-1], (int, float))
                   and math.isfinite(v[-1])}
        self.manager.save(
            int(train_state.step), train_state,
            metadata={"epoch": int(train_state.epoch), "batch_index": int(train_state.batch),
                      "history": self.history},
            metrics=metrics, model=self.model, input_shape=self.input_shape, overwrite=True)
        self._last_saved_step = int(train_state.step)

    def on_train_begin(self, train_state: TrainState) -> None:
        if int(train_state.epoch) == 0 and int(train_state.batch) == 0:
            self.history = {}

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        for name, value in {"epoch": epoch, **_json_logs(logs)}.items():
            self.history.setdefault(name, []).append(value)
        by_epoch = self.every_epochs is not None and int(train_state.epoch) % self.every_epochs == 0
        by_step = self.every_steps is not None and int(train_state.step) % self.every_steps == 0
        if by_epoch or by_step:
            self._save(train_state)  # synchronous: done before fit donates these arrays
        return False

    def on_step_end(self, step: int, train_state: TrainState) -> bool | None:
        self._save(train_state)  # fit calls this only when every_steps divides step
        return False

    def on_train_end(self, train_state: TrainState) -> None:
        if self._last_saved_step != int(train_state.step):
            self._save(train_state)
