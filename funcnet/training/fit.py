"""``fit``: a Keras-like training loop over compiled, pure steps.

The data goes to the device once; each epoch's batch order and every step's key derive from
``key`` as documented in :mod:`funcnet.training.batching`, so a hand-written loop over
:func:`funcnet.make_train_step` with the same keys gives the same parameters. Metrics accumulate on
the device and are fetched once per epoch (and at most every half second for the progress bar).
Each epoch is run by the driver of its mode (:mod:`funcnet.training.epoch`); ``fit`` reacts to
the pauses it yields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Key, Layer, Params, State
from funcnet.losses import label_kind
from funcnet.metrics import Metric
from funcnet.training.batching import RAGGED, batch_order, fit_keys, num_batches
from funcnet.training.callbacks import Callback, as_callbacks
from funcnet.training.checks import check_labels, check_lengths
from funcnet.training.epoch import make_driver, pauses, progress_chunk, stop_rows
from funcnet.training.evaluate import (
    as_arrays,
    check_batch_size,
    check_mesh_batch_size,
    check_one_process,
    data_fits,
    loss_display_name,
    metric_threshold,
    output_struct,
    place_data,
    validation_batch_size_for,
    validation_evaluator,
)
from funcnet.training.loops import Batches, Carry, TrainLoop
from funcnet.training.optimizers import FreezeSpec, Schedule, learning_rate_of
from funcnet.training.progress import Progress
from funcnet.training.sharded import make_layout
from funcnet.training.state import FitResult, NonFiniteError, TrainState
from funcnet.training.step import build_program

__all__ = ["MODES", "choose_mode", "fit"]

#: Training modes: ``"step"`` dispatches one compiled step per batch, ``"scan"`` one call per
#: epoch (or per ``steps_per_call`` steps); ``"auto"`` picks with :func:`choose_mode`.
MODES = ("auto", "step", "scan")


def choose_mode(on_device: bool) -> str:
    """The mode ``"auto"`` picks: ``"scan"`` whenever the data is on the device, else ``"step"``.

    On accelerators the scan removes the per-step dispatch entirely. On a 2-core CPU it is faster
    too (docs/benchmarks.md): an epoch of the MLP 784-256-10 at batch 32 (1875 steps) took 0.36 s
    with the scan, 0.51 s with one call per step and 0.32-0.35 s for a hand-written
    ``jax.lax.scan``; 60 steps of the CNN at batch 128 took 1.76 s and 2.02 s. Data kept on the
    host needs the per-step loop.
    """
    return "scan" if on_device else "step"


def fit(
    model: Layer,
    params: Params | None,
    state: State | None,
    x: Any,
    y: Any,
    *,
    loss: Any,
    optimizer: Any = "adam",
    learning_rate: float | Schedule | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    key: Key | None = None,
    metrics: Sequence[str | Metric] | str | Metric = (),
    validation_data: tuple | None = None,
    validation_split: float = 0.0,
    validation_batch_size: int | None = None,
    sample_weight: Any = None,
    callbacks: Any = (),
    verbose: int = 1,
    shuffle: bool = True,
    ragged: str = "pad",
    mode: str = "auto",
    steps_per_call: int | None = None,
    freeze: FreezeSpec = None,
    skip_nonfinite: bool = True,
    max_bad_steps: int = 10,
    opt_state: Any = None,
    resume: TrainState | None = None,
    data_on_device: bool | None = None,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
    param_sharding: str | None = None,
) -> FitResult:
    """Trains ``model`` on ``(x, y)`` for ``epochs`` epochs; returns the new params, state, opt_state and history.

    Args:
        model: the model; called as ``model.apply(params, state, x, key=key, train=True)``.
        params, state: its variables (from ``model.init``); both None with ``resume``. They are
            copied, never modified.
        x: inputs, an array (or pytree of arrays) with the N examples on the first axis.
        y: labels: integer classes ``(N,)`` for ``sparse_categorical_crossentropy``, one-hot
            ``(N, C)`` for ``categorical_crossentropy``, targets of the output's shape otherwise.
        loss: a loss name (:data:`funcnet.losses.LOSSES`) or function ``(y_true, y_pred, weights=None)``.
        optimizer: an optimizer name (``"adam"``, ``"sgd"``, ``"momentum"``, ``"adamw"``,
            ``"rmsprop"``) or any ``optax.GradientTransformation``.
        learning_rate: a float or an optax schedule, for optimizer names.
        epochs: the epoch count to reach (with ``resume``, counting the epochs already done).
        batch_size: examples per step.
        key: the ``jax.random`` key all shuffling and step keys derive from (default
            ``jax.random.key(0)``); see :mod:`funcnet.training.batching` for the recipe.
        metrics: metric names (``"accuracy"``, ``"f1"``, ...) or Metric objects, computed on the
            training batches and on the validation data.
        validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, weights)``, evaluated after each epoch.
        validation_split: or: the fraction of the examples, taken from the end before
            shuffling (as Keras does), held out for validation.
        validation_batch_size: batch size for validation (default ``max(batch_size, 256)``; it
            does not change the result).
        sample_weight: per-example weights ``(N,)`` for the loss and metrics.
        callbacks: :class:`funcnet.training.Callback` objects or functions
            ``(epoch, logs, train_state) -> stop?``; those with ``every_steps`` are also called
            in the middle of epochs (``CheckpointCallback(every_steps=...)``).
        verbose: 0 silent, 1 a progress bar per epoch (loss, metrics, examples per second), 2
            one line per epoch.
        shuffle: reshuffle the examples every epoch.
        ragged: the last batch of an epoch, when N is not a multiple of ``batch_size``:
            ``"pad"`` completes it with repeated examples of weight 0 (every batch counts, no
            extra compilation), ``"drop"`` leaves it out.
        mode: ``"scan"`` runs ``steps_per_call`` steps (default: the whole epoch) per compiled
            call, ``"step"`` one step per call, ``"auto"`` chooses (:func:`choose_mode`).
        steps_per_call: in scan mode, steps per call (the progress bar moves between calls;
            calls of every length share one compilation). By default the whole epoch, or a
            tenth of it with ``verbose=1``. Callbacks with ``every_steps`` split calls too.
        freeze: glob patterns over parameter paths to keep fixed (``"conv2d_*"``).
        skip_nonfinite: skip and count updates whose loss or gradients are not finite (the
            ``"skipped"`` history entry).
        max_bad_steps: stop with :class:`funcnet.training.NonFiniteError` once this many
            consecutive steps were skipped (checked after each compiled call: at the end of a
            scan, or every half second in step mode).
        opt_state: the optimizer state to continue from (from an earlier fit's result).
        resume: a :class:`funcnet.training.TrainState` (saved by a callback) to continue
            exactly from, at an epoch's end or in its middle; replaces params, state, opt_state
            and key. The data, batch size, loss and metrics must be those of the first run.
        data_on_device: put the data on the device once (default: when it takes less than half
            the device's free memory; always on the CPU); else batches are copied from the
            host, one step ahead.
        mesh: a ``jax.sharding.Mesh`` to train data-parallel on (docs/guides/many-devices.md):
            each batch is split over ``data_axis`` and XLA partitions the step; the batches, keys,
            BatchNorm statistics and dropout masks are those of the one-device run, so the results
            equal it to float32 rounding. Data kept on the devices is split over the data axis
            too (each holds about 1/N); batches are gathered from it by the one global order.
            ``batch_size`` (and ``validation_batch_size``) must divide by the data axis's size.
        data_axis: the mesh axis batches are split over.
        param_sharding: None (params and optimizer state replicated) or ``"fsdp"`` (split over
            ``data_axis``, see :func:`funcnet.sharding.param_shardings`).

    Returns:
        :class:`funcnet.training.FitResult` ``(params, state, opt_state, history)``.

    Raises:
        ValueError, TypeError: bad arguments, or labels that do not fit the loss or model (see
            :func:`funcnet.training.check_labels`), before anything is compiled.
        NonFiniteError: after ``max_bad_steps`` consecutive non-finite steps.
    """
    _check_arguments(epochs, batch_size, ragged, mode, steps_per_call, max_bad_steps, validation_split,
                     validation_data)
    layout = make_layout(mesh, data_axis, param_sharding)
    check_one_process(layout, "fit")
    check_mesh_batch_size(batch_size, layout)
    callbacks = as_callbacks(callbacks)
    train_state = _starting_point(resume, params, state, opt_state, key)
    key = train_state.key
    program = build_program(model, loss, optimizer, metrics=metrics, learning_rate=learning_rate, freeze=freeze,
                            skip_nonfinite=skip_nonfinite, threshold=metric_threshold(loss), reuse=True)

    x, y = as_arrays(x), as_arrays(y)
    sample_weight = None if sample_weight is None else np.asarray(sample_weight, np.float32)
    check_lengths(x, y, sample_weight)
    if validation_split:
        (x, y, sample_weight), validation_data = _split(x, y, sample_weight, validation_split)
    n = check_lengths(x, y, sample_weight)
    outputs = output_struct(model, train_state.params, train_state.state, x, batch_size)
    kind, loss_name = label_kind(program.loss_fn), loss_display_name(loss)
    check_labels(y, outputs.shape, kind, loss_name=loss_name)
    steps = num_batches(n, batch_size, ragged)
    if steps == 0:
        raise ValueError(f"ragged='drop' with batch_size={batch_size} drops all {n} examples; use a smaller "
                         "batch_size or ragged='pad'.")
    if train_state.batch:
        _check_mid_epoch(train_state.batch, steps, train_state.epoch_metrics, program.tracker.init(outputs))
    evaluator = None
    if validation_data is not None:
        evaluator = validation_evaluator(program, model, train_state.params, train_state.state, validation_data,
                                validation_batch_size or validation_batch_size_for(batch_size, layout), kind, loss_name,
                                data_on_device, layout)

    on_device = data_fits((x, y), layout) if data_on_device is None else data_on_device
    mode = choose_mode(on_device) if mode == "auto" else mode
    if mode == "scan" and not on_device:
        raise ValueError("mode='scan' gathers batches on the device, but data_on_device is False; use mode='step'.")
    if train_state.opt_state is None:
        train_state = train_state._replace(opt_state=program.init_opt_state(train_state.params))
    program.check_opt_state(train_state.params, train_state.opt_state)
    train_state = _copy(train_state)

    loop = TrainLoop(program, Batches(n, batch_size, masked=(ragged == "pad" and n % batch_size != 0)
                                      or sample_weight is not None), layout)
    data = place_data((x, y, sample_weight), layout) if on_device else (x, y, sample_weight)
    summarize = loop.summarize()
    data_key, step_root = fit_keys(key)
    progress = Progress(verbose, epochs, steps, batch_size)
    chunk = steps_per_call or (progress_chunk(steps) if progress.live else steps)
    intervals = sorted({cb.every_steps for cb in callbacks if cb.every_steps})
    history: dict[str, list] = {}
    for cb in callbacks:
        cb.on_train_begin(train_state)
    try:
        for epoch in range(train_state.epoch, epochs):
            started, first, step = time.perf_counter(), train_state.batch, train_state.step
            progress.begin_epoch(epoch)
            order = batch_order(data_key, epoch, n, batch_size, ragged=ragged, shuffle=shuffle)
            driver = make_driver(mode, loop, data, order, step_root, on_device=on_device, chunk=chunk, start=first)
            acc = train_state.epoch_metrics if first else program.tracker.init(outputs)
            carry = Carry(train_state.params, train_state.state, train_state.opt_state, acc, jnp.int32(first),
                          jnp.int32(step))
            for pause in pauses(driver, carry, start=first, steps=steps, stops=stop_rows(step, first, steps, intervals),
                                refresh=mode == "step" or progress.live):
                if pause.stop and _step_hooks(callbacks, _mid_epoch(pause.carry, epoch, key)):
                    break
                if pause.refresh or pause.end:
                    logs = {k: _host(v) for k, v in jax.device_get(summarize(pause.carry.acc)).items()}
                    _stop_if_bad(logs, skip_nonfinite, max_bad_steps, pause.carry, epoch, key, progress)
                if pause.refresh:
                    progress.update(pause.row, {k: v for k, v in logs.items() if k != "bad_run"})
            carry = pause.carry
            if not pause.end:  # a callback asked to stop in the middle of the epoch
                train_state = _mid_epoch(carry, epoch, key)
                break
            step += steps - first
            trained = time.perf_counter() - started
            logs.pop("bad_run")
            if not skip_nonfinite:
                logs.pop("skipped")
            if evaluator is not None:
                logs.update({f"val_{k}": v for k, v in evaluator(carry.params, carry.state).items()})
            rate = learning_rate_of(optimizer, learning_rate, carry.opt_state, step)
            if rate is not None:
                logs["learning_rate"] = rate
            logs["time"] = time.perf_counter() - started
            logs["examples_per_second"] = (steps - first) * batch_size / trained
            history.setdefault("epoch", []).append(epoch)
            for name, value in logs.items():
                history.setdefault(name, []).append(value)
            progress.end_epoch(epoch, logs)
            train_state = TrainState(carry.params, carry.state, carry.opt_state, step, epoch + 1, key)
            if _epoch_hooks(callbacks, epoch, logs, train_state):
                break
    finally:
        progress.close()
    result = train_state
    for cb in callbacks:  # each sees the state training reached; the last replacement is returned
        replaced = cb.on_train_end(train_state)
        if replaced is not None:
            result = replaced
    return FitResult(result.params, result.state, result.opt_state, history)


def _check_arguments(epochs: Any, batch_size: Any, ragged: Any, mode: Any, steps_per_call: Any, max_bad_steps: Any,
                     validation_split: Any, validation_data: Any) -> None:
    """fit's argument checks that need no data (before anything is copied or compiled)."""
    check_batch_size(batch_size)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"`epochs` must be a non-negative integer, got {epochs!r}.")
    if ragged not in RAGGED:
        raise ValueError(f"`ragged` must be one of {list(RAGGED)}, got {ragged!r}.")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}, got {mode!r}.")
    if steps_per_call is not None:
        check_batch_size(steps_per_call, "steps_per_call")
    if isinstance(max_bad_steps, bool) or not isinstance(max_bad_steps, int) or max_bad_steps < 1:
        raise ValueError(f"`max_bad_steps` must be a positive integer, got {max_bad_steps!r}.")
    if not 0 <= validation_split < 1:
        raise ValueError(f"`validation_split` must be in [0, 1), got {validation_split!r}.")
    if validation_split and validation_data is not None:
        raise ValueError("pass either validation_data or validation_split, not both.")


def _starting_point(resume: TrainState | None, params: Params | None, state: State | None, opt_state: Any,
                    key: Key | None) -> TrainState:
    """Where training starts: ``resume``, or step 0 of epoch 0 from the given variables
    (``opt_state`` None until the program builds it)."""
    if resume is not None:
        if not isinstance(resume, TrainState):
            raise ValueError(f"`resume` must be a funcnet TrainState, got {type(resume).__name__}.")
        if params is not None or state is not None or opt_state is not None or key is not None:
            raise ValueError("with `resume`, pass params=None and state=None and no opt_state or key: the TrainState "
                             "holds them.")
        return resume._replace(step=int(resume.step), epoch=int(resume.epoch), batch=int(resume.batch))
    if params is None:
        raise ValueError("`params` is None; pass the params from model.init (or `resume`).")
    return TrainState(params, {} if state is None else state, opt_state, 0, 0,
                      jax.random.key(0) if key is None else key)


def _split(x: Any, y: Any, sample_weight: Any, validation_split: float) -> tuple:
    """Keras's rule: the last ``validation_split`` of the examples, before any shuffling.

    Returns ``((x, y, sample_weight), validation_data)`` with ``validation_data`` ``(x, y)`` or
    ``(x, y, weights)``.
    """
    n = jax.tree.leaves(x)[0].shape[0]
    at = int(n * (1 - validation_split))
    if at == n or at == 0:
        raise ValueError(f"validation_split={validation_split} leaves {n - at} of {n} examples for validation and "
                         f"{at} for training; both need at least one.")

    def cut(tree: Any, part: slice) -> Any:
        return None if tree is None else jax.tree.map(lambda a: a[part], tree)

    head, tail = slice(0, at), slice(at, n)
    validation = (cut(x, tail), cut(y, tail)) + (() if sample_weight is None else (cut(sample_weight, tail),))
    return (cut(x, head), cut(y, head), cut(sample_weight, head)), validation


def _copy(train_state: TrainState) -> TrainState:
    """Fresh device buffers for the arrays fit donates, so that it never deletes the caller's."""
    params, state, opt_state, acc = jax.tree.map(lambda a: jnp.array(a, copy=True), (
        train_state.params, train_state.state, train_state.opt_state, train_state.epoch_metrics))
    return train_state._replace(params=params, state=state, opt_state=opt_state, epoch_metrics=acc)


def _host(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value


def _stop_if_bad(logs: dict, skip_nonfinite: bool, max_bad_steps: int, carry: Carry, epoch: int, key: Key,
                 progress: Progress) -> None:
    """Raises NonFiniteError once ``max_bad_steps`` consecutive steps were skipped."""
    if skip_nonfinite and int(logs["bad_run"]) >= max_bad_steps:
        progress.close()
        raise NonFiniteError(
            f"training stopped in epoch {epoch + 1}: {int(logs['bad_run'])} consecutive steps had a non-finite "
            f"loss or gradient (limit max_bad_steps={max_bad_steps}). Their updates were skipped, so the "
            "parameters are still finite (error.train_state holds them). Check the data for NaN or infinity "
            "(np.isfinite(x).all()), lower the learning rate, or clip gradients "
            "(optax.chain(optax.clip_by_global_norm(1.0), optimizer)).", _mid_epoch(carry, epoch, key))


def _mid_epoch(carry: Carry, epoch: int, key: Key) -> TrainState:
    """The TrainState after batch ``carry.row`` of ``epoch`` (waits for the device)."""
    return TrainState(carry.params, carry.state, carry.opt_state, int(carry.step), epoch, key, int(carry.row),
                      carry.acc)


def _epoch_hooks(callbacks: list[Callback], epoch: int, logs: dict, train_state: TrainState) -> bool:
    """Calls every callback's ``on_epoch_end``; True if one asks to stop."""
    stop = False
    for cb in callbacks:
        stop = bool(cb.on_epoch_end(epoch, logs, train_state)) or stop
    return stop


def _step_hooks(callbacks: list[Callback], train_state: TrainState) -> bool:
    """Calls ``on_step_end`` of the callbacks due at this step; True if one asks to stop."""
    stop = False
    for cb in callbacks:
        if cb.every_steps and train_state.step % cb.every_steps == 0:
            stop = bool(cb.on_step_end(train_state.step, train_state)) or stop
    return stop


def _check_mid_epoch(batch: int, steps: int, epoch_metrics: Any, fresh: dict) -> None:
    """A mid-epoch TrainState fits this run: its batch lies inside an epoch, its running sums match."""
    if not 0 < batch < steps:
        raise ValueError(f"`resume` stopped after batch {batch} of an epoch, but this fit has {steps} batches an "
                         "epoch; resume with the data and batch_size of the run that saved it.")
    if jax.tree.structure(epoch_metrics) != jax.tree.structure(fresh):
        raise ValueError(f"`resume` holds running sums for {sorted(epoch_metrics or {})}, but this fit tracks "
                         f"{sorted(fresh)}; resume with the loss and metrics of the run that saved it.")
