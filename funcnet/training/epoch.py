"""One epoch of ``fit``: compiled calls between pauses.

An epoch runs its batches from row ``start`` (0, or where a resumed run stopped) to the last. It
pauses at *stops*, rows after which a callback asked for the training state (every
``every_steps`` optimisation steps), and, where the progress bar needs it, to fetch the running
logs. In ``"step"`` mode every call is one step, so a pause costs nothing more than the callback;
in ``"scan"`` mode a call runs every step up to the next pause (the step count is an argument of
the compiled loop, so calls of any length share one compilation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from funcnet.core import Key
from funcnet.training.loops import Carry
from funcnet.training.progress import REFRESH_SECONDS

__all__ = ["Advance", "device_scan", "device_steps", "host_steps", "progress_chunk", "run_epoch", "stop_rows"]

#: ``(carry, count) -> carry``: runs the next ``count`` steps of the epoch.
Advance = Callable[[Carry, int], Carry]


def stop_rows(first_step: int, start: int, steps: int, intervals: Sequence[int]) -> list[int]:
    """The rows ``r`` in ``(start, steps)`` after which ``first_step - start + r`` (the steps done
    since the start of training) is a multiple of one of ``intervals``."""
    if not intervals:
        return []
    base = first_step - start
    return [r for r in range(start + 1, steps) if any((base + r) % k == 0 for k in intervals)]


def progress_chunk(steps: int) -> int:
    """Steps per scan call when a progress bar is shown: about a tenth of the epoch."""
    return max(1, -(-steps // 10))


def device_steps(run: Callable, data: tuple, order: Any, step_root: Key) -> Advance:
    """One dispatched step per batch, gathered on the device."""

    def advance(carry: Carry, count: int) -> Carry:
        for _ in range(count):
            carry = run(carry, data, order, step_root)
        return carry

    return advance


def device_scan(run: Callable, data: tuple, order: Any, step_root: Key) -> Advance:
    """``count`` steps in one compiled loop."""
    return lambda carry, count: run(carry, data, order, step_root, count)


def host_steps(run: Callable, batches: Iterator[tuple], step_root: Key) -> Advance:
    """One dispatched step per batch copied from the host (the copies run ahead)."""

    def advance(carry: Carry, count: int) -> Carry:
        for _ in range(count):
            carry = run(carry, next(batches), step_root)
        return carry

    return advance


def run_epoch(advance: Advance, carry: Carry, *, start: int, steps: int, chunk: int, stops: list[int],
              on_stop: Callable[[Carry], bool], refresh: Callable[[Carry, int], None] | None,
              refresh_every_call: bool) -> tuple[Carry, bool]:
    """Runs rows ``start..steps-1`` in calls of at most ``chunk`` steps (aligned to multiples of
    ``chunk``), pausing after each row in ``stops`` for ``on_stop(carry)``.

    ``refresh(carry, row)`` updates the progress bar between calls: after every call when
    ``refresh_every_call`` (scan chunks), else at most every half second (steps dispatch
    asynchronously; a refresh waits for the device).

    Returns:
        ``(carry, stopped)``: stopped is True when ``on_stop`` asked to end training.
    """
    pending = iter(stops)
    next_stop = next(pending, steps)
    row, last = start, time.perf_counter()
    while row < steps:
        end = min(next_stop, (row // chunk + 1) * chunk, steps)
        carry = advance(carry, end - row)
        row = end
        if row == next_stop and row < steps:
            next_stop = next(pending, steps)
            if on_stop(carry):
                return carry, True
        if refresh is not None and row < steps and (refresh_every_call
                                                   or time.perf_counter() - last > REFRESH_SECONDS):
            refresh(carry, row)
            last = time.perf_counter()
    return carry, False
