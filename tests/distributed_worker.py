"""Scenarios run by tests/test_distributed*.py in several processes (see tests/multiprocess.py).

``python tests/distributed_worker.py <scenario> <directory>``, with the environment set by
``multiprocess.run_workers``. Each scenario reports a JSON result per process.
"""

from __future__ import annotations

import os
import sys
import traceback

from tests.multiprocess import report, start

start()  # before anything else touches JAX

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import funcnet as fn


def basics(directory: str) -> dict:
    """Who is who, a barrier, and a sum over rows that each process holds its own part of."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = np.arange(4, dtype=np.float32).reshape(2, 2) + 10 * jax.process_index()  # this process's 2 rows
    batch = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows)
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(batch)
    fn.distributed.barrier("basics")
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "primary": fn.distributed.is_primary(), "devices": jax.device_count(),
            "local_devices": jax.local_device_count(), "global_shape": list(batch.shape),
            "total": float(total.addressable_data(0))}


def one_dies(directory: str) -> dict:
    """Process 1 fails before a barrier; process 0 would wait there for it (until the harness kills it)."""
    if jax.process_index() == 1:
        raise SystemExit("process 1 fails on purpose")
    fn.distributed.barrier("never reached by process 1")
    return {}


SCENARIOS = {"basics": basics, "one_dies": one_dies}

if __name__ == "__main__":
    scenario, directory = sys.argv[1], sys.argv[2]
    try:
        result = SCENARIOS[scenario](directory)
    except BaseException:  # noqa: BLE001 (any failure: report it and exit like a crash)
        # Exit now, as a crash would: a normal exit waits in jax.distributed's shutdown for the peers.
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    report(result)
