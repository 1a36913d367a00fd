"""The errors a checkpoint can raise. Every message names the checkpoint and the file or tree path."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every checkpoint problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint at the path (it never existed, or a save never finished)."""


class CheckpointCorruptError(CheckpointError, ValueError):
    """A file of the checkpoint is missing, truncated, fails its SHA-256, or is malformed.

    Also raised for crafted files (a pickle where an array or the manifest should be, an
    object dtype, a length that does not match the file): nothing in them is ever executed.
    """


class CheckpointVersionError(CheckpointError, ValueError):
    """The checkpoint was written in a format newer than this funcnet reads."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint's tree does not fit the target: lists every missing, unexpected or differing path."""


class CheckpointWriteError(CheckpointError, OSError):
    """A save failed (read-only directory, disk full, ...); the previous checkpoint is untouched."""


class CheckpointBusyError(CheckpointError):
    """Another process replaced or deleted the checkpoint while it was being read, every time it was
    tried: nothing was loaded; try again."""
