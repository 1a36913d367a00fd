"""Jitted training and evaluation steps: plain functions to call in your own loop.

::

    step = make_train_step(model, "sparse_categorical_crossentropy", "adam", metrics=["accuracy"])
    opt_state = init_opt_state(params, "adam")
    for epoch in range(epochs):
        for i, (x, y) in enumerate(batches):
            params, state, opt_state, logs = step(params, state, opt_state, (x, y),
                                                  jax.random.fold_in(key, i))

One step: ``model.apply(params, state, x, key=key, train=True)``, the loss, ``jax.grad``, the
optax update (see :func:`funcnet.training.make_optimizer`) and ``optax.apply_updates``, all in one
``jax.jit``; with ``skip_nonfinite`` (the default), the non-finite guard around the update (see
:mod:`funcnet.training.guard`). ``opt_state`` is a :class:`funcnet.training.OptState`. It
compiles once per batch shape and donates ``params``, ``state`` and ``opt_state`` (their old
buffers are reused for the new values: do not use the arrays you passed in after the call; keep
the returned ones).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from funcnet.core import Array, Key, Layer, Params, State, penalty
from funcnet.losses import get_loss
from funcnet.metrics import Metric, get_metric
from funcnet.training.cache import cached, freeze_key
from funcnet.training.guard import OptState, all_finite, count_step
from funcnet.training.optimizers import FreezeSpec, Schedule, freeze_labels, make_optimizer
from funcnet.training.sharded import jit_on, make_layout

__all__ = ["make_eval_step", "make_train_step"]

Batch = tuple[Any, ...]


def unpack_batch(batch: Batch) -> tuple[Any, Any, Array | None]:
    """``(x, y)`` or ``(x, y, weights)`` -> ``(x, y, weights or None)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"a batch must be a tuple (x, y) or (x, y, weights), got {type(batch).__name__}"
                         f"{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}.")
    return batch[0], batch[1], batch[2] if len(batch) == 3 else None


def num_classes_of(outputs: Any) -> int | None:
    """The class count metrics use for these model outputs: the last axis, or 2 for binary scores."""
    if not hasattr(outputs, "shape") or outputs.ndim == 0:
        return None
    return 2 if outputs.ndim == 1 or outputs.shape[-1] == 1 else int(outputs.shape[-1])


def _accepts_weights(loss_fn: Callable) -> bool:
    try:
        params = inspect.signature(loss_fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


@dataclasses.dataclass(frozen=True)
class Tracker:
    """Accumulates the loss, the skipped-step count and the metrics on the device.

    Accumulator: ``{"loss": {"sum", "weight"}, "skipped": count, "bad_run": longest run of
    consecutive skipped steps seen, <metric name>: <metric accumulator>}``; all counts add.
    """

    metrics: tuple[Metric, ...]
    track_loss: bool = True

    def init(self, outputs: Any) -> dict:
        acc: dict[str, Any] = {"skipped": jnp.zeros((), jnp.int32), "bad_run": jnp.zeros((), jnp.int32)}
        if self.track_loss:
            acc["loss"] = {"sum": jnp.zeros((), jnp.float32), "weight": jnp.zeros((), jnp.float32)}
        for metric in self.metrics:
            acc[metric.name] = metric.init(num_classes_of(outputs))
        return acc

    def update(self, acc: dict, loss: Array | None, y: Any, outputs: Any, weights: Array | None,
               ok: Array | None = None, bad_run: Array | None = None) -> dict:
        new = dict(acc)
        if self.track_loss:
            if weights is not None:
                n = jnp.sum(weights).astype(jnp.float32)
            else:
                n = jnp.float32(jax.tree.leaves(y)[0].shape[0])
            if ok is not None:
                n = jnp.where(ok, n, 0)
                loss = jnp.where(ok, loss, 0)
            new["loss"] = {"sum": acc["loss"]["sum"] + loss * n, "weight": acc["loss"]["weight"] + n}
        for metric in self.metrics:
            updated = metric.update(acc[metric.name], y, outputs, weights)
            new[metric.name] = updated if ok is None else jax.tree.map(
                lambda a, b: jnp.where(ok, a, b), updated, acc[metric.name])
        if ok is not None:
            new["skipped"] = acc["skipped"] + (~ok).astype(jnp.int32)
        if bad_run is not None:
            new["bad_run"] = jnp.maximum(acc["bad_run"], bad_run)
        return new

    def compute(self, acc: dict) -> dict[str, Any]:
        logs = {}
        if self.track_loss:
            w = acc["loss"]["weight"]
            logs["loss"] = jnp.where(w > 0, acc["loss"]["sum"] / jnp.where(w > 0, w, 1), jnp.nan)
        for metric in self.metrics:
            logs[metric.name] = metric.compute(acc[metric.name])
        return logs


def resolve_metrics(metrics: Sequence[str | Metric] | str | Metric,
                    threshold: float | None = None) -> tuple[Metric, ...]:
    """Metric objects from names or Metrics; names must be unique."""
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    resolved = tuple(get_metric(m, threshold=threshold) for m in metrics)
    names = [m.name for m in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1} | ({"loss", "skipped"} & set(names)))
    if duplicates:
        raise ValueError(f"metric names must be unique and differ from 'loss' and 'skipped'; repeated: {duplicates}. "
                         "Pass name= to the metric constructors.")
    return resolved


def _tx_update(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Params,
               loss: Array) -> tuple[Any, Any]:
    """``tx.update``, passing the loss as ``value`` to transformations that take extra arguments
    (``optax.contrib.reduce_on_plateau`` reads it)."""
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx.update(grads, opt_state, params, value=loss)
    return tx.update(grads, opt_state, params)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainProgram:
    """The pure pieces a train step is made of; ``fit`` runs them in its own jitted loops."""

    model: Layer
    loss_fn: Callable
    tx: optax.GradientTransformation
    tracker: Tracker
    skip_nonfinite: bool
    freeze: FreezeSpec = None

    def init_opt_state(self, params: Params) -> OptState:
        """The :class:`OptState` this program's steps start from."""
        return OptState.create(self.tx, params)

    def check_opt_state(self, params: Params, opt_state: Any) -> None:
        """At trace time: opt_state must have the structure :meth:`init_opt_state` gives."""
        expected = jax.tree.structure(jax.eval_shape(self.init_opt_state, params))
        if jax.tree.structure(opt_state) == expected:
            return
        if not isinstance(opt_state, OptState):
            raise ValueError(
                f"opt_state has type {type(opt_state).__name__}, but a train step takes a funcnet OptState (the "
                "optimizer's state and the non-finite guard's counters). Build it with "
                "funcnet.training.init_opt_state(params, optimizer, ...); convert one saved by an older funcnet "
                "(optax's ApplyIfFiniteState, or a bare optax state) with "
                "funcnet.training.upgrade_opt_state(opt_state)."
            )
        raise ValueError(
            "opt_state does not match the optimizer this step applies (freezing adds its own state). Build it "
            "with funcnet.training.init_opt_state(params, optimizer, ...) using the same optimizer, learning_rate and "
            "freeze arguments."
        )

    def loss(self, y: Any, outputs: Any, weights: Array | None) -> Array:
        """The loss function on one batch; checks (at trace time) that it gives a scalar."""
        if weights is None:
            value = self.loss_fn(y, outputs)
        elif not _accepts_weights(self.loss_fn):
            raise ValueError("the loss function takes no weights, but this batch has weights (a padded last batch "
                             "or sample_weight); give it a third argument `weights=None`, or use ragged='drop'.")
        else:
            value = self.loss_fn(y, outputs, weights)
        if jnp.shape(value) != ():
            raise ValueError(f"the loss function must return a scalar (the batch's mean loss), got an array of "
                             f"shape {jnp.shape(value)}; reduce it, for example with jnp.mean.")
        return value

    def objective(self, params: Params, y: Any, outputs: Any, weights: Array | None) -> Array:
        """The loss plus the model's penalty (its layers' terms, such as weight regularisers)."""
        value = self.loss(y, outputs, weights)
        return value if self.model.penalty is None else value + penalty(self.model, params)

    def trainable(self, params: Params, grads: Any) -> list[Array]:
        """The gradients of the parameters that are not frozen (those the guard checks)."""
        if self.freeze is None:
            return jax.tree.leaves(grads)
        labels = jax.tree.leaves(freeze_labels(params, self.freeze))
        return [g for g, label in zip(jax.tree.leaves(grads), labels, strict=True) if label == "trainable"]

    def update(self, params: Params, state: State, opt_state: OptState, x: Any, y: Any, weights: Array | None,
               key: Key | None) -> tuple:
        """One optimisation step: returns ``(params, state, opt_state, loss, outputs, finite)``.

        With ``skip_nonfinite``, ``finite`` is False when the loss or a trainable gradient was not
        finite: the step then changes no params, layer state or optimizer state, and
        ``opt_state.guard`` counts it. Without, ``finite`` is None.
        """

        def objective(p: Params) -> tuple[Array, tuple[Any, State]]:
            outputs, new_state = self.model.apply(p, state, x, key=key, train=True)
            return self.objective(p, y, outputs, weights), (outputs, new_state)

        (loss, (outputs, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        if not self.skip_nonfinite:
            updates, inner = _tx_update(self.tx, grads, opt_state.optimizer, params, loss)
            return optax.apply_updates(params, updates), new_state, opt_state._replace(optimizer=inner), loss, \
                outputs, None

        def apply(operands: tuple) -> tuple:
            params, _, new_state, inner, grads = operands
            updates, inner = _tx_update(self.tx, grads, inner, params, loss)
            return optax.apply_updates(params, updates), new_state, inner

        def skip(operands: tuple) -> tuple:
            params, state, _, inner, _ = operands
            return params, state, inner

        # The update runs inside the conditional: selecting its results with jnp.where instead makes
        # XLA copy the optimizer's moments on every step (docs/benchmarks.md, the non-finite guard).
        finite = all_finite(loss, self.trainable(params, grads))
        params, state, inner = jax.lax.cond(finite, apply, skip,
                                            (params, state, new_state, opt_state.optimizer, grads))
        return params, state, OptState(inner, count_step(opt_state.guard, finite)), loss, outputs, finite

    def evaluate(self, params: Params, state: State, acc: dict, x: Any, y: Any, weights: Array | None) -> dict:
        outputs, _ = self.model.apply(params, state, x, train=False)
        loss = self.objective(params, y, outputs, weights) if self.tracker.track_loss else None
        return self.tracker.update(acc, loss, y, outputs, weights)


def build_program(model: Layer, loss: Any, optimizer: Any = None, *, metrics: Any = (),
                  learning_rate: float | Schedule | None = None, freeze: FreezeSpec = None,
                  skip_nonfinite: bool = True, threshold: float | None = None,
                  reuse: bool = False) -> TrainProgram:
    """Resolves names into a :class:`TrainProgram` (``optimizer=None`` for evaluation only).

    With ``reuse``, the same arguments give the same program (and so its compiled loops, see
    :mod:`funcnet.training.cache`).
    """
    if reuse:
        key = ("program", getattr(model, "apply", model), loss, optimizer, freeze_key(metrics), learning_rate,
               freeze_key(freeze), skip_nonfinite, threshold)
        return cached(key, lambda: build_program(model, loss, optimizer, metrics=metrics,
                                                 learning_rate=learning_rate, freeze=freeze,
                                                 skip_nonfinite=skip_nonfinite, threshold=threshold))
    if not isinstance(model, Layer):
        raise TypeError(f"`model` must be a funcnet Layer (a model built from layers), got {type(model).__name__}.")
    loss_fn = get_loss(loss) if loss is not None else None
    tx = make_optimizer(optimizer, learning_rate=learning_rate, freeze=freeze) if optimizer is not None else None
    tracker = Tracker(resolve_metrics(metrics, threshold), track_loss=loss_fn is not None)
    return TrainProgram(model, loss_fn, tx, tracker, skip_nonfinite, freeze)


def make_train_step(model: Layer, loss: str | Callable, optimizer: str | optax.GradientTransformation, *,
                    metrics: Sequence[str | Metric] = (), learning_rate: float | Schedule | None = None,
                    freeze: FreezeSpec = None, skip_nonfinite: bool = True, donate: bool = True,
                    jit: bool = True, mesh: jax.sharding.Mesh | None = None, data_axis: str = "data",
                    param_sharding: str | None = None) -> Callable:
    """A jitted training step ``step(params, state, opt_state, batch, key)``.

    Args:
        model: the model; it is called as ``model.apply(params, state, x, key=key, train=True)``.
        loss: a loss name (``"sparse_categorical_crossentropy"``, see :data:`funcnet.losses.LOSSES`)
            or a function ``(y_true, y_pred[, weights]) -> scalar``.
        optimizer: an optimizer name (``"adam"``, see :func:`funcnet.training.get_optimizer`) or
            any ``optax.GradientTransformation``.
        metrics: names or :class:`funcnet.metrics.Metric` objects, computed on the batch.
        learning_rate: a float or an optax schedule, for optimizer names.
        freeze: glob patterns over parameter paths to keep fixed (``"conv2d_*"``).
        skip_nonfinite: skip (and count) updates whose loss or gradients are not finite; the
            layer state (BatchNorm statistics) is not updated on such a step either.
        donate: donate the buffers of ``params``, ``state`` and ``opt_state``.
        jit: return the jitted function (False: the plain function, to put in your own
            ``jax.jit``, ``jax.lax.scan`` or ``shard_map``).
        mesh: a ``jax.sharding.Mesh`` to run data-parallel on: each batch is split along its
            first axis over ``data_axis`` and XLA partitions the step (the gradients are those
            of the whole global batch's loss, as on one device). The step then accepts NumPy
            batches (placed shard by shard) or global arrays from
            :func:`funcnet.sharding.shard_batch`, and places params, state and opt_state itself
            (see :class:`funcnet.training.sharded.ShardedJit`). The batch size must divide by the
            data axis's size.
        data_axis: the mesh axis batches are split over.
        param_sharding: None (replicated params, layer state and optimizer state) or ``"fsdp"``
            (each array split over ``data_axis`` along its largest divisible axis, see
            :func:`funcnet.sharding.param_shardings`).

    Returns:
        ``step(params, state, opt_state, batch, key) -> (params, state, opt_state, logs)``.
        ``batch`` is ``(x, y)`` or ``(x, y, weights)`` with per-example weights (a 0/1 mask);
        ``key`` a ``jax.random`` key (None for models without randomness). ``logs`` is a dict of
        device scalars: ``"loss"`` (the batch's mean loss), ``"skipped"`` (1 if the update was
        skipped, with ``skip_nonfinite``; also ``"bad_run"``, the number of consecutive skipped
        steps) and one entry per metric. The initial ``opt_state`` comes from
        :func:`funcnet.training.init_opt_state` with the same optimizer arguments.
    """
    layout = make_layout(mesh, data_axis, param_sharding)
    if layout is not None and not jit:
        raise ValueError("mesh= shards the jitted step; with jit=False, put the plain step in your own jax.jit "
                         "(shardings from funcnet.sharding) or pass jit=True.")
    program = build_program(model, loss, optimizer, metrics=metrics, learning_rate=learning_rate, freeze=freeze,
                            skip_nonfinite=skip_nonfinite)

    def step(params: Params, state: State, opt_state: Any, batch: Batch, key: Key | None) -> tuple:
        x, y, weights = unpack_batch(batch)
        program.check_opt_state(params, opt_state)
        params, state, opt_state, loss_value, outputs, finite = program.update(
            params, state, opt_state, x, y, weights, key)
        acc = program.tracker.init(outputs)
        acc = program.tracker.update(acc, loss_value, y, outputs, weights)
        logs = program.tracker.compute(acc)
        logs["loss"] = loss_value
        if finite is not None:
            logs["skipped"] = (~finite).astype(jnp.int32)
            logs["bad_run"] = opt_state.guard.bad_run
        return params, state, opt_state, logs

    if not jit:
        return step
    return jit_on(layout, step, ("params", "params", "params", "batch", "replicated"), (0, 1, 2, "replicated"),
                  (0, 1, 2) if donate else ())


def make_eval_step(model: Layer, loss: str | Callable | None = None, *, metrics: Sequence[str | Metric] = (),
                   jit: bool = True, mesh: jax.sharding.Mesh | None = None, data_axis: str = "data",
                   param_sharding: str | None = None) -> Callable:
    """A jitted evaluation step ``eval_step(params, state, batch) -> logs``.

    The model runs with ``train=False`` (no dropout, BatchNorm uses its running statistics).
    ``logs`` holds ``"loss"`` (when a loss is given) and one entry per metric, for this batch.
    To evaluate many batches exactly, add the metrics' accumulators instead
    (:mod:`funcnet.metrics`), or use :func:`funcnet.evaluate`. ``mesh``, ``data_axis`` and
    ``param_sharding`` run it data-parallel, as in :func:`make_train_step`.
    """
    layout = make_layout(mesh, data_axis, param_sharding)
    if layout is not None and not jit:
        raise ValueError("mesh= shards the jitted step; with jit=False, put the plain step in your own jax.jit "
                         "(shardings from funcnet.sharding) or pass jit=True.")
    program = build_program(model, loss, None, metrics=metrics)
    if loss is None and not program.tracker.metrics:
        raise ValueError("make_eval_step needs a loss or at least one metric to compute.")

    def eval_step(params: Params, state: State, batch: Batch) -> dict[str, Array]:
        x, y, weights = unpack_batch(batch)
        outputs = jax.eval_shape(lambda: model.apply(params, state, x, train=False)[0])
        acc = program.tracker.init(outputs)
        acc = program.evaluate(params, state, acc, x, y, weights)
        return program.tracker.compute(acc)

    if not jit:
        return eval_step
    return jit_on(layout, eval_step, ("params", "params", "batch"), "replicated")
