"""The progress display of ``fit``: a tqdm bar per epoch, or one line per epoch, or nothing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

__all__ = ["REFRESH_SECONDS", "Progress", "format_logs"]

#: Seconds between refreshes of the bar's numbers (each refresh waits for the device).
REFRESH_SECONDS = 0.5


def format_logs(logs: Mapping[str, Any], skip: tuple[str, ...] = ("epoch", "time")) -> dict[str, str]:
    """The scalar logs as short strings, for the bar's postfix and the per-epoch line."""
    shown = {}
    for name, value in logs.items():
        if name in skip or (hasattr(value, "shape") and value.shape != ()):
            continue
        if name == "skipped" and not value:
            continue
        if name == "examples_per_second":
            shown["ex/s"] = f"{float(value):,.0f}"
        elif isinstance(value, int):
            shown[name] = str(value)
        else:
            shown[name] = f"{float(value):.4g}"
    return shown


class Progress:
    """Shows training progress: ``verbose`` 0 shows nothing, 1 a bar per epoch, 2 a line per epoch."""

    def __init__(self, verbose: int, epochs: int, steps: int, batch_size: int):
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0 (silent), 1 (a progress bar) or 2 (a line per epoch), "
                             f"got {verbose!r}.")
        self.verbose, self.epochs, self.steps, self.batch_size = verbose, epochs, steps, batch_size
        self.bar: tqdm | None = None
        self.shown = 0
        self.start = self.last = 0.0

    @property
    def live(self) -> bool:
        """Whether intermediate refreshes are wanted (only the bar shows them)."""
        return self.verbose == 1

    def due(self) -> bool:
        """Whether it is time to refresh the bar (cheap: a clock read)."""
        return self.verbose == 1 and time.perf_counter() - self.last > REFRESH_SECONDS

    def begin_epoch(self, epoch: int) -> None:
        self.start = self.last = time.perf_counter()
        self.shown = 0
        if self.verbose == 1:
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="step", leave=True,
                            dynamic_ncols=True, mininterval=REFRESH_SECONDS)

    def update(self, done: int, logs: Mapping[str, Any] | None = None) -> None:
        """``done`` steps of this epoch are finished; ``logs`` are the running means."""
        self.last = time.perf_counter()
        if self.bar is None:
            return
        if logs is not None:
            elapsed = max(self.last - self.start, 1e-9)
            shown = format_logs({"examples_per_second": done * self.batch_size / elapsed, **logs})
            self.bar.set_postfix(shown, refresh=False)
        self.bar.update(done - self.shown)
        self.shown = done

    def end_epoch(self, epoch: int, logs: Mapping[str, Any]) -> None:
        if self.verbose == 1 and self.bar is not None:
            self.update(self.steps, logs)
            self.bar.close()
            self.bar = None
        elif self.verbose == 2:
            parts = [f"{k} {v}" for k, v in format_logs(logs).items()]
            tqdm.write(f"Epoch {epoch + 1}/{self.epochs} - {float(logs.get('time', 0)):.2f}s - " + " - ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
