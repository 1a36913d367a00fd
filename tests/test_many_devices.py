"""The mesh switch on 2 and 4 forced CPU devices equals one device (issue 14): see many_devices_worker.py.

Each device count runs in its own process, since ``XLA_FLAGS`` must be set before JAX starts: 4
devices run every check, 2 devices the equality checks; this process keeps its one device and runs
the equality checks inline on a mesh of one device, and the check that the tolerance catches a
wrong data-parallel step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import many_devices_worker as worker

ROOT = Path(__file__).resolve().parents[1]
EQUALITY = ["train_step_matches_one_device", "fsdp_shards_params_and_matches",
            "fit_matches_one_device_in_scan_and_host_modes"]


@pytest.mark.parametrize(("devices", "checks"), [(2, EQUALITY), (4, sorted(worker.CHECKS))])
def test_mesh_runs_equal_one_device(devices, checks):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE") and k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "many_devices_worker.py"), str(devices), *checks],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ok ")] == checks


@pytest.mark.parametrize("check", ["train_step_matches_one_device", "wrong_versions_break_the_tolerance"])
def test_mesh_of_one_device(check):
    worker.CHECKS[check]()
