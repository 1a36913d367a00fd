"""Atomic commit of a checkpoint directory, and clean-up of what interrupted saves leave behind.

A checkpoint is a directory. It is written under a hidden temporary name in the same parent
directory (so the final rename never crosses file systems), every file is flushed and
``fsync``-ed, then the directory is renamed to its final name with ``os.rename`` (atomic on
POSIX) and the parent directory is ``fsync``-ed. A process killed at any moment therefore leaves
either the complete previous state or the complete new checkpoint at the final name, plus perhaps a
hidden leftover, which :func:`clean_stale` removes at the next start.

Hidden names: ``.<name>.<what>-<pid>-<token>`` where ``what`` is

* ``tmp``: a save in progress (removed when its process is gone);
* ``old``: the previous checkpoint moved aside by an overwriting save between its two renames
  (put back if the final name is missing, else removed);
* ``del``: a checkpoint being deleted (renamed first, so no half-deleted checkpoint is ever
  visible under a final name).

Leftovers of a process that is still running are never touched (the process id is in the name;
this assumes writers on one host, not a shared network file system written from several hosts).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from funcnet.checkpoint.errors import CheckpointWriteError

_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old|del)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")


def hidden_name(name: str, what: str) -> str:
    """A fresh hidden sibling name for ``name`` (``what`` is ``tmp``, ``old`` or ``del``)."""
    return f".{name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def is_hidden(name: str) -> bool:
    """Whether ``name`` is one of the hidden names above (never a committed checkpoint)."""
    return _HIDDEN.match(name) is not None


def fsync_dir(path: Path) -> None:
    """Flushes a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, chunks: list) -> None:
    """Writes ``chunks`` (bytes-like) to a new file, flushes and ``fsync``-s it. Fails if it exists."""
    with open(path, "xb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(parent: Path, name: str | None = None) -> list[Path]:
    """Removes leftovers of interrupted saves and deletions in ``parent`` (for ``name`` only, if given).

    A moved-aside previous checkpoint (``old``) whose final name is missing is renamed back,
    completing the recovery of an overwrite that was interrupted between its two renames.

    Returns:
        The leftovers removed or restored.
    """
    done = []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return done
    for entry in entries:
        match = _HIDDEN.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        if _pid_alive(int(match["pid"])):
            continue
        leftover = Path(entry.path)
        final = parent / match["name"]
        if match["what"] == "old" and not final.exists():
            os.rename(leftover, final)
            fsync_dir(parent)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
        done.append(leftover)
    return done


def remove(path: Path) -> None:
    """Deletes a committed checkpoint directory: renamed to a hidden name first, then removed."""
    hidden = path.parent / hidden_name(path.name, "del")
    os.rename(path, hidden)
    fsync_dir(path.parent)
    shutil.rmtree(hidden, ignore_errors=True)


def commit_directory(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Runs ``write(tmp_dir)`` and atomically publishes ``tmp_dir`` as ``path``.

    Args:
        path: the final directory.
        write: fills the (empty, existing) temporary directory; it must ``fsync`` its files.
        overwrite: replace an existing checkpoint at ``path``. Otherwise an existing one is an error.

    Raises:
        CheckpointWriteError: naming ``path`` and the reason (permission denied, no space left, ...).
            The temporary directory is removed; whatever was at ``path`` before is untouched.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointWriteError(f"cannot save checkpoint {path}: cannot create directory {parent}: "
                                   f"{error.strerror or error}.") from error
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {path} already exists; pass overwrite=True to replace it.")
    clean_stale(parent, path.name)
    tmp = parent / hidden_name(path.name, "tmp")
    old = None
    try:
        os.mkdir(tmp)
        write(tmp)
        fsync_dir(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"checkpoint {path} already exists; pass overwrite=True to replace it.")
            old = parent / hidden_name(path.name, "old")
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(parent)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.rename(old, path)
        if isinstance(error, FileExistsError) or isinstance(error, CheckpointWriteError):
            raise
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        raise CheckpointWriteError(
            f"cannot save checkpoint {path}: {reason}{where}. Nothing was committed; the previous "
            "checkpoint, if any, is untouched."
        ) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.rename(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
