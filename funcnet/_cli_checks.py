"""Checks of the ``funcnet train`` paths, made before any data is loaded or any step trained.

Each check raises :class:`CommandError` with one line that names the option, the path, what is
wrong with it and what to do, so that a mistake costs seconds, not a training run.
"""

from __future__ import annotations

import os
from pathlib import Path

from funcnet.checkpoint import layout

__all__ = ["CommandError", "check_cache_dir", "check_data_dir", "check_out"]

OUTPUTS = ("checkpoint", "curves.png", "history.json")


class CommandError(Exception):
    """A user error found by the command: reported in one line, exit status 1."""


def _existing_ancestor(path: str) -> str:
    """The nearest part of ``path`` (itself included) that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _check_folder_path(option: str, path: str, what: str) -> None:
    """``path`` is a folder, or can become one (no file stands in its way)."""
    found = _existing_ancestor(path)
    if not os.path.isdir(found):
        where = "is a file" if found == os.path.abspath(path) else f"lies under {found}, which is a file"
        raise CommandError(f"{option} {path} {where}, not a folder: give {what}.")


def check_cache_dir(path: str | None) -> None:
    """``--cache-dir`` is a folder TFDS can use (it need not exist yet)."""
    if path is not None:
        _check_folder_path("--cache-dir", path, "the folder where TFDS keeps prepared data sets (or leave "
                           "--cache-dir out for ~/tensorflow_datasets)")


def check_data_dir(path: str | None, files: dict[str, str]) -> None:
    """``--data-dir`` is an existing folder holding every original file (``files``: name -> url)."""
    if path is None:
        return
    listing = ", ".join(f"{name} (from {url})" for name, url in files.items()) or "the original files"
    if not os.path.isdir(path):
        state = "is not a folder" if os.path.lexists(path) else "does not exist"
        raise CommandError(f"the folder {path!r} given as --data-dir {state}. It should hold {listing}.")
    missing = [name for name in files if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise CommandError(f"{', '.join(missing)} missing from {path!r} (--data-dir), which should hold {listing}.")


def check_out(path: str) -> None:
    """``--out`` is (or can become) a writable folder whose outputs funcnet may replace.

    Only a funcnet checkpoint may be overwritten at ``<out>/checkpoint``, and ``curves.png`` and
    ``history.json`` must not be folders; the folder is created now, so that an unwritable place
    fails before training rather than after.
    """
    _check_folder_path("--out", path, "a folder for the checkpoint, curves and history (a new one, or one from an "
                       "earlier run)")
    checkpoint = os.path.join(path, "checkpoint")
    # The rule checkpoint.save(overwrite=True) applies, checked before training rather than after it.
    if layout.why_not_replaceable(Path(checkpoint)) is not None:
        raise CommandError(f"--out {path} holds {checkpoint}, which is not a funcnet checkpoint, and funcnet "
                           "would replace it: choose another --out or move it away.")
    for name in OUTPUTS[1:]:
        target = os.path.join(path, name)
        if os.path.lexists(target) and not os.path.isfile(target):
            raise CommandError(f"--out {path} holds {target}, which is not a regular file, and funcnet would "
                               "replace it: choose another --out or move it away.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--out {path} cannot be created ({error.strerror}): choose a folder you can write "
                           "to.") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"--out {path} is not writable: choose a folder you can write to.")
