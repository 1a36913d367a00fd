"""Training: jitted steps, fit / evaluate / predict, callbacks, optimizers and data checks.

The pieces, from low to high level:

* :func:`make_train_step` / :func:`make_eval_step`: plain jitted step functions for your own loop;
  :func:`make_optimizer` builds the optax transformation (optimizer names, freezing by parameter
  path) and :func:`init_opt_state` the :class:`OptState` a step carries: the optimizer's state and
  the non-finite guard's counters (:class:`GuardState`).
* :func:`fit`, :func:`evaluate`, :func:`predict`: the whole loop, with validation, metrics,
  callbacks (:class:`EarlyStopping`, :class:`KeepBest`, :class:`EpochHook`), a progress bar and
  a history you can draw with :func:`plot_history`.
"""

from funcnet.training.batching import batch_order, fit_keys, num_batches, step_key
from funcnet.training.callbacks import Callback, EarlyStopping, EpochHook, KeepBest
from funcnet.training.checks import check_labels, num_examples
from funcnet.training.evaluate import evaluate, predict
from funcnet.training.fit import MODES, choose_mode, fit
from funcnet.training.guard import GuardState, OptState
from funcnet.training.history import plot_history
from funcnet.training.migrate import migrate_guard_layout, upgrade_opt_state
from funcnet.training.optimizers import (
    OPTIMIZERS,
    freeze_labels,
    get_optimizer,
    init_opt_state,
    make_optimizer,
    param_paths,
)
from funcnet.training.state import FitResult, NonFiniteError, TrainState
from funcnet.training.step import make_eval_step, make_train_step

__all__ = [  # noqa: RUF022 (grouped by topic)
    # steps and optimizers
    "make_train_step", "make_eval_step", "make_optimizer", "init_opt_state", "get_optimizer", "OPTIMIZERS",
    "freeze_labels", "param_paths", "OptState", "GuardState", "upgrade_opt_state", "migrate_guard_layout",
    # the loop
    "fit", "evaluate", "predict", "FitResult", "TrainState", "NonFiniteError", "MODES", "choose_mode",
    # callbacks and history
    "Callback", "EarlyStopping", "KeepBest", "EpochHook", "plot_history",
    # data
    "check_labels", "num_examples", "fit_keys", "step_key", "batch_order", "num_batches",
]
