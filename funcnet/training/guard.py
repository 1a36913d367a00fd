"""The optimizer state a train step carries, and the non-finite guard that owns part of it.

A train step (:func:`funcnet.make_train_step`, ``fit``) takes and returns an :class:`OptState`:
the optax optimizer's own state and the guard's counters side by side, so that any optax
optimizer gets the guard and :func:`funcnet.training.make_optimizer` returns plain optax objects.
Entries that later work adds (a loss scale, ...) become further fields of :class:`OptState`.

The guard: a step whose loss or trainable gradients hold a NaN or an infinity changes nothing
(params, layer state and optimizer state stay as they were) and is counted. One ``lax.cond``
selects between the update and the old values; measured against the alternatives (a check of
each gradient's sum or of the global norm, ``jnp.where`` selection, ``optax.apply_if_finite``)
it is the cheapest on the CPU MLPs of ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from funcnet.core import Array

__all__ = ["GuardState", "OptState", "all_finite", "count_step"]


class GuardState(NamedTuple):
    """The non-finite guard's counters (int32 scalars).

    Attributes:
        bad_run: consecutive skipped steps up to the last one (0 after a good step); ``fit``
            stops with :class:`funcnet.training.NonFiniteError` once it reaches ``max_bad_steps``.
        skipped: skipped steps since the state was created.
    """

    bad_run: Array
    skipped: Array

    @classmethod
    def zeros(cls) -> GuardState:
        """Counters of a run that has skipped nothing yet."""
        return cls(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


class OptState(NamedTuple):
    """What a train step takes as ``opt_state`` and returns: the optimizer's state and the guard's.

    Built by :func:`funcnet.training.init_opt_state`; restored from checkpoints by
    ``checkpoint.restore(path, optimizer=tx)``.

    Attributes:
        optimizer: the optax state, ``tx.init(params)`` (moments, step counts, ...).
        guard: the :class:`GuardState` counters (they stay 0 with ``skip_nonfinite=False``).
    """

    optimizer: Any
    guard: GuardState

    @classmethod
    def create(cls, tx: Any, params: Any) -> OptState:
        """The initial state for optax transformation ``tx`` and ``params``."""
        return cls(tx.init(params), GuardState.zeros())


def all_finite(loss: Array, grads: list[Array]) -> Array:
    """True (a bool scalar) when the loss and every gradient in ``grads`` are finite."""
    finite = jnp.isfinite(loss)
    for grad in grads:
        finite = finite & jnp.all(jnp.isfinite(grad))
    return finite


def count_step(guard: GuardState, finite: Array) -> GuardState:
    """The counters after a step that was applied (``finite``) or skipped."""
    bad = (~finite).astype(jnp.int32)
    return GuardState(bad_run=(guard.bad_run + 1) * bad, skipped=guard.skipped + bad)

