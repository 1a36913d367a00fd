"""funcnet.distributed: two processes on 127.0.0.1 with two CPU devices each, and the argument checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import funcnet as fn
from tests.multiprocess import run_workers

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_two_processes_see_four_devices_and_sum_each_others_rows(tmp_path):
    results = run_workers(WORKER, "basics", tmp_path, processes=2, devices=2, timeout=60)
    assert [r["process_index"] for r in results] == [0, 1]
    assert [r["primary"] for r in results] == [True, False]
    for r in results:
        assert (r["process_count"], r["devices"], r["local_devices"]) == (2, 4, 2)
        assert r["global_shape"] == [4, 2]
        # Process 0 holds rows 0..3, process 1 rows 10..13: the global sum needs both.
        assert r["total"] == sum(range(4)) + sum(range(10, 14))


def _running_with(text: str) -> list[int]:
    """Process ids whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_failing_worker_stops_the_others_at_once_and_leaves_no_process(tmp_path):
    """Process 1 dies; process 0, blocked in a barrier for it, is killed at once, not after the timeout."""
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"multi-process run 'one_dies' failed \(exit codes \[-9, 1\]") as info:
        run_workers(WORKER, "one_dies", tmp_path, processes=2, devices=1, timeout=60)
    assert time.monotonic() - started < 40
    assert "process 1 fails on purpose" in str(info.value)
    assert _running_with(str(tmp_path)) == []


@pytest.mark.parametrize(("args", "message"), [
    (("127.0.0.1:1234", 2, None), r"got coordinator_address, num_processes but not process_id; give all three"),
    (("127.0.0.1", 2, 0), r"coordinator_address must be 'host:port'.*got '127.0.0.1'"),
    (("127.0.0.1:1234", 0, 0), r"num_processes must be a positive integer, got 0"),
    (("127.0.0.1:1234", 2, 2), r"process_id must be an integer in \[0, 2\), got 2"),
])
def test_initialize_names_the_bad_argument(args, message):
    with pytest.raises(ValueError, match=message):
        fn.distributed.initialize(*args)


def test_initialize_refuses_unknown_cpu_collectives():
    with pytest.raises(ValueError, match=r"cpu_collectives must be one of \['gloo', 'mpi'\] or None, got 'nccl'"):
        fn.distributed.initialize("127.0.0.1:1234", 1, 0, cpu_collectives="nccl")


def test_single_process_helpers():
    assert fn.distributed.is_primary()
    fn.distributed.barrier("nothing to wait for")  # one process: returns at once
