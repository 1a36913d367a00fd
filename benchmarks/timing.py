"""Measuring on a shared, noisy machine: interleaved rounds, medians, and the machine's state.

Every contender runs one block of steps per round, in an order that rotates from round to round,
so that a burst of load from elsewhere hits all of them alike; a contender's rate is the median
over rounds, and a ratio between two contenders is the median of their per-round ratios (each
taken from two blocks run seconds apart).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def rounds(blocks: dict[str, Callable[[], float]], repeats: int,
           on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Runs each block once per round for ``repeats`` rounds, rotating the order.

    Args:
        blocks: name -> function that runs one block and returns its rate (higher is faster).
        repeats: rounds.
        on_round: called with the round's index after each round (progress output).

    Returns:
        name -> the rates, one per round, in round order.
    """
    names = list(blocks)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(blocks[name]())
        if on_round is not None:
            on_round(r)
    return rates


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of per-round ratios ``numerator[r] / denominator[r]``."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True) if b > 0])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class CompileCounter:
    """Counts XLA compilations (JAX's backend-compile events) while it is active."""

    def __init__(self) -> None:
        self.count = 0
        self.active = False
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    @contextlib.contextmanager
    def watching(self) -> Iterator[CompileCounter]:
        self.active = True
        try:
            yield self
        finally:
            self.active = False


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the results were measured on: CPU, cores, memory, load, library versions."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cores": os.cpu_count(), "load_average_at_start": load_average()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            total = next(line for line in f if line.startswith("MemTotal"))
        info["memory_gib"] = round(int(total.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("jax", "jaxlib", "optax", "funcnet", "flax", "equinox", "dm-haiku", "torch",
                    "tensorflow", "tensorflow-cpu", "keras"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    info["versions"] = versions
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info
