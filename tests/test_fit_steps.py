"""Callbacks every N steps, stopping in the middle of an epoch, and resuming from there."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint as ck
from funcnet.training import Callback, TrainState, fit
from funcnet.training.epoch import pauses, stop_rows
from tests.test_fit import LOSS, compilations, init, leaves, mlp, teacher_data

N, BATCH = 100, 16  # 7 batches an epoch, the last one padded
MODES = [{"mode": "step"}, {"mode": "scan"}, {"mode": "scan", "steps_per_call": 3}, {"data_on_device": False}]


class Recorder(Callback):
    """Records every mid-epoch call (host copies); stops at ``stop_at`` steps."""

    def __init__(self, every_steps, stop_at=None):
        self.every_steps, self.stop_at = every_steps, stop_at
        self.calls: list[TrainState] = []

    def on_step_end(self, step, train_state):
        self.calls.append(jax.device_get(train_state))
        return step == self.stop_at


def run(callbacks=(), epochs=3, resume=None, **kwargs):
    x, y = teacher_data(n=N)
    model = mlp(dropout=0.2)
    params, state = (None, None) if resume else init(model)
    return fit(model, params, state, x, y, loss=LOSS, epochs=epochs, batch_size=BATCH, metrics=["accuracy"],
               key=None if resume else jax.random.key(1), callbacks=list(callbacks), resume=resume, verbose=0,
               **kwargs)


def test_stop_rows_match_a_brute_force_count():
    for first_step, start, steps, intervals in [(0, 0, 7, [3]), (7, 0, 7, [3, 5]), (9, 2, 7, [4]), (0, 0, 7, [7]),
                                                (5, 5, 7, [1]), (0, 0, 1, [1])]:
        expected = []
        done = first_step
        for row in range(start + 1, steps + 1):
            done += 1
            if row < steps and any(done % k == 0 for k in intervals):
                expected.append(row)
        assert stop_rows(first_step, start, steps, intervals) == expected


class CountingDriver:
    """A driver whose carry is the row reached; records the length of each call."""

    def __init__(self, chunk, refresh_every_call):
        self.chunk, self.refresh_every_call, self.calls = chunk, refresh_every_call, []

    def advance(self, carry, count):
        self.calls.append(count)
        return carry + count


def test_pauses_cut_calls_at_stops_and_chunks_and_end_once():
    driver = CountingDriver(chunk=4, refresh_every_call=True)
    seen = [(p.carry, p.row, p.stop, p.refresh, p.end)
            for p in pauses(driver, 2, start=2, steps=11, stops=[3, 9], refresh=True)]
    # Calls end at the stops (3, 9) and at multiples of the chunk (4, 8); the carry follows the rows.
    assert driver.calls == [1, 1, 4, 1, 2]
    assert seen == [(3, 3, True, True, False), (4, 4, False, True, False), (8, 8, False, True, False),
                    (9, 9, True, True, False), (11, 11, False, False, True)]
    # Without refreshes, only the stops and the end pause; a consumer that stops early runs no more steps.
    driver = CountingDriver(chunk=1, refresh_every_call=False)
    for pause in pauses(driver, 0, start=0, steps=6, stops=[2, 4], refresh=False):
        assert pause.stop and not pause.refresh
        if pause.row == 4:
            break
    assert sum(driver.calls) == 4


@pytest.mark.parametrize("options", MODES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_step_callbacks_see_the_exact_mid_epoch_state(options, caplog):
    recorder = Recorder(every_steps=3)
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        whole = run([recorder], **options)
    # Steps 3, 6, 9, ... of 21, except those that end an epoch (7 steps each: 21); batch = step % 7.
    assert [t.step for t in recorder.calls] == [3, 6, 9, 12, 15, 18]
    assert [(t.epoch, t.batch) for t in recorder.calls] == [(0, 3), (0, 6), (1, 2), (1, 5), (2, 1), (2, 4)]
    if options.get("mode") == "scan":  # pauses split the compiled loop without recompiling it
        assert compilations(caplog, "train_steps_scan") == 1
    # Each mid-epoch state equals the state of a run stopped right there.
    for seen in recorder.calls[1:3]:
        stopped = run([Recorder(every_steps=seen.step, stop_at=seen.step)], **options)
        assert stopped.history.get("epoch", []) == list(range(seen.epoch))
        for a, b in zip(leaves(stopped.params), leaves(seen.params), strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(whole.history["loss"]) == 3


@pytest.mark.parametrize("options", MODES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_resume_from_the_middle_of_an_epoch_is_exact(options):
    whole = run(**options)
    recorder = Recorder(every_steps=9, stop_at=9)  # epoch 1, batch 2
    first = run([recorder], **options)
    mid = recorder.calls[-1]
    assert (mid.step, mid.epoch, mid.batch) == (9, 1, 2) and first.history["epoch"] == [0]
    resumed = run(resume=mid, **options)
    assert resumed.history["epoch"] == [1, 2]
    for a, b in zip(leaves((resumed.params, resumed.opt_state)), leaves((whole.params, whole.opt_state)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # The resumed epoch's loss and accuracy count the batches before the interruption too.
    for name in ("loss", "accuracy"):
        np.testing.assert_array_equal(first.history[name] + resumed.history[name], whole.history[name])
    # Negative controls: without the running sums the epoch's logs differ; from the epoch's start
    # the parameters differ.
    zeroed = mid._replace(epoch_metrics=jax.tree.map(jnp.zeros_like, mid.epoch_metrics))
    assert run(resume=zeroed, **options).history["loss"][0] != whole.history["loss"][1]
    restarted = run(resume=mid._replace(batch=0, epoch_metrics=None), **options)
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(restarted.params), leaves(whole.params), strict=True))


def test_checkpoint_callback_every_steps_resumes_mid_epoch(tmp_path):
    whole = run()
    saver = ck.CheckpointCallback(tmp_path, every_steps=5, every_epochs=None, max_to_keep=None)
    run([saver, Recorder(every_steps=12, stop_at=12)])
    # Saved every 5 steps (5, 10) and where training stopped (12, epoch 1 batch 5).
    assert saver.manager.steps() == [5, 10, 12]
    latest = saver.manager.restore(12)
    assert (latest.metadata["epoch"], latest.metadata["batch_index"]) == (1, 5)
    again = ck.CheckpointCallback(tmp_path, every_steps=5, every_epochs=None, max_to_keep=None)
    restored = again.restore_latest()
    assert (restored.step, restored.epoch, restored.batch) == (12, 1, 5)
    resumed = run([again], resume=restored)
    assert again.manager.steps() == [5, 10, 12, 15, 20, 21]  # 21: the end of training
    for a, b in zip(leaves(resumed.params), leaves(whole.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.history["loss"], whole.history["loss"])


def test_mid_epoch_resume_and_step_callback_errors():
    recorder = Recorder(every_steps=9, stop_at=9)
    run([recorder])
    mid = recorder.calls[-1]
    x, y = teacher_data(n=N)
    with pytest.raises(ValueError, match=r"stopped after batch 2 of an epoch, but this fit has 2 batches an epoch; "
                                         r"resume with the data and batch_size"):
        fit(mlp(dropout=0.2), None, None, x, y, loss=LOSS, batch_size=64, resume=mid, verbose=0)
    with pytest.raises(ValueError, match=r"running sums for \['accuracy', 'bad_run', 'loss', 'skipped'\], but this "
                                         r"fit tracks \['bad_run', 'loss', 'skipped'\]; resume with the loss and "
                                         r"metrics"):
        fit(mlp(dropout=0.2), None, None, x, y, loss=LOSS, batch_size=BATCH, resume=mid, verbose=0)
    with pytest.raises(ValueError, match=r"Recorder: `every_steps` must be a positive integer or None, got 0"):
        run([Recorder(every_steps=0)])
    with pytest.raises(ValueError, match=r"CheckpointCallback: `every_steps` must be a positive integer or None, "
                                         r"got -1"):
        ck.CheckpointCallback("unused", every_steps=-1)
    with pytest.raises(ValueError, match=r"pass `every_epochs`, `every_steps` or both"):
        ck.CheckpointCallback("unused", every_epochs=None)
