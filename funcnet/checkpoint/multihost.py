"""One checkpoint written by several processes: each writes its shards, process 0 commits.

The protocol (every process calls :func:`commit` with the same tree; the steps of
:mod:`funcnet.checkpoint.storage` are split between them):

1. process 0 checks the path and stages the hidden directory (``storage.stage``), then tells the
   others its name, or the error that stopped it, which every process then raises;
2. every process writes and ``fsync``-s the files of the pieces it holds (the distinct shards it
   holds replica 0 of; process 0 also the leaves every process holds whole);
3. the processes exchange their files' SHA-256 digests and any error (this is the barrier: no
   process goes on before all have written); if one failed, process 0 removes the staging
   directory and every process raises :class:`CheckpointWriteError` naming it;
4. process 0 writes the manifest, the commit point, and publishes the directory
   (``storage.publish``: one atomic rename), then tells the others the outcome.

A crash of any process before step 4 leaves the previous checkpoint untouched, and a hidden
leftover that :func:`funcnet.checkpoint.clean_stale` removes once process 0 is gone. All processes
must see the same file system at the checkpoint's path (a shared or network file system across
hosts).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from funcnet.checkpoint import errors, storage
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint.errors import CheckpointWriteError

#: Longest error message passed between processes (longer ones are cut).
MESSAGE_BYTES = 2048
_ERRORS = {"FileExistsError": FileExistsError, "CheckpointWriteError": CheckpointWriteError}


def _encode(text: str) -> np.ndarray:
    raw = text.encode("utf-8")[:MESSAGE_BYTES - 4]
    out = np.zeros(MESSAGE_BYTES, np.uint8)
    out[:4] = np.frombuffer(len(raw).to_bytes(4, "little"), np.uint8)
    out[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _decode(buffer: np.ndarray) -> str:
    size = int.from_bytes(bytes(buffer[:4]), "little")
    return bytes(buffer[4:4 + size]).decode("utf-8", errors="replace")


def _broadcast_text(text: str) -> str:
    """Process 0's ``text``, in every process."""
    return _decode(np.asarray(multihost_utils.broadcast_one_to_all(_encode(text))))


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return json.dumps({"ok": True})
    return json.dumps({"error": type(error).__name__, "message": str(error)})


def _raise_outcome(outcome: str, path: Path) -> None:
    """Raises in this process the error process 0 met (the same type and message), if any."""
    told = json.loads(outcome)
    if "error" not in told:
        return
    if told["error"] in _ERRORS:
        raise _ERRORS[told["error"]](told["message"])
    raise CheckpointWriteError(f"cannot save checkpoint {path}: process 0 failed: {told['error']}: {told['message']}")


def _file_records(entries: list[dict]) -> list[tuple[str, dict]]:
    """Each file's tree path and record (a whole array's entry or a shard), in file order."""
    return [(entry["path"], record) for entry in entries for record in entry.get("shards", [entry])]


def _exchange(files: int, entries: list[dict], error: BaseException | None) -> list[str]:
    """Fills in the digests of the files other processes wrote; returns every process's error text ("" if none).

    Every process sends a table of the same size (``files`` rows), whether or not its writes
    succeeded, so that the collective matches in all of them.
    """
    records = _file_records(entries)
    table = np.zeros((files, 33), np.uint8)  # a flag, then the 32-byte digest
    for row, (_, record) in zip(table, records, strict=False):  # no records when this process failed
        if record["sha256"] is not None:
            row[0], row[1:] = 1, np.frombuffer(bytes.fromhex(record["sha256"]), np.uint8)
    message = "" if error is None else f"{type(error).__name__}: {error}"
    tables, messages = multihost_utils.process_allgather((table, _encode(message)))
    errors = [_decode(np.asarray(m)) for m in messages]
    if not any(errors):
        tables = np.asarray(tables)
        for i, (path, record) in enumerate(records):
            writers = np.flatnonzero(tables[:, i, 0])
            if len(writers) != 1:  # never commit a partial checkpoint
                errors[0] = (f"{path} ({record['file']}) was written by {len(writers)} processes, not one: an array "
                             "on the devices of one process other than process 0 cannot be saved; place it on a "
                             "mesh of every process, or on process 0")
                break
            record["sha256"] = bytes(tables[writers[0], i, 1:]).hex()
    return errors


def _publish(tmp: Path, path: Path, entries: list[dict], manifest: dict, *, overwrite: bool) -> BaseException | None:
    """Process 0's commit: the manifest, then the atomic rename; returns the error that stopped it, if any."""
    try:
        fmt.write_manifest(tmp, {**manifest, "arrays": entries})
    except OSError as caught:
        shutil.rmtree(tmp, ignore_errors=True)
        return storage._write_error(path, caught)
    try:
        storage.publish(tmp, path, overwrite=overwrite)  # removes tmp itself on failure
    except (OSError, CheckpointWriteError) as caught:
        return caught
    return None


def commit(path: Path, records: list[tuple[dict, list]], manifest: dict, *, overwrite: bool) -> None:
    """Saves the checkpoint from every process together (the protocol above); call it in all of them.

    Raises:
        FileExistsError: as for :func:`funcnet.checkpoint.save`, in every process.
        CheckpointWriteError: a process could not write (naming it and why), in every process;
            nothing is committed.
    """
    primary = jax.process_index() == 0
    tmp, error = None, None
    if primary:
        try:
            storage.check_replaceable(path, overwrite=overwrite)
            tmp = storage.stage(path)
            (tmp / fmt.ARRAYS).mkdir()
        except (OSError, CheckpointWriteError) as caught:
            error = caught
    staged = "" if not primary else _outcome(error) if error else json.dumps({"tmp": tmp.name})
    told = _broadcast_text(staged)  # process 0's, in every process
    if error is not None:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise error
    _raise_outcome(told, path)
    tmp = path.parent / json.loads(told)["tmp"]
    entries, error = [], None
    try:
        entries = fmt.write_arrays(tmp, records, make_directory=False)
    except OSError as caught:
        error = caught
    errors = _exchange(sum(len(pieces) for _, pieces in records), entries, error)
    failed = [f"process {i}: {text}" for i, text in enumerate(errors) if text]
    if failed:
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"cannot save checkpoint {path}: " + "; ".join(failed) + ". Nothing was "
                                   "committed; the previous checkpoint, if any, is untouched.")
    error = _publish(tmp, path, entries, manifest, overwrite=overwrite) if primary else None
    outcome = _broadcast_text(_outcome(error))
    if error is not None:
        raise error
    _raise_outcome(outcome, path)


# --------------------------------------------------------------------------------------------
# Restoring: every process restores the same step, or none does

_READ_ERRORS = {kind.__name__: kind for kind in (errors.CheckpointNotFoundError, errors.CheckpointCorruptError,
                                                 errors.CheckpointVersionError, errors.CheckpointMismatchError,
                                                 errors.CheckpointBusyError, errors.CheckpointError)}


def primary_step(step: int | None) -> int | None:
    """Process 0's ``step`` (None for none), in every process: the candidate all of them try."""
    told = multihost_utils.broadcast_one_to_all(np.int64(-1 if step is None else step))
    return None if int(told) < 0 else int(told)


def shared_error(error: errors.CheckpointError | None) -> errors.CheckpointError | None:
    """The outcome of one restore in every process: None if all succeeded, else an error every process raises.

    A process's own error wins (its message is the most precise); otherwise the first failing
    process's error is rebuilt with its type, naming that process. A "not found" anywhere comes
    first: the step was pruned, and the caller moves on to the next one without a warning.
    """
    message = "" if error is None else json.dumps({"error": type(error).__name__, "message": str(error)})
    told = [_decode(np.asarray(m)) for m in multihost_utils.process_allgather(_encode(message))]
    failures = [(i, json.loads(text)) for i, text in enumerate(told) if text]
    if not failures:
        return None
    missing = [(i, failure) for i, failure in failures if failure["error"] == "CheckpointNotFoundError"]
    process, failure = (missing or failures)[0]
    if error is not None and (not missing or isinstance(error, errors.CheckpointNotFoundError)):
        return error
    return _READ_ERRORS.get(failure["error"], errors.CheckpointError)(f"process {process}: {failure['message']}")
