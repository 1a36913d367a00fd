"""A directory of numbered checkpoints: keep the last N (and the best), find and restore the latest."""

from __future__ import annotations

import math
import operator
import os
import re
import warnings
from pathlib import Path
from typing import Any

import jax

from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import io, multihost, storage
from funcnet.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)

_STEP_DIR = re.compile(r"^step_(\d{1,18})$")


class CheckpointManager:
    """Saves checkpoints ``<directory>/step_<step>`` and prunes old ones safely.

    Retention runs only after a new checkpoint is committed, so the last good checkpoint is never
    deleted before its successor exists; deletion renames a checkpoint to a hidden name first, so
    a crash never leaves a half-deleted checkpoint under a visible name. Leftovers of interrupted
    saves and deletions are removed when a manager is created.

    Several processes may save into one directory (each commit is atomic; pruning skips what
    another process pruned first) and restore from it while others save (a restore returns a whole
    checkpoint; one pruned meanwhile gives way to the newer one). Each process prunes by its own
    ``max_to_keep`` and ``best_metric``.

    In a run of several processes (``jax.distributed``), every process creates the manager and
    calls :meth:`save` with the same tree; process 0 commits and prunes, the others write their
    shards (see :func:`funcnet.checkpoint.save`).

    Args:
        directory: where the checkpoints live (created if missing).
        max_to_keep: how many of the most recent checkpoints to keep (None keeps all).
        best_metric: also keep the checkpoint with the best value of this metric (from the
            ``metrics`` given to :meth:`save`), even when it is older than the last
            ``max_to_keep``.
        best_mode: ``"min"`` (losses) or ``"max"`` (accuracies).

    Raises:
        CheckpointWriteError: ``directory`` cannot be created or written, naming it.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int | None = 3, best_metric: str | None = None,
                 best_mode: str = "min"):
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError("CheckpointManager: `max_to_keep` must be a positive integer or None, got "
                             f"{max_to_keep!r}.")
        if best_mode not in ("min", "max"):
            raise ValueError(f"CheckpointManager: `best_mode` must be 'min' or 'max', got {best_mode!r}.")
        if best_metric is not None and not isinstance(best_metric, str):
            raise ValueError(f"CheckpointManager: `best_metric` must be a metric name, got {best_metric!r}.")
        self.directory = Path(directory)
        self.max_to_keep, self.best_metric, self.best_mode = max_to_keep, best_metric, best_mode
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointWriteError(f"cannot use checkpoint directory {self.directory}: "
                                       f"{error.strerror or error}.") from error
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise CheckpointWriteError(f"cannot use checkpoint directory {self.directory}: it is not writable "
                                       "(permission denied or a read-only file system).")
        if jax.process_index() == 0:  # the only writer of a multi-process run: the leftovers' ids are its own
            storage.clean_stale(self.directory)

    # ----------------------------------------------------------------------------------------
    # Finding checkpoints

    def path(self, step: int) -> Path:
        """The directory of ``step``'s checkpoint (whether or not it exists)."""
        return self.directory / f"step_{_check_step(step):09d}"

    def steps(self) -> list[int]:
        """The committed checkpoints' steps, oldest first (unfinished saves are never listed)."""
        steps = []
        for entry in os.scandir(self.directory):
            match = _STEP_DIR.match(entry.name)
            # A link named like a checkpoint is not one of this manager's (links are never followed).
            if match and entry.is_dir(follow_symlinks=False) and (Path(entry.path) / fmt.MANIFEST).exists():
                steps.append(int(match[1]))
        return sorted(steps)

    def latest(self) -> int | None:
        """The latest committed checkpoint's step, or None if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def metrics(self, step: int) -> dict[str, Any]:
        """The metrics saved with ``step`` (read from its verified manifest)."""
        metrics = fmt.read_manifest(self.path(step))["metadata"].get("metrics") or {}
        return metrics if isinstance(metrics, dict) else {}

    def best(self) -> int | None:
        """The step with the best ``best_metric`` among the kept checkpoints (None without one)."""
        if self.best_metric is None:
            return None
        best_step, best_value = None, None
        for step in self.steps():
            try:
                value = self.metrics(step).get(self.best_metric)
            except CheckpointError:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            if best_value is None or (value < best_value if self.best_mode == "min" else value > best_value):
                best_step, best_value = step, value
        return best_step

    # ----------------------------------------------------------------------------------------
    # Saving and restoring

    def save(self, step: int, tree: Any, *, metadata: dict[str, Any] | None = None,
             metrics: dict[str, float] | None = None, model: Any = None, input_shape: Any = None,
             overwrite: bool = False) -> Path:
        """Saves ``tree`` as ``step``'s checkpoint (atomically), then prunes old checkpoints.

        Args:
            step: a non-negative integer; saving an existing step needs ``overwrite=True``.
            tree, metadata, model, input_shape: as for :func:`funcnet.checkpoint.save`;
                ``metadata["step"]`` is set to ``step``.
            metrics: numbers kept with it (``{"val_loss": 0.12}``); ``best_metric`` is one of them.

        Returns:
            The new checkpoint's directory.
        """
        step = _check_step(step)
        metadata = {**(metadata or {}), "step": step}
        if metrics is not None:
            metadata["metrics"] = dict(metrics)
        path = io.save(self.path(step), tree, metadata=metadata, model=model, input_shape=input_shape,
                       overwrite=overwrite)
        if jax.process_index() == 0:
            self._prune(newest=step)
        return path

    def _prune(self, newest: int) -> None:
        steps = self.steps()
        keep = set(steps if self.max_to_keep is None else steps[-self.max_to_keep:])
        keep.add(newest)
        best = self.best()
        if best is not None:
            keep.add(best)
        for step in steps:
            if step not in keep:
                storage.remove(self.path(step))  # tolerates a checkpoint another writer pruned first

    def restore(self, step: int, like: Any = None, **kwargs: Any) -> io.Restored:
        """Restores ``step``'s checkpoint; arguments as for :func:`funcnet.checkpoint.restore`."""
        return io.restore(self.path(step), like, **kwargs)

    def restore_latest(self, like: Any = None, *, fallback: bool = False, **kwargs: Any) -> io.Restored | None:
        """Restores the latest checkpoint, or returns None if there is none.

        In a run of several processes, every process restores the same step: process 0 names
        each candidate, and a checkpoint that any process finds corrupt is skipped (or raised) by
        all of them, so no process goes on from a different state than the others.

        Args:
            like, **kwargs: as for :func:`funcnet.checkpoint.restore`.
            fallback: if the latest checkpoint is corrupt, warn and try the one before, and so on.
                By default a corrupt latest checkpoint is an error: silently training from an
                older state is rarely what anyone wants.
        """
        several = jax.process_count() > 1
        skipped: set[int] = set()
        corrupt: list[int] = []
        while (step := self._candidate(skipped, several)) is not None:
            restored, error = None, None
            try:
                restored = self.restore(step, like, **kwargs)
            except CheckpointError as caught:
                error = caught
            if several:
                error = multihost.shared_error(error)
            if error is None:
                return restored
            if isinstance(error, CheckpointNotFoundError):
                # Pruned by another process since it was listed, which committed a newer one first.
                skipped.add(step)
            elif isinstance(error, CheckpointCorruptError) and fallback:
                warnings.warn(f"skipping corrupt checkpoint {self.path(step)}: {error}", RuntimeWarning, stacklevel=2)
                skipped.add(step)
                corrupt.append(step)
            else:
                raise error
        if corrupt:
            raise CheckpointCorruptError(f"every checkpoint in {self.directory} is corrupt (steps {sorted(corrupt)}).")
        return None

    def _candidate(self, skipped: set[int], several: bool) -> int | None:
        """The newest listed step not yet skipped (process 0's, in every process of a multi-process run)."""
        candidates = [step for step in self.steps() if step not in skipped]
        newest = candidates[-1] if candidates else None
        return multihost.primary_step(newest) if several else newest

    def __repr__(self) -> str:
        return (f"CheckpointManager({str(self.directory)!r}, max_to_keep={self.max_to_keep}, "
                f"best_metric={self.best_metric!r}, steps={self.steps()})")


def _check_step(step: Any) -> int:
    """``step`` as an int (NumPy and 0-d JAX integers are accepted)."""
    try:
        value = operator.index(step)
    except TypeError:
        value = None
    if isinstance(step, bool) or value is None or not 0 <= value < 10**18:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}.")
    return value
