"""Optimizers: names for optax's and freezing by parameter path.

:func:`make_optimizer` assembles the optax transformation a training step applies, plain optax::

    optax.multi_transform({"trainable": optimizer,           # only with freeze=...
                           "frozen": optax.set_to_zero()}, labels_from_paths)

The non-finite guard is not part of it: the train step owns it, for any optax optimizer, and keeps
its counters beside the optimizer's state in an :class:`funcnet.training.OptState`, which
:func:`init_opt_state` builds.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from funcnet.core import Params
from funcnet.training.guard import OptState

__all__ = [
    "OPTIMIZERS",
    "freeze_labels",
    "get_optimizer",
    "init_opt_state",
    "learning_rate_of",
    "make_optimizer",
    "param_paths",
]

Schedule = Callable[[Any], Any]
FreezeSpec = str | Sequence[str] | Callable[[str], bool] | None

#: The optimizer names :func:`get_optimizer` accepts, with their default learning rates (Keras's).
OPTIMIZERS: dict[str, float] = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


def _check_learning_rate(learning_rate: Any, name: str) -> None:
    if callable(learning_rate):
        first = learning_rate(0)
        if not (math.isfinite(float(first)) and float(first) >= 0):
            raise ValueError(f"{name}: the learning-rate schedule gives {float(first)} at step 0; it must be "
                             "finite and non-negative.")
        return
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
        raise ValueError(f"{name}: `learning_rate` must be a number or an optax schedule (a function of the "
                         f"step), got {learning_rate!r}.")
    if not math.isfinite(learning_rate) or learning_rate < 0:
        raise ValueError(f"{name}: `learning_rate` must be finite and non-negative, got {learning_rate!r}.")


def get_optimizer(optimizer: str | optax.GradientTransformation, learning_rate: float | Schedule | None = None,
                  **options: Any) -> optax.GradientTransformation:
    """An optax optimizer from a name, or ``optimizer`` itself when it already is one.

    Args:
        optimizer: ``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"adam"``, ``"adamw"``,
            ``"rmsprop"``, or any ``optax.GradientTransformation``.
        learning_rate: a float or an optax schedule (``optax.cosine_decay_schedule(...)``); for
            names only, default as in :data:`OPTIMIZERS`.
        **options: further arguments of the optax constructor (``momentum=0.95``,
            ``weight_decay=1e-4``, ``nesterov=True``).

    Raises:
        ValueError: for an unknown name, a negative, NaN or non-numeric learning rate, or a
            learning rate or options given with a ready transformation.
    """
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None or options:
            raise ValueError("`learning_rate` and optimizer options apply only to optimizer names; the optax "
                             "transformation given already has its own.")
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)} or pass an "
                         "optax.GradientTransformation.")
    learning_rate = OPTIMIZERS[optimizer] if learning_rate is None else learning_rate
    _check_learning_rate(learning_rate, optimizer)
    constructor = optax.sgd if optimizer == "momentum" else getattr(optax, optimizer)
    accepted = list(inspect.signature(constructor).parameters)[1:]  # after the learning rate
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"optimizer {optimizer!r} (optax.{constructor.__name__}) takes no option {unknown}; "
                         f"its options are {accepted}.")
    if optimizer == "momentum":
        options.setdefault("momentum", 0.9)
    return constructor(learning_rate, **options)


def param_paths(params: Params) -> list[str]:
    """The paths of the leaves of ``params``: ``["dense_0/w", "dense_0/b", ...]``."""
    paths = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        paths.append("/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path))
    return paths


def _matcher(freeze: FreezeSpec) -> Callable[[str], bool]:
    if callable(freeze):
        return freeze
    patterns = [freeze] if isinstance(freeze, str) else list(freeze)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"`freeze` must be a glob pattern, a list of them, or a function of the path, got {freeze!r}.")

    def frozen(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatchcase(prefix, p) for p in patterns for prefix in prefixes)

    return frozen


def freeze_labels(params: Params, freeze: FreezeSpec) -> Any:
    """Labels each leaf of ``params`` ``"frozen"`` or ``"trainable"``.

    Args:
        params: the model's params.
        freeze: glob patterns over parameter paths (``"conv2d_*"``, ``"encoder/*"``,
            ``"*/b"``); a pattern matching a path or any of its prefixes freezes the leaf, so
            ``"dense_0"`` freezes ``dense_0/w`` and ``dense_0/b``. Or a function
            ``path -> bool``.

    Raises:
        ValueError: if a pattern matches no parameter (a typo would otherwise train everything).
    """
    frozen = _matcher(freeze)
    paths = param_paths(params)
    if not callable(freeze):
        patterns = [freeze] if isinstance(freeze, str) else list(freeze)
        for pattern in patterns:
            if not any(_matcher(pattern)(path) for path in paths):
                raise ValueError(f"freeze pattern {pattern!r} matches no parameter; the parameter paths are "
                                 f"{paths[:12]}{' ...' if len(paths) > 12 else ''}.")
    flat = iter("frozen" if frozen(path) else "trainable" for path in paths)
    return jax.tree.map(lambda _: next(flat), params)


def make_optimizer(optimizer: str | optax.GradientTransformation, *, learning_rate: float | Schedule | None = None,
                   freeze: FreezeSpec = None, **options: Any) -> optax.GradientTransformation:
    """The optax transformation a train step applies (see the module docstring).

    Args:
        optimizer, learning_rate, options: as in :func:`get_optimizer`.
        freeze: parameters to keep fixed, as in :func:`freeze_labels`; their updates are exactly
            zero, so they stay bit-identical (weight decay does not touch them either).

    Returns:
        A plain ``optax.GradientTransformation``; :func:`init_opt_state` wraps its
        ``init(params)`` with the guard's counters.
    """
    tx = get_optimizer(optimizer, learning_rate, **options)
    if freeze is not None:
        tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()},
                                   lambda params: freeze_labels(params, freeze))
    return tx


def init_opt_state(params: Params, optimizer: str | optax.GradientTransformation, *,
                   learning_rate: float | Schedule | None = None, freeze: FreezeSpec = None,
                   **options: Any) -> OptState:
    """The initial :class:`funcnet.training.OptState` for :func:`make_train_step` (and ``fit``)
    called with the same optimizer, learning rate, freeze and options.

    Its layout does not depend on ``skip_nonfinite``: without the guard its counters stay 0.
    """
    tx = make_optimizer(optimizer, learning_rate=learning_rate, freeze=freeze, **options)
    return OptState.create(tx, params)


def learning_rate_of(optimizer: Any, learning_rate: Any, opt_state: Any, step: int) -> float | None:
    """The learning rate at ``step``, for the history: from the schedule or number given with a
    name, else from ``opt_state`` when the optimizer was built with ``optax.inject_hyperparams``."""
    if isinstance(optimizer, str):
        rate = OPTIMIZERS[optimizer] if learning_rate is None else learning_rate
        return float(rate(step)) if callable(rate) else float(rate)
    found = optax.tree.get_all_with_path(opt_state, "learning_rate")
    return float(found[0][1]) if found else None
