"""funcnet's NumPy copy of a prepared TFDS split, verified before use.

A split read from TFDS is kept as ``<key>-<sha>.npz`` beside TFDS's files, ``<sha>`` being the
start of the file's SHA-256, together with a record ``<key>.json`` holding the file's name, size
and full SHA-256. The record is written last, with one atomic rename, so a reader sees either no
record (the copy is rebuilt) or a record naming a complete file; two writers racing each commit a
whole file of their own. A copy whose size, checksum or contents do not match its record is
reported in one line on stderr, discarded and rebuilt by the caller.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import zipfile

import numpy as np

__all__ = ["read_cached", "write_cached"]

_RECORD_KEYS = {"file": str, "size": int, "sha256": str, "split": str}


def _paths(folder: str, split: str) -> tuple[str, str]:
    """The record's path and the stem every copy of ``split`` starts with."""
    key = hashlib.sha256(split.encode()).hexdigest()[:16]
    return os.path.join(folder, key + ".json"), os.path.join(folder, key)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_cached(folder: str, split: str, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(x, y)`` from the verified copy of ``split`` in ``folder``, or None when there is none.

    Args:
        folder: the cache folder (``<TFDS data path>/funcnet-numpy``).
        split: the split's name, as given to TFDS (``"train[:10%]"``).
        what: the data set, for the message (``"mnist"``).

    A copy that fails verification is named in one line on stderr and deleted, and None is
    returned so that the caller reads TFDS again.
    """
    record_path, stem = _paths(folder, split)
    if not os.path.isfile(record_path):
        return None
    path = record_path
    try:
        with open(record_path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError:
                raise ValueError("its record is not valid JSON") from None
        if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in _RECORD_KEYS.items()):
            raise ValueError("its record is not a funcnet cache record")
        if record["split"] != split or os.path.basename(record["file"]) != record["file"]:
            raise ValueError(f"its record is for another split ({record['split']!r})")
        path = os.path.join(folder, record["file"])
        if not os.path.isfile(path):  # deleted by hand, or replaced by a racing writer: not damage
            return None
        size = os.path.getsize(path)
        if size != record["size"]:
            raise ValueError(f"{size} bytes, its record says {record['size']}")
        if _sha256(path) != record["sha256"]:
            raise ValueError("its SHA-256 does not match its record")
        with np.load(path, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
    except FileNotFoundError:  # removed between the checks and the reads, as above
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        _discard(record_path, stem)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"funcnet: the NumPy copy of {what} {split!r} at {path} is damaged ({reason}); discarded it, "
              "rebuilding it from TFDS's prepared files.", file=sys.stderr, flush=True)
        return None
    return x, y


def write_cached(folder: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Keeps ``(x, y)`` as the copy of ``split`` in ``folder``; does nothing if it cannot write.

    The data file is complete before the record naming it appears (both by atomic rename), so no
    reader ever trusts a partial file.
    """
    record_path, stem = _paths(folder, split)
    partial = f"{stem}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(folder, exist_ok=True)
        np.savez(partial, x=x, y=y)
        digest = _sha256(partial)
        path = f"{stem}-{digest[:16]}.npz"
        record = {"file": os.path.basename(path), "size": os.path.getsize(partial), "sha256": digest, "split": split}
        os.replace(partial, path)
        with open(partial + ".json", "w") as f:
            json.dump(record, f)
        os.replace(partial + ".json", record_path)
    except OSError:  # a read-only data_dir: no copy, TFDS is read each time
        for leftover in (partial, partial + ".json"):
            _remove(leftover)
        return
    for other in glob.glob(glob.escape(stem) + "*.npz"):  # a racing writer's copy, or an unverified old one
        if other != path and ".tmp." not in other:
            _remove(other)


def _discard(record_path: str, stem: str) -> None:
    for path in [record_path, *glob.glob(glob.escape(stem) + "-*.npz")]:
        _remove(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
