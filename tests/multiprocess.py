"""Runs a worker script in several processes on 127.0.0.1, the way a multi-host job runs, and collects their results.

Test side::

    results = run_workers(WORKER, "scenario", tmp_path, processes=2, devices=2, timeout=60)
    results[0]["loss"]            # what process 0 passed to report()

Worker side (a script under tests/)::

    from tests.multiprocess import start, report
    start()                       # XLA_FLAGS, CPU collectives, jax.distributed on the loopback address
    ...
    report({"loss": [...]})       # this process's JSON result

Every worker gets its own process group and dies with the test process (``PR_SET_PDEATHSIG``, set by
the worker itself) or
after its own deadline (``faulthandler``), whichever comes first; on a timeout, a failed worker or
any exception in the test, every worker's group is killed and waited for. No orphan is left, and
only the loopback address is ever used.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on the loopback address that is free now (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _kill(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for worker in workers:
        worker.wait()


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    kept = [line for line in text.splitlines() if not line.startswith("[Gloo]")]  # gloo's connection chatter
    return "\n".join(kept[-lines:])


def run_workers(script: Path, scenario: str, directory: Path, *, processes: int = 2, devices: int = 2,
                timeout: float = 60.0) -> list[dict]:
    """Runs ``script scenario directory`` in ``processes`` processes of ``devices`` CPU devices each.

    Returns:
        Each process's reported JSON result, in process order.

    Raises:
        AssertionError: a worker failed or the run passed ``timeout`` seconds, with each worker's output.
    """
    port = free_port()
    workers, logs = [], []
    for process_id in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "FUNCNET_TEST_COORDINATOR": f"{LOOPBACK}:{port}", "FUNCNET_TEST_PROCESSES": str(processes),
               "FUNCNET_TEST_PROCESS_ID": str(process_id), "FUNCNET_TEST_DEADLINE": str(timeout),
               "FUNCNET_TEST_PARENT": str(os.getpid()),
               "FUNCNET_TEST_RESULT": str(directory / f"result_{process_id}.json")}
        log = directory / f"worker_{process_id}.log"
        logs.append(log)
        with open(log, "wb") as out:
            workers.append(subprocess.Popen([sys.executable, str(script), scenario, str(directory)], cwd=ROOT, env=env,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        while any(w.poll() is None for w in workers):
            failed = [i for i, w in enumerate(workers) if w.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        _kill(workers)  # a no-op for workers that are done; everything else is stopped here
    codes = [w.returncode for w in workers]
    if any(code != 0 for code in codes):
        what = "timed out" if time.monotonic() > deadline else f"exit codes {codes}"
        report = "\n".join(f"--- worker {i} (exit {codes[i]}):\n{_tail(log)}" for i, log in enumerate(logs))
        raise AssertionError(f"multi-process run {scenario!r} failed ({what}, limit {timeout} s):\n{report}")
    return [json.loads((directory / f"result_{i}.json").read_text()) for i in range(processes)]


# --------------------------------------------------------------------------------------------
# Worker side


def _die_with_parent() -> None:
    """Asks Linux to kill this worker when the test process dies (checked once more, for a parent gone already)."""
    parent = int(os.environ["FUNCNET_TEST_PARENT"])
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def start() -> None:
    """In a worker: a hard deadline, then ``jax.distributed`` on the loopback address (more than one process)."""
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ["FUNCNET_TEST_DEADLINE"]) + 5, exit=True)
    _die_with_parent()
    import funcnet as fn

    processes = int(os.environ["FUNCNET_TEST_PROCESSES"])
    if processes > 1:
        fn.distributed.initialize(os.environ["FUNCNET_TEST_COORDINATOR"], processes,
                                  int(os.environ["FUNCNET_TEST_PROCESS_ID"]))


def report(result: dict) -> None:
    """In a worker: writes this process's JSON result where the test reads it."""
    Path(os.environ["FUNCNET_TEST_RESULT"]).write_text(json.dumps(result))
