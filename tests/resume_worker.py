"""Runs one part of the exact-resume experiment in its own process (used by test_resume.py).

``python tests/resume_worker.py <part> <directory> [<stop_at_step>]`` with part

* ``first``: the uninterrupted runs (fit for 4 epochs; a hand loop over make_train_step for 20
  steps), results saved as checkpoints ``fit_full`` and ``loop_full``; then the same runs
  stopped early: fit after 2 epochs (checkpointed by CheckpointCallback), the loop after
  ``stop_at_step`` steps, possibly in the middle of an epoch (CheckpointManager, with the data
  position in the metadata);
* ``crash``: fit checkpointed every ``stop_at_step`` steps by CheckpointCallback, the process
  killed (``os._exit``) right after the first checkpoint, in the middle of an epoch;
* ``resume`` (a new process): continues all three from their latest checkpoints, then runs the
  negative controls: the same resume with a fresh optimizer state (fit and loop), with a
  re-seeded key (loop), and from the start of the interrupted epoch (the crashed fit).

No persistent compilation cache is used: every process compiles its own code.
"""

from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

import funcnet as fn
from funcnet import checkpoint as ck
from funcnet.training import (
    batch_order,
    fit,
    fit_keys,
    init_opt_state,
    make_train_step,
    step_key,
)

N, FEATURES, CLASSES, EPOCHS = 96, 8, 3, 4
LOSS, OPTIMIZER, LR = "sparse_categorical_crossentropy", "adam", 1e-2
FIT_BATCH, LOOP_BATCH, LOOP_STEPS = 20, 16, 20  # fit: 5 batches an epoch, the last one padded; loop: 6
SEED_KEY = 7
CRASH_EXIT_CODE = 17


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((FEATURES, CLASSES)), axis=1).astype(np.int32)
    return x, y


def model():
    return fn.serial(fn.Dense(16), fn.BatchNorm(), fn.Relu(), fn.Dropout(0.3), fn.Dense(CLASSES))


MODEL = model()


_INITIAL = []


def initial():
    """The model and fresh copies of its initial params and state (initialised once per process)."""
    if not _INITIAL:
        init = jax.jit(lambda key: MODEL.init(key, (None, FEATURES))[1:])
        _INITIAL.append(jax.device_get(init(jax.random.key(0))))
    params, state = jax.tree_util.tree_map(jax.numpy.asarray, _INITIAL[0])
    return MODEL, params, state


def run_fit(directory, *, epochs, resume=None, callback=None, callbacks=()):
    m, params, state = initial()
    x, y = data()
    result = fit(m, None if resume else params, None if resume else state, x, y, loss=LOSS, optimizer=OPTIMIZER,
                 learning_rate=LR, epochs=epochs, batch_size=FIT_BATCH,
                 key=None if resume else jax.random.key(SEED_KEY),
                 resume=resume, callbacks=[callback] if callback else list(callbacks), verbose=0)
    return result


_STEP = {}


def train_step(m):
    """One jitted step per process (compiled once, reused by every loop run)."""
    if "step" not in _STEP:
        _STEP["step"] = make_train_step(m, LOSS, OPTIMIZER, learning_rate=LR)
    return _STEP["step"]


def run_loop(start=None, stop_at=LOOP_STEPS, manager=None):
    """make_train_step in a hand loop, from ``start`` = (tree, metadata) or from scratch."""
    m, params, state = initial()
    x, y = data()
    step = train_step(m)
    if start is None:
        opt_state, key = init_opt_state(params, OPTIMIZER, learning_rate=LR), jax.random.key(SEED_KEY)
        s, epoch, batch, losses = 0, 0, 0, []
    else:
        tree, meta = start
        params, state, opt_state, key = tree["params"], tree["state"], tree["opt_state"], tree["key"]
        s, epoch, batch, losses = meta["step"], meta["epoch"], meta["batch_index"], list(meta["losses"])
    data_key, step_root = fit_keys(key)
    per_epoch = N // LOOP_BATCH
    while s < stop_at:
        order = np.asarray(batch_order(data_key, epoch, N, LOOP_BATCH))
        while batch < per_epoch and s < stop_at:
            rows = order[batch]
            params, state, opt_state, logs = step(params, state, opt_state, (x[rows], y[rows]), step_key(step_root, s))
            losses.append(float(logs["loss"]))
            s, batch = s + 1, batch + 1
        if batch == per_epoch:
            epoch, batch = epoch + 1, 0
    if manager is not None:  # the data position goes with the state
        manager.save(s, {"params": params, "state": state, "opt_state": opt_state, "key": key},
                     metadata={"epoch": epoch, "batch_index": batch, "losses": losses}, model=m,
                     input_shape=(None, FEATURES))
    return params, losses


class Crash(fn.training.Callback):
    """Kills the process at once, as a power cut would, after the checkpoint of the same step."""

    def __init__(self, every_steps):
        self.every_steps = every_steps

    def on_step_end(self, step, train_state):
        os._exit(CRASH_EXIT_CODE)


def save_result(directory, name, params, losses):
    ck.save(os.path.join(directory, name), {"params": params}, metadata={"losses": losses}, overwrite=True)


def main(part, directory, stop_at=None):
    if part == "first":
        result = run_fit(directory, epochs=EPOCHS)
        save_result(directory, "fit_full", result.params, result.history["loss"])
        save_result(directory, "loop_full", *run_loop())
        run_fit(directory, epochs=2, callback=ck.CheckpointCallback(os.path.join(directory, "fit_ckpts"),
                                                                      model=model(), input_shape=(None, FEATURES)))
        run_loop(stop_at=int(stop_at), manager=ck.CheckpointManager(os.path.join(directory, "loop_ckpts")))
    elif part == "crash":
        every = int(stop_at)
        saver = ck.CheckpointCallback(os.path.join(directory, "crash_ckpts"), every_steps=every, every_epochs=None,
                                      model=model(), input_shape=(None, FEATURES))
        run_fit(directory, epochs=EPOCHS, callbacks=[saver, Crash(every)])
        raise SystemExit("the crash callback did not run")
    elif part == "resume":
        for name, change in (("resumed", lambda t: t),
                             ("restarted", lambda t: t._replace(batch=0, epoch_metrics=None))):
            copy = os.path.join(directory, f"crash_{name}_ckpts")  # each run continues its own copy
            shutil.copytree(os.path.join(directory, "crash_ckpts"), copy)
            callback = ck.CheckpointCallback(copy, every_epochs=None, every_steps=1000)
            train_state = callback.restore_latest()
            assert train_state.batch > 0, train_state  # the middle of an epoch
            run_fit(directory, epochs=EPOCHS, resume=change(train_state), callbacks=[callback])
            save_result(directory, f"crash_{name}", callback.manager.restore_latest().tree.params,
                        callback.history["loss"])
        callback = ck.CheckpointCallback(os.path.join(directory, "fit_ckpts"))
        train_state = callback.restore_latest()
        assert train_state is not None and train_state.epoch == 2, train_state
        result = run_fit(directory, epochs=EPOCHS, resume=train_state, callback=callback)
        save_result(directory, "fit_resumed", result.params, callback.history["loss"])
        # Negative controls: each must change the result.
        for name, change in (("fresh_opt", lambda t: t._replace(opt_state=init_opt_state(t.params, OPTIMIZER,
                                                                                        learning_rate=LR))),):
            control = ck.CheckpointCallback(os.path.join(directory, f"fit_{name}_ckpts"))
            restored = ck.CheckpointCallback(os.path.join(directory, "fit_ckpts")).manager.restore(
                train_state.step)
            history = restored.metadata["history"]
            result = run_fit(directory, epochs=EPOCHS, resume=change(restored.tree), callback=control)
            save_result(directory, f"fit_{name}", result.params, history["loss"] + result.history["loss"])

        # The train step donates its inputs, so each run restores its own copy.
        manager = ck.CheckpointManager(os.path.join(directory, "loop_ckpts"))
        for name, change in (("resumed", lambda t: t),
                             ("fresh_opt", lambda t: {**t, "opt_state": init_opt_state(t["params"], OPTIMIZER,
                                                                                        learning_rate=LR)}),
                             ("reseeded", lambda t: {**t, "key": jax.random.key(SEED_KEY + 1)})):
            restored = manager.restore_latest()
            save_result(directory, f"loop_{name}", *run_loop(start=(change(restored.tree), restored.metadata)))
    else:
        raise SystemExit(f"unknown part {part!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
