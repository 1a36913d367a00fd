"""Atomic commit of a checkpoint directory, and clean-up of what interrupted saves leave behind.

A checkpoint is a directory. The commit protocol has three steps, each a function here, so that
one process can stage, several can write, and one commits:

1. :func:`stage` creates a hidden staging directory beside the final name (same parent, so the
   final rename never crosses file systems);
2. the writer(s) fill it; every file is flushed and ``fsync``-ed (:func:`write_file`);
3. :func:`publish` ``fsync``-s it, moves a previous checkpoint aside (only a funcnet checkpoint,
   see :mod:`funcnet.checkpoint.layout`), renames the staging directory to the final name with
   ``os.rename`` (atomic on POSIX), ``fsync``-s the parent and deletes the previous one.

:func:`commit_directory` runs the three in one process. A process killed at any moment leaves
either the complete previous state or the complete new checkpoint at the final name, plus perhaps
a hidden leftover, which :func:`clean_stale` removes at the next start.

Hidden names: ``.<name>.<what>-<pid>-<token>`` where ``what`` is

* ``tmp``: a save in progress (removed when its process is gone);
* ``old``: the previous checkpoint moved aside by an overwriting save between its two renames
  (put back if the final name is missing, else removed);
* ``del``: a checkpoint being deleted (renamed first, so no half-deleted checkpoint is ever
  visible under a final name).

Leftovers of a process that is still running are never touched (the process id is in the name;
this assumes writers on one host, not a shared network file system written from several hosts).

Readers (:func:`funcnet.checkpoint.restore`) take the checkpoint's :func:`identity` before reading
and compare it after a failure: a checkpoint replaced or moved aside while it was read is read
again, never reported as corrupt. :data:`test_hook` lets tests stop a writer between its steps.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from funcnet.checkpoint import layout
from funcnet.checkpoint.errors import CheckpointWriteError

_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old|del)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")

#: Called as ``test_hook(event, path)`` between the steps of the protocol, for tests that inject a
#: race deterministically; None in normal use. Events: ``"written"`` (staging directory filled and
#: flushed, nothing published), ``"moved-aside"`` (the previous checkpoint renamed away, the final
#: name missing), ``"published"`` (the new checkpoint at the final name, the previous one not yet
#: deleted), ``"removing"`` (a deletion about to rename its checkpoint away) and, from
#: :func:`funcnet.checkpoint.restore`, ``"manifest-read"`` (manifest read, no array yet).
test_hook: Callable[[str, Path], None] | None = None


def reached(event: str, path: Path) -> None:
    """Calls :data:`test_hook`, if set, at ``event`` for the checkpoint ``path``."""
    if test_hook is not None:
        test_hook(event, path)


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
        f.writelines(chunks)
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
        if match["what"] == "old" and not os.path.lexists(final):
            try:
                os.rename(leftover, final)
            except FileNotFoundError:  # another process put it back or removed it first
                continue
            except OSError as error:  # a save committed a new checkpoint there meanwhile
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                fsync_dir(parent)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
        done.append(leftover)
    return done


def live_writer(path: Path) -> int | None:
    """The id of a running process that is replacing or deleting the checkpoint ``path`` right now
    (it has a hidden ``old`` or ``del`` sibling), or None."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return None
    for name in names:
        match = _HIDDEN.match(name)
        if match and match["name"] == path.name and match["what"] in ("old", "del") and _pid_alive(int(match["pid"])):
            return int(match["pid"])
    return None


def identity(path: Path) -> tuple | None:
    """What tells two checkpoint directories at ``path`` apart: device, inode and change time (None if
    there is no directory). Every commit publishes a new directory and every deletion renames it
    away, so the identity changes whenever a writer replaces the checkpoint."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if stat.S_ISDIR(st.st_mode) else None


def remove(path: Path) -> bool:
    """Deletes a committed checkpoint directory: renamed to a hidden name first, then removed.

    Returns:
        False if it was already gone (another process pruned it first), True otherwise.
    """
    reached("removing", path)
    hidden = path.parent / hidden_name(path.name, "del")
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    shutil.rmtree(hidden, ignore_errors=True)
    return True


def _write_error(path: Path, error: OSError) -> CheckpointWriteError:
    reason = error.strerror or str(error)
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    return CheckpointWriteError(f"cannot save checkpoint {path}: {reason}{where}. Nothing was committed; the previous "
                                "checkpoint, if any, is untouched.")


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"checkpoint {path} already exists; pass overwrite=True to replace it.")


def check_replaceable(path: Path, *, overwrite: bool) -> None:
    """Refuses, before anything is written, a save whose ``path`` holds something it must not replace.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false, or it is not a funcnet checkpoint
            (a folder of other files, a regular file, a link), naming the path and why.
    """
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise _exists_error(path)
    try:
        why = layout.why_not_replaceable(path)
    except OSError as error:  # a folder that cannot be listed is not replaced either
        raise _write_error(path, error) from error
    if why is not None:
        raise FileExistsError(f"cannot overwrite {path}: {why}. overwrite=True replaces only a funcnet checkpoint; "
                              "nothing was touched. Choose another path, or move it away yourself.")


def stage(path: Path) -> Path:
    """Step 1: creates and returns an empty hidden staging directory for a save of ``path``.

    Its name carries this process's id: :func:`clean_stale` leaves it alone while this process
    runs, so other processes may write shards into it before this one publishes it.

    Raises:
        CheckpointWriteError: the parent directory cannot be created or written, naming it.
    """
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointWriteError(f"cannot save checkpoint {path}: cannot create directory {parent}: "
                                   f"{error.strerror or error}.") from error
    clean_stale(parent, path.name)
    tmp = parent / hidden_name(path.name, "tmp")
    try:
        os.mkdir(tmp)
    except OSError as error:
        raise _write_error(path, error) from error
    return tmp


def _move_aside(path: Path) -> Path | None:
    """Renames the checkpoint at ``path`` to a hidden ``old`` name (None if nothing is there).

    It is checked again once moved, where nobody else can change it: something other than a
    checkpoint that appeared at ``path`` since :func:`check_replaceable` is put back, untouched.
    """
    check_replaceable(path, overwrite=True)
    old = path.parent / hidden_name(path.name, "old")
    try:
        os.rename(path, old)
    except FileNotFoundError:  # another writer moved it first
        return None
    why = layout.why_not_replaceable(old)
    if why is not None:
        os.rename(old, path)
        raise FileExistsError(f"cannot overwrite {path}: {why}. overwrite=True replaces only a funcnet checkpoint; "
                              "nothing was touched.")
    reached("moved-aside", path)
    return old


def _put_back(old: Path | None, path: Path) -> None:
    if old is not None and not os.path.lexists(path):
        os.rename(old, path)


def publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Step 3: atomically makes the filled staging directory ``tmp`` the checkpoint at ``path``.

    With ``overwrite``, a checkpoint at ``path`` is moved aside, replaced and then deleted; when
    another writer commits the same path in between, this one's commit wins (tried a few times).
    On failure ``tmp`` is removed and the previous checkpoint is back at ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false, or is not a funcnet checkpoint.
        CheckpointWriteError: naming ``path`` and the reason; nothing was committed.
    """
    old = None
    try:
        fsync_dir(tmp)
        reached("written", path)
        for attempt in range(3):
            if os.path.lexists(path):
                if not overwrite:
                    raise _exists_error(path)
                old = _move_aside(path) or old
            try:
                os.rename(tmp, path)
                break
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not overwrite:
                    raise _exists_error(path) from error
                if attempt == 2:
                    raise
                # Another writer published ``path`` since it was moved aside: that one is moved aside in turn,
                # and the one moved aside before is obsolete.
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                    old = None
        fsync_dir(path.parent)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        _put_back(old, path)
        if isinstance(error, OSError) and not isinstance(error, (FileExistsError, CheckpointWriteError)):
            raise _write_error(path, error) from error
        raise
    reached("published", path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def commit_directory(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Runs ``write(tmp_dir)`` and atomically publishes ``tmp_dir`` as ``path``: the three steps in one process.

    Args:
        path: the final directory.
        write: fills the (empty, existing) temporary directory; it must ``fsync`` its files.
        overwrite: replace an existing funcnet checkpoint at ``path``. Otherwise an existing one is an error.

    Raises:
        CheckpointWriteError: naming ``path`` and the reason (permission denied, no space left, ...).
            The temporary directory is removed; whatever was at ``path`` before is untouched.
        FileExistsError: ``path`` exists and ``overwrite`` is false, or ``path`` is not a funcnet
            checkpoint (a folder of the user's files, a regular file, a link): nothing is touched.
    """
    check_replaceable(path, overwrite=overwrite)
    tmp = stage(path)
    try:
        write(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, (FileExistsError, CheckpointWriteError)):
            raise _write_error(path, error) from error
        raise
    publish(tmp, path, overwrite=overwrite)


