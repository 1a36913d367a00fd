"""One epoch of ``fit``: a driver per execution mode, and the pauses between its compiled calls.

An epoch runs its batches from row ``start`` (0, or where a resumed run stopped) to the last. A
*driver* runs them in compiled calls, one driver per mode:

* :class:`DeviceSteps` (``mode="step"``, data on the device): one dispatched step per call;
* :class:`DeviceScan` (``mode="scan"``): up to ``chunk`` steps per call in one compiled loop (the
  step count is an argument of the loop, so calls of any length share one compilation);
* :class:`HostSteps` (data kept on the host): one step per call on a batch copied ahead.

:func:`make_driver` picks the driver of an epoch; :func:`pauses` runs it over the epoch and
yields a :class:`Pause` where ``fit`` has something to do: after a *stop* row (a callback asked
for the training state every ``every_steps`` steps), when the progress bar or the non-finite
check should fetch the running logs, and once at the end of the epoch. ``fit`` reacts to each
pause in its own loop: nothing is called back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from funcnet.core import Key
from funcnet.training.batching import host_batches
from funcnet.training.loops import Carry, TrainLoop
from funcnet.training.progress import REFRESH_SECONDS

__all__ = ["DeviceScan", "DeviceSteps", "HostSteps", "Pause", "make_driver", "pauses", "progress_chunk", "stop_rows"]


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


@dataclasses.dataclass(frozen=True)
class DeviceSteps:
    """``mode="step"``: one dispatched step per batch, gathered on the device from ``order``.

    ``step`` is ``TrainLoop.step_on_device()``; steps dispatch asynchronously, so pauses to
    fetch the logs come at most every half second.
    """

    step: Callable
    data: tuple
    order: Any
    step_root: Key
    chunk: ClassVar[int] = 1
    refresh_every_call: ClassVar[bool] = False

    def advance(self, carry: Carry, count: int) -> Carry:
        """Runs the next ``count`` steps."""
        for _ in range(count):
            carry = self.step(carry, self.data, self.order, self.step_root)
        return carry


@dataclasses.dataclass(frozen=True)
class DeviceScan:
    """``mode="scan"``: up to ``chunk`` steps per call of ``TrainLoop.scan_on_device()``; the
    logs are fetched after every call when a progress bar is shown."""

    scan: Callable
    data: tuple
    order: Any
    step_root: Key
    chunk: int
    refresh_every_call: ClassVar[bool] = True

    def advance(self, carry: Carry, count: int) -> Carry:
        """Runs the next ``count`` steps in one compiled call."""
        return self.scan(carry, self.data, self.order, self.step_root, count)


@dataclasses.dataclass(frozen=True)
class HostSteps:
    """Data on the host: one step of ``TrainLoop.step_on_host()`` per batch of ``batches`` (an
    iterator whose copies to the device run ahead)."""

    step: Callable
    batches: Iterator[tuple]
    step_root: Key
    chunk: ClassVar[int] = 1
    refresh_every_call: ClassVar[bool] = False

    def advance(self, carry: Carry, count: int) -> Carry:
        """Runs the next ``count`` steps."""
        for _ in range(count):
            carry = self.step(carry, next(self.batches), self.step_root)
        return carry


Driver = DeviceSteps | DeviceScan | HostSteps


def make_driver(mode: str, loop: TrainLoop, data: tuple, order: Any, step_root: Key, *, on_device: bool,
                chunk: int, start: int) -> Driver:
    """The driver of one epoch in ``mode`` (``"step"`` or ``"scan"``) over its batch ``order``.

    ``data`` is ``(x, y, sample_weight)``, on the device when ``on_device`` (else batches are cut
    on the host from row ``start``); ``chunk`` is the scan's steps per call.
    """
    if not on_device:
        batches = host_batches(data, np.asarray(order), loop.batches.n, loop.batches.masked, start,
                               layout=loop.layout)
        return HostSteps(loop.step_on_host(), batches, step_root)
    if mode == "step":
        return DeviceSteps(loop.step_on_device(), data, order, step_root)
    return DeviceScan(loop.scan_on_device(), data, order, step_root, chunk)


class Pause(NamedTuple):
    """Where :func:`pauses` hands control back to ``fit``.

    Attributes:
        carry: the training carry after ``row`` batches of the epoch.
        row: batches of the epoch done.
        stop: a callback asked for the training state after this row.
        refresh: time to fetch the running logs (progress bar, non-finite check).
        end: the epoch is done (the last pause).
    """

    carry: Carry
    row: int
    stop: bool
    refresh: bool
    end: bool


def pauses(driver: Driver, carry: Carry, *, start: int, steps: int, stops: list[int],
           refresh: bool) -> Iterator[Pause]:
    """Runs rows ``start..steps-1`` in calls of at most ``driver.chunk`` steps (aligned to
    multiples of it, and ending at each row of ``stops``), yielding a :class:`Pause` after each
    stop row, after calls due for a refresh (with ``refresh``: every call, or every half second,
    as the driver says) and at the end.
    """
    pending = iter(stops)
    next_stop = next(pending, steps)
    row, last = start, time.perf_counter()
    while row < steps:
        end = min(next_stop, (row // driver.chunk + 1) * driver.chunk, steps)
        carry = driver.advance(carry, end - row)
        row = end
        stop = row == next_stop and row < steps
        if stop:
            next_stop = next(pending, steps)
        due = refresh and row < steps and (driver.refresh_every_call or time.perf_counter() - last > REFRESH_SECONDS)
        if stop or due:
            yield Pause(carry, row, stop, due, False)
        if due:
            last = time.perf_counter()
    yield Pause(carry, row, False, False, True)
