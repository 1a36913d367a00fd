"""What ``fit`` carries from epoch to epoch and what it returns."""

from __future__ import annotations

from typing import Any, NamedTuple

from funcnet.core import Key, Params, State

__all__ = ["FitResult", "NonFiniteError", "TrainState"]


class TrainState(NamedTuple):
    """Everything needed to continue training exactly where it stopped.

    ``fit`` hands it to callbacks at the end of each epoch (and every ``every_steps`` steps to
    those that ask), and resumes from one with ``fit(..., resume=train_state)``: training then
    goes on from batch ``batch`` of epoch ``epoch``, shuffling and drawing keys exactly as the
    uninterrupted run would have (see :mod:`funcnet.training.batching`). A checkpoint that saves
    all its fields restores the run bit for bit, loss history included.

    Attributes:
        params: the model's parameters.
        state: the model's layer state (BatchNorm statistics), ``{}`` if none.
        opt_state: a :class:`funcnet.training.OptState`: the optax optimizer's state (moments,
            step counts) and the non-finite guard's counters.
        step: optimisation steps done so far (the next step's key is ``fold_in(step_root, step)``).
        epoch: epochs completed: the epoch in progress, or the next to run (its batch order
            derives from it).
        key: the key ``fit`` was given; all randomness derives from it, ``step`` and ``epoch``.
        batch: batches of epoch ``epoch`` already done: 0 at the end of an epoch, else the
            position in the epoch's batch order to go on from.
        epoch_metrics: with ``batch > 0``, the running sums behind the epoch's loss and metrics
            (so the resumed epoch reports what the uninterrupted one would); None otherwise.
    """

    params: Params
    state: State
    opt_state: Any
    step: int
    epoch: int
    key: Key
    batch: int = 0
    epoch_metrics: Any = None


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
        params, state, opt_state: after the last epoch (a KeepBest callback restores the best
            epoch's params and state).
        history: ``{name: [one value per epoch]}``: ``"epoch"``, ``"loss"``, each metric, their
            ``"val_"`` versions, ``"skipped"``, ``"learning_rate"`` (when known), ``"time"``.
    """

    params: Params
    state: State
    opt_state: Any
    history: dict[str, list]


class NonFiniteError(FloatingPointError):
    """Training stopped after too many consecutive steps with a non-finite loss or gradient.

    Attributes:
        train_state: the state when it stopped; every bad update was skipped, so its params are
            the last finite ones.
    """

    def __init__(self, message: str, train_state: TrainState):
        super().__init__(message)
        self.train_state = train_state
