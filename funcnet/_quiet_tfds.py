"""TFDS's preparation, reported by funcnet in one line and one progress bar.

Left alone, TFDS prints "Downloading and preparing dataset Unknown size ..." (even when it reads
local files), about a hundred lines of overlapping download, extraction, generation and
shuffling bars, and absl warnings. :func:`quiet_preparation` silences all of it for the duration
of one preparation and shows funcnet's own line and a single bar counting the examples written.

The bar relies on one TFDS detail: the split builder wraps each split's example generator in
``tensorflow_datasets.core.utils.tqdm(..., desc="Generating <split> examples...")``, looked up at
call time. Should a TFDS version stop doing so, preparation still works, silently, without a bar.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any, Self, TextIO

__all__ = ["quiet_preparation", "quiet_tfds_logs"]


@contextlib.contextmanager
def quiet_tfds_logs() -> Iterator[None]:
    """absl's warnings (through Python's ``logging``) below ERROR are dropped meanwhile.

    Also a decorator: ``funcnet.data``'s public functions use it, since TFDS warns, for example,
    of a data set folder that a preparation is about to fill.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _ExampleCounter:
    """Stands in for TFDS's per-split bars: iterating it advances funcnet's one bar."""

    def __init__(self, bar: Any, iterable: Any = None, *args: Any, desc: str = "", **kwargs: Any) -> None:
        del args, kwargs
        self._bar, self._iterable = bar, iterable
        self._counts = desc.startswith("Generating ") and desc.endswith(" examples...")

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            if self._counts:
                self._bar.update(1)
            yield item

    def __getattr__(self, name: str) -> Any:  # update(), close(), set_postfix(), ...: nothing to show
        return lambda *args, **kwargs: None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


@contextlib.contextmanager
def quiet_preparation(tfds: Any, line: str, *, stream: TextIO | None = None) -> Iterator[None]:
    """Prints ``line``, then shows one bar of examples written while TFDS prepares a data set.

    Args:
        tfds: the imported ``tensorflow_datasets`` module.
        line: funcnet's one line about what is happening.
        stream: where the line and the bar go (``sys.stderr`` by default).
    """
    from tqdm import auto as tqdm_auto

    stream = sys.stderr if stream is None else stream
    print(line, file=stream, flush=True)
    utils = tfds.core.utils
    tqdm_utils = sys.modules.get("tensorflow_datasets.core.utils.tqdm_utils")
    was_active = getattr(tqdm_utils, "_active", True)
    original_tqdm = utils.tqdm
    interactive = getattr(stream, "isatty", lambda: False)()
    bar = tqdm_auto.tqdm(desc="  examples written", unit=" examples", file=stream,
                         mininterval=0.5 if interactive else 15)  # a log file gets a line every 15 s, not 2 a second
    tfds.display_progress_bar(False)  # download and extraction bars

    def counting_tqdm(*args: Any, **kwargs: Any) -> _ExampleCounter:
        return _ExampleCounter(bar, *args, **kwargs)

    utils.tqdm = counting_tqdm
    try:
        with quiet_tfds_logs(), contextlib.redirect_stdout(io.StringIO()):  # TFDS prints its banners
            yield
    finally:
        utils.tqdm = original_tqdm
        tfds.display_progress_bar(was_active)
        bar.close()
