"""Checkpointing inside ``fit``, and resuming a run from its latest checkpoint.

::

    ckpt = CheckpointCallback("runs/ckpts", every_epochs=1, max_to_keep=3, model=model,
                              input_shape=(None, 784))
    resume = ckpt.restore_latest()          # None on the first run
    fit(model, None if resume else params, None if resume else state, x, y, epochs=10,
        callbacks=[ckpt], resume=resume, ...)
    ckpt.history                            # every epoch's logs, those before the restart included

What is saved is fit's whole :class:`~funcnet.training.TrainState` (params, layer state, optimizer
state, step count, epochs done, key), so the resumed run is bit-identical to an uninterrupted one
(on the same versions and backend), plus the per-epoch logs so far. ``fit`` calls callbacks at the
end of each epoch only, so checkpoints fall on epoch boundaries (``batch_index`` is always 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from funcnet.checkpoint.io import Restored
from funcnet.checkpoint.manager import CheckpointManager
from funcnet.core import Layer
from funcnet.training.callbacks import Callback, Logs
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
    """Saves fit's TrainState every ``every_epochs`` epochs through a :class:`CheckpointManager`.

    Args:
        directory: the checkpoint directory, or a :class:`CheckpointManager` to use.
        every_epochs: save after every this many epochs (counted from the start of training, so a
            resumed run keeps the same schedule); the last epoch is always saved.
        max_to_keep, best_metric, best_mode: retention, as for :class:`CheckpointManager` (the
            metric is one of fit's logs, e.g. ``"val_loss"``); ignored when a manager is given.
        model, input_shape: recorded as the architecture, so the model can be rebuilt from the
            checkpoint with no user code.

    Attributes:
        manager: the :class:`CheckpointManager`.
        history: ``{name: [one value per epoch]}`` since the start of training, including the
            epochs before a restart once :meth:`restore_latest` has loaded them.
    """

    def __init__(self, directory: str | Path | CheckpointManager, *, every_epochs: int = 1,
                 max_to_keep: int | None = 3, best_metric: str | None = None, best_mode: str = "min",
                 model: Layer | None = None, input_shape: Any = None):
        if isinstance(every_epochs, bool) or not isinstance(every_epochs, int) or every_epochs < 1:
            raise ValueError(f"CheckpointCallback: `every_epochs` must be a positive integer, got {every_epochs!r}.")
        self.manager = directory if isinstance(directory, CheckpointManager) else CheckpointManager(
            directory, max_to_keep=max_to_keep, best_metric=best_metric, best_mode=best_mode)
        self.every_epochs, self.model, self.input_shape = every_epochs, model, input_shape
        self.history: dict[str, list] = {}
        self._last_saved_epoch: int | None = None
        self._last: TrainState | None = None

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
        self._last_saved_epoch = state.epoch
        return state

    def _save(self, train_state: TrainState) -> None:
        metrics = {k: v[-1] for k, v in self.history.items() if v and isinstance(v[-1], (int, float))
                   and math.isfinite(v[-1])}
        self.manager.save(
            int(train_state.step), train_state,
            metadata={"epoch": int(train_state.epoch), "batch_index": 0, "history": self.history},
            metrics=metrics, model=self.model, input_shape=self.input_shape, overwrite=True)
        self._last_saved_epoch = int(train_state.epoch)

    def on_train_begin(self, train_state: TrainState) -> None:
        if int(train_state.epoch) == 0:
            self.history = {}
        self._last = None

    def on_epoch_end(self, epoch: int, logs: Logs, train_state: TrainState) -> bool | None:
        for name, value in {"epoch": epoch, **_json_logs(logs)}.items():
            self.history.setdefault(name, []).append(value)
        if int(train_state.epoch) % self.every_epochs == 0:
            self._save(train_state)  # synchronous: done before fit donates these arrays
        # Kept for on_train_end: after the last epoch nothing donates these arrays any more.
        self._last = train_state
        return False

    def on_train_end(self, train_state: TrainState) -> None:
        # The last epoch's own state, not train_state, which KeepBest may have replaced.
        if self._last is not None and self._last_saved_epoch != int(self._last.epoch):
            self._save(self._last)
        return None
