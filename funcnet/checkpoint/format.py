"""The on-disk format: a JSON manifest and one raw little-endian file per array, each with a SHA-256.

Layout of a checkpoint directory (format version 2)::

    manifest.json          the manifest below, UTF-8 JSON
    manifest.json.sha256   the manifest's SHA-256 (hex)
    arrays/000000.bin      raw C-order little-endian bytes of leaf 0, ...

Manifest::

    {"format": "funcnet.checkpoint", "format_version": 2,
     "versions": {"funcnet": ..., "jax": ..., "jaxlib": ..., "optax": ..., "numpy": ..., "python": ...},
     "backend": "cpu", "created": <unix time>,
     "metadata": {...},                 # the caller's JSON: step, epoch, batch index, metrics
     "architecture": {...} | null,      # funcnet.architecture.document(model, input_shape)
     "tree": <skeleton>,                # funcnet.checkpoint.tree
     "arrays": [{"path": "['params']['dense_0']['w']", "file": "arrays/000000.bin",
                 "kind": "jax" | "numpy" | "python" | "key", "dtype": "float32", "shape": [784, 10],
                 "numpy_scalar": true,               # kind "numpy" only: a np.float32(1.0), not an array
                 "nbytes": 31360, "sha256": "<hex>",
                 "python_type": "int",               # kind "python" only
                 "key_impl": "threefry2x32",         # kind "key" only: the array holds key_data,
                 "key_dtype": "key<fry>", "key_shape": []}, ...]}

An array spread over several processes is saved as its distinct shards instead: its entry has
``"shards": [{"index": [[start, stop], ...], "file", "nbytes", "sha256"}, ...]`` and no ``file``
or ``sha256`` of its own (:mod:`funcnet.checkpoint.shards`). Checkpoints without such arrays
(every single-process save) are exactly as before.

Reading is strict, and nothing is trusted before it is checked: the manifest's size is bounded
and its checksum verified before it is parsed; every entry's fields, dtype (a fixed list: no
object or void dtypes), shape, byte count and file name (``arrays/NNNNNN.bin``, no other paths)
are validated; each file's size is compared with the byte count before it is read, and its
SHA-256 after (each shard's alike). Arrays are read as raw bytes into NumPy buffers: no pickle, no
``np.load``.

The format version covers the manifest and the layout of the saved tree (which entries a layer's
state or the training state holds). An older checkpoint is validated as written, then brought up
to date by the pure steps of :mod:`funcnet.checkpoint.migrations` (version 2: BatchNorm's state
gains ``debias``); a newer one is refused with :class:`CheckpointVersionError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from funcnet.checkpoint import layout, shards, storage
from funcnet.checkpoint.errors import CheckpointCorruptError, CheckpointVersionError
from funcnet.checkpoint.migrations import MIGRATIONS
from funcnet.checkpoint.validation import DTYPES as _DTYPES
from funcnet.checkpoint.validation import PYTHON_TYPES as _PYTHON_TYPES
from funcnet.checkpoint.validation import manifest_problem

FORMAT = "funcnet.checkpoint"
#: The format version this funcnet writes; older versions are read through :data:`MIGRATIONS`.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.json.sha256"
ARRAYS = "arrays"
#: Manifests larger than this are refused unread (a corrupt or hostile file).
MAX_MANIFEST_BYTES = 256 * 2**20




def versions() -> dict[str, str]:
    """The versions a checkpoint records (RNG streams and numerics may differ across jax versions)."""
    from importlib.metadata import PackageNotFoundError, version

    import optax

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {"funcnet": installed("funcnet"), "jax": jax.__version__, "jaxlib": installed("jaxlib"),
            "optax": optax.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


# --------------------------------------------------------------------------------------------
# Writing


def leaf_record(path: str, leaf: Any) -> tuple[dict, list[tuple[Any, np.ndarray | None]]]:
    """The manifest entry (without files and checksums) of one leaf, and the pieces to write.

    The pieces are ``[(None, data)]`` for a leaf saved whole, or ``[(index, data), ...]`` for the
    shards of an array spread over several processes (:mod:`funcnet.checkpoint.shards`); ``data``
    is None where another process writes that piece (in a multi-process run, process 0 writes
    the leaves every process holds whole). The data is read, never written: for NumPy leaves it is
    the caller's own array, for JAX leaves a host copy.
    """
    entry: dict[str, Any] = {"path": path}
    if isinstance(leaf, jax.Array):
        if leaf.is_deleted():
            raise ValueError(f"cannot save {path}: the array was deleted (donated to a jitted step?); save the "
                             "values the step returned.")
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            entry.update(kind="key", key_impl=str(jax.random.key_impl(leaf)), key_dtype=str(leaf.dtype),
                         key_shape=list(leaf.shape))
            leaf = jax.random.key_data(leaf)
        else:
            entry["kind"] = "jax"
        if not leaf.is_fully_addressable:
            # The same decision in every process: spread over processes (shards), or on another process's
            # devices only (process 0 writes what it holds, so nobody writes this: the exchange says so).
            _check_dtype(path, np.dtype(leaf.dtype))
            entry.update(dtype=np.dtype(leaf.dtype).name, shape=list(leaf.shape))
            spread = len({d.process_index for d in leaf.sharding.device_set}) > 1
            return entry, shards.global_pieces(leaf) if spread else [(None, None)]
        data = np.asarray(leaf)
    elif isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic):
        kind = type(leaf).__name__ if type(leaf) in (bool, int, float) else None
        if kind is None:
            raise TypeError(f"cannot save {path}: {type(leaf).__name__} is not a plain bool, int or float.")
        entry.update(kind="python", python_type=kind)
        try:
            data = np.asarray(leaf, dtype={"bool": np.bool_, "int": np.int64, "float": np.float64}[kind])
        except OverflowError as error:
            raise ValueError(f"cannot save {path}: the integer {leaf} does not fit in 64 bits.") from error
    else:
        entry["kind"] = "numpy"
        if isinstance(leaf, np.generic):
            entry["numpy_scalar"] = True
        data = np.asarray(leaf)
    _check_dtype(path, data.dtype)
    entry.update(dtype=data.dtype.name, shape=list(data.shape))
    return entry, [(None, data if jax.process_index() == 0 else None)]


def _check_dtype(path: str, dtype: np.dtype) -> None:
    if dtype.name not in _DTYPES or dtype != _DTYPES[dtype.name]:
        raise TypeError(f"cannot save {path}: dtype {dtype} is not supported (numbers and bool only; "
                        f"supported: {sorted(_DTYPES)}).")


def little_endian_bytes(data: np.ndarray) -> np.ndarray:
    """``data`` as a flat uint8 view (or copy) in C order and little-endian byte order."""
    big = data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big")
    flat = np.ascontiguousarray(data).reshape(-1)
    if big and data.dtype.itemsize > 1:
        flat = flat.byteswap()
    return flat.view(np.uint8)


def write_arrays(directory: Path, records: list[tuple[dict, list]], writer=None, *, make_directory: bool = True
                 ) -> list[dict]:
    """Writes each piece this process holds to ``arrays/NNNNNN.bin`` (numbered over all pieces of all
    processes alike) with its SHA-256; returns the completed entries (``sha256`` None for pieces
    other processes write)."""
    writer = writer or storage.write_file
    if make_directory:
        (directory / ARRAYS).mkdir()
    entries, number = [], 0
    for entry, pieces in records:
        itemsize = _DTYPES[entry["dtype"]].itemsize
        files = []
        for index, data in pieces:
            name = f"{ARRAYS}/{number:06d}.bin"
            number += 1
            digest = None
            if data is not None:
                raw = little_endian_bytes(data)
                writer(directory / name, [raw])
                digest = hashlib.sha256(raw).hexdigest()
            size = (math.prod(entry["shape"]) if index is None else shards.volume(index)) * itemsize
            where = {} if index is None else {"index": [list(r) for r in index]}
            files.append({**where, "file": name, "nbytes": size, "sha256": digest})
        whole = pieces[0][0] is None
        entries.append({**entry, **files[0]} if whole else
                       {**entry, "nbytes": math.prod(entry["shape"]) * itemsize, "shards": files})
    storage.fsync_dir(directory / ARRAYS)
    return entries


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
        return np.asarray(value).item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(manifest: dict) -> bytes:
    return json.dumps(manifest, default=_json_default, sort_keys=False, indent=1).encode("utf-8")


def write_manifest(directory: Path, manifest: dict, writer=None) -> None:
    writer = writer or storage.write_file
    data = dumps(manifest)
    writer(directory / MANIFEST, [data])
    writer(directory / MANIFEST_SHA, [hashlib.sha256(data).hexdigest().encode("ascii")])


# --------------------------------------------------------------------------------------------
# Reading


def _corrupt(directory: Path, file: str, detail: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"checkpoint {directory} is corrupt or not a funcnet checkpoint: "
                                  f"{directory / file}: {detail}")


def _read_bounded(directory: Path, file: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``directory / file``, read through a descriptor checked to be a regular file."""
    try:
        with layout.open_regular(directory, file) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise _corrupt(directory, file, f"{size} bytes, more than the limit of {limit}.")
            return f.read(limit + 1)
    except FileNotFoundError as error:
        raise _corrupt(directory, file, "missing.") from error


def read_manifest(directory: Path) -> dict:
    """Reads, checksums, parses and validates the manifest; reads no array.

    Raises:
        CheckpointCorruptError: naming the file, for a missing, oversized, altered or malformed manifest.
        CheckpointVersionError: for a newer format version.
    """
    data = _read_bounded(directory, MANIFEST, MAX_MANIFEST_BYTES)
    digest = _read_bounded(directory, MANIFEST_SHA, 100).strip()
    if hashlib.sha256(data).hexdigest().encode("ascii") != digest:
        raise _corrupt(directory, MANIFEST, f"its SHA-256 does not match {MANIFEST_SHA} (the file was altered "
                       "or damaged).")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _corrupt(directory, MANIFEST, f"not valid JSON ({error}).") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(directory, MANIFEST, f"not a funcnet checkpoint manifest (no \"format\": \"{FORMAT}\").")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupt(directory, MANIFEST, f"invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        written_by = manifest.get("versions", {}).get("funcnet", "?") if isinstance(manifest.get("versions"),
                                                                                   dict) else "?"
        raise CheckpointVersionError(
            f"checkpoint {directory} has format version {version} (written by funcnet {written_by}); this funcnet "
            f"reads format versions up to {FORMAT_VERSION}. Upgrade funcnet to load it."
        )
    problem = manifest_problem(manifest)
    if problem:
        raise _corrupt(directory, MANIFEST, problem)
    return migrate(directory, manifest)


def migrate(directory: Path, manifest: dict) -> dict:
    """A validated manifest brought to :data:`FORMAT_VERSION` through the chain of :data:`MIGRATIONS`.

    The result records ``"migrated_from"``: the version on disk (the files are not changed).

    Raises:
        CheckpointVersionError: naming the version, when no step leads on from it.
    """
    written = version = manifest["format_version"]
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CheckpointVersionError(
                f"checkpoint {directory} has format version {version}, which this funcnet no longer migrates (it "
                f"reads versions {min(MIGRATIONS, default=FORMAT_VERSION)} to {FORMAT_VERSION}); restore it with an "
                "older funcnet and save it again."
            )
        manifest = step(manifest)
        version += 1
    return manifest if written == FORMAT_VERSION else {**manifest, "migrated_from": written}


def read_array(directory: Path, entry: dict) -> np.ndarray:
    """Reads one whole array (a sharded one from all its shards), checking each file's size before
    reading it and its SHA-256 after.

    An entry a migration added (with ``value``, no file) is that constant.

    Raises:
        CheckpointCorruptError: naming the file and the tree path, for a missing or truncated file
            or a checksum mismatch.
    """
    if "value" in entry:  # added by a migration: no file
        return np.full(entry["shape"], entry["value"], _DTYPES[entry["dtype"]])
    if "shards" in entry:
        pieces = [(tuple(map(tuple, s["index"])), read_file(directory, s, entry)) for s in entry["shards"]]
        return shards.assemble(shards.whole(entry["shape"]), pieces, _DTYPES[entry["dtype"]])
    return read_file(directory, entry, entry)


def read_file(directory: Path, record: dict, entry: dict) -> np.ndarray:
    """Reads and verifies the file of ``record`` (a whole array's entry or one shard of ``entry``)."""
    what = f"array {entry['path']}"
    try:
        f = layout.open_regular(directory, record["file"])
    except FileNotFoundError as error:
        raise _corrupt(directory, record["file"], f"missing ({what}).") from error
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != record["nbytes"]:
            state = "truncated" if size < record["nbytes"] else "longer than recorded"
            raise _corrupt(directory, record["file"], f"{state}: expected {record['nbytes']} bytes, got {size} "
                           f"({what}).")
        buffer = np.empty(record["nbytes"], np.uint8)
        read = f.readinto(memoryview(buffer))
    if read != record["nbytes"]:
        raise _corrupt(directory, record["file"], f"truncated: expected {record['nbytes']} bytes, got {read} "
                       f"({what}).")
    if hashlib.sha256(buffer).hexdigest() != record["sha256"]:
        raise _corrupt(directory, record["file"], f"its SHA-256 does not match the manifest ({what}): the data "
                       "was altered or damaged (a flipped bit?).")
    dtype = _DTYPES[entry["dtype"]]
    little = dtype.newbyteorder("<") if dtype.itemsize > 1 and dtype.byteorder != "|" else dtype
    shape = [b - a for a, b in record["index"]] if "index" in record else entry["shape"]
    array = buffer.view(little).reshape(shape)
    return array.astype(dtype, copy=False) if little != dtype else array


def python_type(entry: dict) -> type:
    return _PYTHON_TYPES[entry["python_type"]]
