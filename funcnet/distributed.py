"""Several processes (hosts) in one run: starting ``jax.distributed`` and doing things once.

::

    import funcnet as fn

    fn.distributed.initialize()            # on a SLURM / Kubernetes / Cloud TPU cluster: detected
    fn.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # anywhere else
    mesh = jax.make_mesh((jax.device_count(),), ("data",))   # every device of every process
    if fn.distributed.is_primary():
        print("only once")
    fn.distributed.barrier("after-setup")

Call :func:`initialize` first thing in every process, before any other JAX call: afterwards
``jax.devices()`` lists the devices of all processes and ``jax.local_devices()`` this one's.
Each process then runs the same program on its own part of the data (see
``fn.sharding.shard_batch``); checkpoints are written by all of them together and committed once
(:mod:`funcnet.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.experimental import multihost_utils

__all__ = ["barrier", "initialize", "is_primary"]

_CPU_COLLECTIVES = ("gloo", "mpi")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``).

    With all three of ``coordinator_address``, ``num_processes`` and ``process_id`` left as None,
    JAX reads them from the cluster (SLURM, Kubernetes JobSet / indexed Job, Cloud TPU, MPI).
    Otherwise give all three; every process passes the same address and count and its own id.

    Args:
        coordinator_address: ``"host:port"`` where process 0 listens and the others connect
            (process 0's address, reachable from every process).
        num_processes: how many processes take part.
        process_id: this process's number, ``0 <= process_id < num_processes``; process 0 is the
            coordinator and the one that prints and commits checkpoints.
        local_device_ids: restricts this process to these local devices (e.g. one GPU per process).
        cpu_collectives: the CPU backend's cross-process collectives (``"gloo"`` or ``"mpi"``), so
            that a run on CPUs (tests, a laptop) computes across processes; None leaves JAX's
            setting. Only set when the CPU backend may be used (``JAX_PLATFORMS`` unset or naming cpu).

    Raises:
        ValueError: naming the argument, for a malformed address, count or id, or only some of the
            three given.
        RuntimeError: from JAX, when called twice or after JAX has already computed something.
    """
    given = [name for name, value in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                                      ("process_id", process_id)) if value is not None]
    if given and len(given) < 3:
        missing = sorted({"coordinator_address", "num_processes", "process_id"} - set(given))
        raise ValueError(f"distributed.initialize: got {', '.join(given)} but not {', '.join(missing)}; give all "
                         "three, or none to let JAX detect the cluster (SLURM, Kubernetes, Cloud TPU).")
    if given:
        _check_arguments(coordinator_address, num_processes, process_id)
    if cpu_collectives is not None:
        if cpu_collectives not in _CPU_COLLECTIVES:
            raise ValueError(f"distributed.initialize: cpu_collectives must be one of {list(_CPU_COLLECTIVES)} or "
                             f"None, got {cpu_collectives!r}.")
        platforms = jax.config.jax_platforms
        if not platforms or "cpu" in platforms.split(","):
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids=local_device_ids)


def _check_arguments(coordinator_address: object, num_processes: object, process_id: object) -> None:
    host, _, port = coordinator_address.rpartition(":") if isinstance(coordinator_address, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"distributed.initialize: coordinator_address must be 'host:port' (process 0's address and "
                         f"a free port), got {coordinator_address!r}.")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"distributed.initialize: num_processes must be a positive integer, got {num_processes!r}.")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"distributed.initialize: process_id must be an integer in [0, {num_processes}), got "
                         f"{process_id!r}.")


def is_primary() -> bool:
    """Whether this is process 0: the one that prints progress and commits checkpoints."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier ``name`` (the same name in all of them).

    A no-op in a single-process run. Wraps ``jax.experimental.multihost_utils.sync_global_devices``.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
