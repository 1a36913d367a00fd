"""Plotting a training history (matplotlib, an optional extra: ``pip install 'funcnet[plot]'``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_history"]


def _scalar_series(history: Mapping[str, Sequence[Any]]) -> list[str]:
    names = []
    for name, values in history.items():
        if name in ("epoch", "time", "examples_per_second") or name.startswith("val_") or not len(values):
            continue
        if all(np.ndim(v) == 0 and v is not None for v in values):
            names.append(name)
    return names


def plot_history(history: Mapping[str, Sequence[Any]], path: str | os.PathLike, *,
                 names: Sequence[str] | None = None) -> str:
    """Draws each quantity of a ``fit`` history per epoch, training and validation together, to a PNG.

    Args:
        history: ``FitResult.history``: ``{name: [value per epoch]}``, with ``"val_<name>"``
            entries for validation.
        path: the image file to write (PNG).
        names: the quantities to draw, one panel each (default: every scalar one: the loss,
            the metrics, the learning rate, skipped steps if any were).

    Returns:
        ``path``, as a string.

    Raises:
        ImportError: when matplotlib is not installed, with the command that installs it.
        ValueError: when a name is not in the history.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_history needs matplotlib: pip install 'funcnet[plot]' (or pip install matplotlib).") \
            from error
    if names is None:
        names = [n for n in _scalar_series(history) if n != "skipped" or any(history[n])]
    missing = [n for n in names if n not in history]
    if missing or not names:
        raise ValueError(f"nothing to plot for {missing or names}; the history has {sorted(history)}.")
    epochs = list(history.get("epoch", range(len(history[names[0]]))))
    x = [e + 1 for e in epochs]
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.plot(x, [float(v) for v in history[name]], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(x, [float(v) for v in history[f"val_{name}"]], marker="o", label="validation")
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png", dpi=100)
    plt.close(fig)
    return os.fspath(path)
