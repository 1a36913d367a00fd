"""The mesh switch on 2 and 4 forced CPU devices equals one device (issue 14): see many_devices_worker.py.

Each device count runs in its own process, since ``XLA_FLAGS`` must be set before JAX starts;
this process keeps its one device and runs the same checks inline on a mesh of one device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import many_devices_worker as worker

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("devices", [2, 4])
def test_mesh_runs_equal_one_device(devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE") and k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "many_devices_worker.py"), str(devices)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.split().count("ok") == len(worker.CHECKS)


@pytest.mark.parametrize("check", sorted(worker.CHECKS))
def test_mesh_of_one_device(check):
    worker.CHECKS[check]()
