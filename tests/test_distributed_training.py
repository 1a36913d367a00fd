"""Data-parallel training over 2 processes x 2 CPU devices (127.0.0.1): the same results as one process with
4 devices and as one device, and an exact resume from a checkpoint written by both processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import distributed_worker as cases
from tests.multiprocess import run_workers

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    two = tmp_path_factory.mktemp("two_processes")
    four = tmp_path_factory.mktemp("four_devices")
    return (two, run_workers(WORKER, "training", two, processes=2, devices=2, timeout=120),
            run_workers(WORKER, "training", four, processes=1, devices=4, timeout=120)[0])


@pytest.fixture(scope="module")
def one_device():
    full, losses = cases.train(cases.initial_state(), cases.STEPS, cases.make_step(None), None)
    return {"losses": losses, "final": cases.host_values(full)}


def _close(a: dict, b: dict, rtol: float) -> None:
    assert sorted(a) == sorted(b)
    for path, value in a.items():
        np.testing.assert_allclose(np.array(value), np.array(b[path]), rtol=rtol, atol=1e-6, err_msg=path)


def test_two_processes_agree_with_four_devices_and_with_one(runs, one_device):
    _, (first, second), four = runs
    assert first["losses"] == second["losses"] and first["final"] == second["final"]
    for reference in (four, one_device):
        # float32 reassociation only: a wrong gradient scale or a per-device update would be far off.
        np.testing.assert_allclose(first["losses"], reference["losses"], rtol=2e-5)
        _close(first["final"], reference["final"], rtol=2e-4)
    assert first["losses"][-1] < first["losses"][0]


def test_resume_from_the_two_process_checkpoint_is_bit_identical(runs):
    _, results, _ = runs
    for result in results:
        assert result["resumed_losses"] == result["losses"]
        assert result["resumed_final"] == result["final"]  # params, layer state, optimizer state, key, step
        assert result["restored_step"] == cases.RESUME_AT
        assert result["metadata"] == {"epoch": 2, "batch_index": 2, "step": cases.RESUME_AT}
        assert result["restored_w_sharding"] == "P(None, 'data')"  # FSDP: w (6, 16) split along its 16
        assert result["steps"] == [cases.RESUME_AT]


def test_progress_and_the_commit_happen_once(runs):
    directory, (first, second), _ = runs
    assert first["published"] == ["step_000000010"] and second["published"] == []
    logs = [(directory / f"worker_{i}.log").read_text() for i in range(2)]
    assert logs[0].count("step 20: loss") == 2 and "loss" not in logs[1]


def test_fit_evaluate_and_predict_with_a_mesh_refuse_several_processes(runs):
    _, (first, second), _ = runs
    for result in (first, second):
        assert len(result["refused"]) == 3
        for caller, message in zip(("fit", "evaluate", "predict"), result["refused"], strict=True):
            assert message.startswith(f"{caller}(mesh=...) runs in one process (any number of its devices); this run "
                                      "has 2 processes. Across processes, loop over make_train_step(..., mesh=mesh)")
