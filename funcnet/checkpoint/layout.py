"""What a checkpoint directory may hold, checked before anything in it is read or replaced.

A funcnet checkpoint directory holds exactly ``manifest.json``, ``manifest.json.sha256`` and a
directory ``arrays/`` of ``NNNNNN.bin`` files, all regular files and directories (this mirrors the
layout in :mod:`funcnet.checkpoint.format`).

Symlink policy: inside a checkpoint, links are never followed and there is no opt-in. A symbolic
link, FIFO, socket or device in place of any of these entries is refused with an error that names
the entry and its kind only: the link is never resolved, so the error says nothing about whether
its target exists or how large it is. Files are opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked
with ``fstat``, so a link is never followed and a FIFO never blocks; directories are checked with
``lstat``. The path the caller passes (the checkpoint directory itself) is the caller's own and is
resolved as usual.

An overwriting save replaces only what this module recognises as a funcnet checkpoint (or an
empty directory, which holds nothing to lose); a folder with other files, a regular file or a link
at the path is refused and left untouched.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from funcnet.checkpoint.errors import CheckpointCorruptError

MANIFEST_FILES = ("manifest.json", "manifest.json.sha256")
ARRAYS = "arrays"
_ARRAY_FILE = re.compile(r"^\d{6}\.bin$")
# O_NOFOLLOW: a link in the last component fails with ELOOP; O_NONBLOCK: opening a FIFO returns at once.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory",
          stat.S_IFREG: "a regular file"}


def kind(mode: int) -> str:
    """The kind of file system entry an ``st_mode`` describes, in words ("a symbolic link")."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _open_if_regular(path: Path) -> tuple[int | None, str | None]:
    """``(descriptor, None)`` for a regular file at ``path``, else ``(None, its kind)``; ``(None, None)``
    when it is missing. Never follows a link and never blocks on a FIFO: the opened descriptor itself
    is checked, so nothing can be swapped in between the check and a read through it."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None, kind(stat.S_IFLNK)
        mode = _lstat_mode(path)  # a socket (ENXIO), or a permission error the reader reports
        if mode is None or stat.S_ISREG(mode):
            raise
        return None, kind(mode)
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return fd, None
    os.close(fd)
    return None, kind(mode)


def not_regular_file(path: Path) -> str | None:
    """The kind of entry at ``path`` if it is not a regular file (None if it is one, or is missing)."""
    fd, what = _open_if_regular(path)
    if fd is not None:
        os.close(fd)
    return what


def not_real_directory(path: Path) -> str | None:
    """The kind of entry at ``path`` if it is not a directory (a link to one counts as a link); None if
    it is a directory or is missing."""
    mode = _lstat_mode(path)
    return None if mode is None or stat.S_ISDIR(mode) else kind(mode)


def _refused(directory: Path, name: str, what: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(
        f"checkpoint {directory} is refused: {directory / name} is {what}. funcnet reads only regular files and "
        "directories inside a checkpoint and never follows links; replace it with the file itself.")


def check_arrays_directory(directory: Path) -> None:
    """Refuses a checkpoint whose ``arrays/`` is a link or not a directory (a missing one is left for the
    reader to report).

    Raises:
        CheckpointCorruptError: naming the entry and its kind.
    """
    what = not_real_directory(directory / ARRAYS)
    if what is not None:
        raise _refused(directory, ARRAYS, what)


def open_regular(directory: Path, name: str) -> BinaryIO:
    """Opens ``directory / name`` for reading if it is a regular file, without following a link or
    blocking on a FIFO; the read goes through the descriptor that was checked.

    Raises:
        FileNotFoundError: the entry is missing (the reader names it).
        CheckpointCorruptError: the entry is a link, a FIFO or another non-regular file, naming its kind.
    """
    fd, what = _open_if_regular(directory / name)
    if what is not None:
        raise _refused(directory, name, what)
    if fd is None:
        raise FileNotFoundError(directory / name)
    return os.fdopen(fd, "rb")



def why_not_replaceable(path: Path) -> str | None:
    """Why an overwriting save must leave ``path`` alone; None if it is missing, an empty directory or
    a funcnet checkpoint (only the entries listed above, each of the right kind)."""
    mode = _lstat_mode(path)
    if mode is None:
        return None
    if not stat.S_ISDIR(mode):
        return f"it is {kind(mode)}, not a checkpoint directory"
    names = set(os.listdir(path))
    if not names:
        return None
    if MANIFEST_FILES[0] not in names:
        return f"it is a directory without {MANIFEST_FILES[0]}, so not a funcnet checkpoint"
    foreign = sorted(names - {*MANIFEST_FILES, ARRAYS})
    if foreign:
        return f"it holds entries a funcnet checkpoint never has ({', '.join(foreign[:3])})"
    for name in names & set(MANIFEST_FILES):
        what = not_regular_file(path / name)
        if what is not None:
            return f"its {name} is {what}"
    if ARRAYS not in names:
        return None
    what = not_real_directory(path / ARRAYS)
    if what is not None:
        return f"its {ARRAYS} is {what}"
    for name in os.listdir(path / ARRAYS):
        what = kind(os.lstat(path / ARRAYS / name).st_mode)
        if not _ARRAY_FILE.match(name) or what != kind(stat.S_IFREG):
            return f"its {ARRAYS}/ holds {ARRAYS}/{name} ({what}), which a funcnet checkpoint never has"
    return None
