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

Reading is strict, and nothing is trusted before it is checked: the manifest's size is bounded
and its checksum verified before it is parsed; every entry's fields, dtype (a fixed list: no
object or void dtypes), shape, byte count and file name (``arrays/NNNNNN.bin``, no other paths)
are validated; each file's size is compared with the byte count before it is read, and its
SHA-256 after. Arrays are read as raw bytes into NumPy buffers: no pickle, no ``np.load``.

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
import re
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.checkpoint import layout, storage
from funcnet.checkpoint.errors import CheckpointCorruptError, CheckpointVersionError
from funcnet.checkpoint.migrations import MIGRATIONS

FORMAT = "funcnet.checkpoint"
#: The format version this funcnet writes; older versions are read through :data:`MIGRATIONS`.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.json.sha256"
ARRAYS = "arrays"
#: Manifests larger than this are refused unread (a corrupt or hostile file).
MAX_MANIFEST_BYTES = 256 * 2**20

_FILE_NAME = re.compile(r"^arrays/\d{6}\.bin$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_DTYPES: dict[str, np.dtype] = {
    np.dtype(t).name: np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64, np.complex64, np.complex128, jnp.bfloat16,
              jnp.float8_e4m3fn, jnp.float8_e5m2)
}
#: Each PRNG implementation's key dtype and number of uint32 words per key.
_KEY_IMPLS = {"threefry2x32": ("key<fry>", 2), "rbg": ("key<rbg>", 4), "unsafe_rbg": ("key<urbg>", 4)}
_PYTHON_TYPES = {"bool": bool, "int": int, "float": float}
_PYTHON_DTYPES = {"bool": "bool", "int": "int64", "float": "float64"}
_KINDS = ("jax", "numpy", "python", "key")
_ENTRY_FIELDS = {"path", "file", "kind", "dtype", "shape", "nbytes", "sha256"}
_OPTIONAL_FIELDS = {"numpy_scalar", "python_type", "key_impl", "key_dtype", "key_shape"}


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


def leaf_record(path: str, leaf: Any) -> tuple[dict, np.ndarray]:
    """The manifest entry (without file and checksum) and the NumPy data of one leaf.

    The data is read, never written: for NumPy leaves it is the caller's own array, for JAX
    leaves a host copy.
    """
    entry: dict[str, Any] = {"path": path}
    if isinstance(leaf, jax.Array):
        if leaf.is_deleted():
            raise ValueError(f"cannot save {path}: the array was deleted (donated to a jitted step?); save the "
                             "values the step returned.")
        if not leaf.is_fully_addressable:
            raise ValueError(f"cannot save {path}: the array spans several processes; funcnet checkpoints hold "
                             "arrays one process can read (use orbax-checkpoint for multi-host arrays).")
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            entry.update(kind="key", key_impl=str(jax.random.key_impl(leaf)), key_dtype=str(leaf.dtype),
                         key_shape=list(leaf.shape))
            data = np.asarray(jax.random.key_data(leaf))
        else:
            entry["kind"] = "jax"
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
    if data.dtype.name not in _DTYPES or data.dtype != _DTYPES[data.dtype.name]:
        raise TypeError(f"cannot save {path}: dtype {data.dtype} is not supported (numbers and bool only; "
                        f"supported: {sorted(_DTYPES)}).")
    entry.update(dtype=data.dtype.name, shape=list(data.shape))
    return entry, data


def little_endian_bytes(data: np.ndarray) -> np.ndarray:
    """``data`` as a flat uint8 view (or copy) in C order and little-endian byte order."""
    big = data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big")
    flat = np.ascontiguousarray(data).reshape(-1)
    if big and data.dtype.itemsize > 1:
        flat = flat.byteswap()
    return flat.view(np.uint8)


def write_arrays(directory: Path, records: list[tuple[dict, np.ndarray]], writer=None) -> list[dict]:
    """Writes each array to ``arrays/NNNNNN.bin`` with its SHA-256; returns the completed entries."""
    writer = writer or storage.write_file
    (directory / ARRAYS).mkdir()
    entries = []
    for index, (entry, data) in enumerate(records):
        raw = little_endian_bytes(data)
        name = f"{ARRAYS}/{index:06d}.bin"
        writer(directory / name, [raw])
        entries.append({**entry, "file": name, "nbytes": int(raw.size), "sha256": hashlib.sha256(raw).hexdigest()})
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
    _validate(directory, manifest)
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


def _validate(directory: Path, manifest: dict) -> None:
    """Checks every field's type and range, so that nothing later meets a value it cannot use."""
    from funcnet.checkpoint import tree as tree_lib

    def bad(detail: str) -> CheckpointCorruptError:
        return _corrupt(directory, MANIFEST, detail)

    for key, kind in (("metadata", dict), ("arrays", list), ("tree", dict), ("versions", dict)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"'{key}' is missing or not a {kind.__name__}.")
    if manifest.get("architecture") is not None and not isinstance(manifest["architecture"], dict):
        raise bad("'architecture' is not an object.")
    paths, files = set(), set()
    for i, entry in enumerate(manifest["arrays"]):
        if not isinstance(entry, dict) or not _ENTRY_FIELDS <= set(entry):
            raise bad(f"array entry {i} lacks some of {sorted(_ENTRY_FIELDS)}.")
        where = f"array entry {i} ({entry['path']!r})"
        if not isinstance(entry["path"], str) or entry["path"] in paths:
            raise bad(f"{where}: path is not a string or repeated.")
        problem = _entry_problem(entry, files)
        if problem:
            raise bad(f"{where}: {problem}")
        paths.add(entry["path"])
        files.add(entry["file"])
    try:
        leaf_paths = tree_lib.leaf_paths(manifest["tree"])
    except CheckpointCorruptError as error:
        raise bad(str(error)) from None
    if sorted(leaf_paths) != sorted(paths) or len(set(leaf_paths)) != len(leaf_paths):
        raise bad("the tree's leaves and the array entries do not match.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry: dict, files: set[str]) -> str | None:
    """What is wrong with one array entry (types checked first, then ranges and agreement), or None."""
    unknown = sorted(set(entry) - _ENTRY_FIELDS - _OPTIONAL_FIELDS)
    if unknown:
        return f"unknown fields {unknown}."
    if not isinstance(entry["file"], str) or not _FILE_NAME.match(entry["file"]) or entry["file"] in files:
        return f"file name {entry['file']!r} is not of the form arrays/NNNNNN.bin or is repeated."
    dtype, kind, shape = entry["dtype"], entry["kind"], entry["shape"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        return (f"dtype {dtype!r} is not allowed (one of {sorted(_DTYPES)}; object and other non-numeric dtypes "
                "are never loaded).")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_is_int(d) and 0 <= d < 2**62 for d in shape):
        return f"shape {shape!r} is not a list of non-negative integers."
    expected = math.prod(shape) * _DTYPES[dtype].itemsize
    if not _is_int(entry["nbytes"]) or entry["nbytes"] != expected:
        return f"claims {entry['nbytes']!r} bytes but shape {shape} of {dtype} needs {expected} (an integer)."
    if not isinstance(entry["sha256"], str) or not _SHA.match(entry["sha256"]):
        return "sha256 is not 64 hex digits."
    if not isinstance(kind, str) or kind not in _KINDS:
        return f"unknown kind {kind!r} (one of {list(_KINDS)})."
    if "numpy_scalar" in entry and (kind != "numpy" or entry["numpy_scalar"] is not True or shape != []):
        return "numpy_scalar must be true, and only for a 0-d NumPy value."
    if kind == "python":
        return _python_problem(entry)
    if kind == "key":
        return _key_problem(entry)
    if {"python_type", "key_impl", "key_dtype", "key_shape"} & set(entry):
        return f"a {kind} array has fields of another kind."
    return None


def _python_problem(entry: dict) -> str | None:
    """A Python number has a known python_type, shape [] and that type's dtype (an int is int64)."""
    python_type = entry.get("python_type")
    if not isinstance(python_type, str) or python_type not in _PYTHON_TYPES or entry["shape"] != []:
        return (f"a Python number needs python_type in {sorted(_PYTHON_TYPES)} and shape [], got {python_type!r} "
                f"and {entry['shape']}.")
    if entry["dtype"] != _PYTHON_DTYPES[python_type]:
        return f"a Python {python_type} is stored as {_PYTHON_DTYPES[python_type]}, not {entry['dtype']}."
    return None


def _key_problem(entry: dict) -> str | None:
    """A PRNG key's impl, key dtype and shapes agree (the data is its ``key_data``: key_shape + [words])."""
    impl, key_dtype, key_shape = entry.get("key_impl"), entry.get("key_dtype"), entry.get("key_shape")
    if not isinstance(impl, str) or impl not in _KEY_IMPLS:
        return f"a PRNG key needs key_impl in {list(_KEY_IMPLS)}, got {impl!r}."
    expected_dtype, words = _KEY_IMPLS[impl]
    if key_dtype != expected_dtype:
        return f"a {impl} PRNG key has key_dtype {expected_dtype!r}, got {key_dtype!r}."
    if entry["dtype"] != "uint32" or not isinstance(key_shape, list) or entry["shape"] != [*key_shape, words]:
        return (f"a {impl} PRNG key needs uint32 key data of shape key_shape + [{words}], got "
                f"{entry['dtype']}{entry['shape']} with key_shape {key_shape!r}.")
    return None


def read_array(directory: Path, entry: dict) -> np.ndarray:
    """Reads one array, after checking the file's size, and verifies its SHA-256.

    An entry a migration added (with ``value``, no file) is that constant.

    Raises:
        CheckpointCorruptError: naming the file and the tree path, for a missing or truncated file
            or a checksum mismatch.
    """
    if "value" in entry:  # added by a migration: no file
        return np.full(entry["shape"], entry["value"], _DTYPES[entry["dtype"]])
    what = f"array {entry['path']}"
    try:
        f = layout.open_regular(directory, entry["file"])
    except FileNotFoundError as error:
        raise _corrupt(directory, entry["file"], f"missing ({what}).") from error
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != entry["nbytes"]:
            state = "truncated" if size < entry["nbytes"] else "longer than recorded"
            raise _corrupt(directory, entry["file"], f"{state}: expected {entry['nbytes']} bytes, got {size} "
                           f"({what}).")
        buffer = np.empty(entry["nbytes"], np.uint8)
        read = f.readinto(memoryview(buffer))
    if read != entry["nbytes"]:
        raise _corrupt(directory, entry["file"], f"truncated: expected {entry['nbytes']} bytes, got {read} ({what}).")
    if hashlib.sha256(buffer).hexdigest() != entry["sha256"]:
        raise _corrupt(directory, entry["file"], f"its SHA-256 does not match the manifest ({what}): the data "
                       "was altered or damaged (a flipped bit?).")
    dtype = _DTYPES[entry["dtype"]]
    little = dtype.newbyteorder("<") if dtype.itemsize > 1 and dtype.byteorder != "|" else dtype
    array = buffer.view(little).reshape(entry["shape"])
    return array.astype(dtype, copy=False) if little != dtype else array


def python_type(entry: dict) -> type:
    return _PYTHON_TYPES[entry["python_type"]]
