"""Training interrupted and resumed in a new process equals the uninterrupted run, bit for bit (CPU).

Three paths, each in two processes (see resume_worker.py): ``fit`` checkpointed by
CheckpointCallback after epoch 2 of 4 and resumed with ``fit(resume=...)``; ``fit`` checkpointed
every 7 steps and killed right after step 7, in the middle of epoch 1, then resumed from there;
and a hand loop over ``make_train_step`` stopped after step 9 of 20, in the middle of an epoch,
and resumed from the data position stored in the checkpoint. The model has BatchNorm (layer state) and Dropout (keys),
the optimizer Adam (moments, counts) behind fit's non-finite guard. Negative controls show the
comparison can fail: resuming with a fresh optimizer state, or a re-seeded key, must differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from funcnet import checkpoint as ck

ROOT = Path(__file__).resolve().parents[1]
STOP_AT_STEP = 9  # of 20, with 6 steps an epoch: epoch 1, batch 3
CRASH_AT_STEP = 7  # of 20, with 5 steps an epoch: epoch 1, batch 2


def run_worker(*args: str, expected_code: int = 0) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "resume_worker.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == expected_code, done.stderr[-4000:]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resume")
    run_worker("first", str(directory), str(STOP_AT_STEP))
    run_worker("crash", str(directory), str(CRASH_AT_STEP), expected_code=17)
    run_worker("resume", str(directory))

    def load(name):
        restored = ck.restore(directory / name)
        leaves = jax.tree_util.tree_leaves(restored.tree["params"])
        return b"".join(np.asarray(leaf).tobytes() for leaf in leaves), restored.metadata["losses"]

    return directory, load


@pytest.mark.parametrize("path", ["fit", "crash", "loop"])
def test_resumed_training_is_bit_identical(results, path):
    _, load = results
    full_params, full_losses = load(f"{'fit' if path == 'crash' else path}_full")
    resumed_params, resumed_losses = load(f"{path}_resumed")
    assert len(full_losses) == (20 if path == "loop" else 4)
    assert resumed_losses == full_losses
    assert resumed_params == full_params


@pytest.mark.parametrize("control", ["fit_fresh_opt", "crash_restarted", "loop_fresh_opt", "loop_reseeded"])
def test_negative_controls_differ(results, control):
    _, load = results
    path = control.split("_")[0]
    full_params, full_losses = load(f"{'fit' if path == 'crash' else path}_full")
    params, losses = load(control)
    resumed_at = {"fit": 2, "crash": CRASH_AT_STEP // 5, "loop": STOP_AT_STEP}[path]
    assert losses[:resumed_at] == full_losses[:resumed_at]  # the same up to the restart ...
    assert losses[resumed_at:] != full_losses[resumed_at:]  # ... and different after it
    assert params != full_params


def test_checkpoints_hold_the_data_position_and_architecture(results):
    directory, _ = results
    fit_ckpt = ck.CheckpointManager(directory / "fit_ckpts")
    assert fit_ckpt.steps() == [10, 15, 20]  # after epochs 2 (first process), 3 and 4 (5 steps an epoch)
    first = fit_ckpt.restore(10)
    assert first.metadata["epoch"] == 2 and first.metadata["batch_index"] == 0 and first.metadata["step"] == 10
    assert first.tree.epoch == 2 and first.tree.step == 10
    assert len(first.metadata["history"]["loss"]) == 2
    assert first.model.kind == "Serial" and first.input_shape == (None, 8)
    crashed = ck.CheckpointManager(directory / "crash_ckpts").restore(CRASH_AT_STEP)
    assert (crashed.metadata["epoch"], crashed.metadata["batch_index"]) == (1, 2)
    assert (crashed.tree.epoch, crashed.tree.batch) == (1, 2) and len(crashed.metadata["history"]["loss"]) == 1
    loop_ckpt = ck.CheckpointManager(directory / "loop_ckpts").restore_latest()
    assert (loop_ckpt.metadata["step"], loop_ckpt.metadata["epoch"], loop_ckpt.metadata["batch_index"]) == (9, 1, 3)
