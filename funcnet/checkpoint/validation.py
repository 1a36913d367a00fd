"""The rules a checkpoint manifest must satisfy before anything in it is used (see :mod:`funcnet.checkpoint.format`).

Types are checked first, then ranges and agreement: dtypes from a fixed list (no object or void
dtypes), shapes, byte counts, file names (``arrays/NNNNNN.bin``, no other paths), checksums, the
fields of each kind, and for sharded arrays each shard and their exact tiling
(:mod:`funcnet.checkpoint.shards`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from funcnet.checkpoint import shards
from funcnet.checkpoint.errors import CheckpointCorruptError

_FILE_NAME = re.compile(r"^arrays/\d{6}\.bin$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
DTYPES: dict[str, np.dtype] = {
    np.dtype(t).name: np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64, np.complex64, np.complex128, jnp.bfloat16,
              jnp.float8_e4m3fn, jnp.float8_e5m2)
}
#: Each PRNG implementation's key dtype and number of uint32 words per key.
_KEY_IMPLS = {"threefry2x32": ("key<fry>", 2), "rbg": ("key<rbg>", 4), "unsafe_rbg": ("key<urbg>", 4)}
PYTHON_TYPES = {"bool": bool, "int": int, "float": float}
_PYTHON_DTYPES = {"bool": "bool", "int": "int64", "float": "float64"}
_KINDS = ("jax", "numpy", "python", "key")
_ENTRY_FIELDS = {"path", "file", "kind", "dtype", "shape", "nbytes", "sha256"}
_SHARDED_FIELDS = {"path", "kind", "dtype", "shape", "nbytes", "shards"}
_OPTIONAL_FIELDS = {"numpy_scalar", "python_type", "key_impl", "key_dtype", "key_shape"}


def manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a parsed manifest (every field's type and range, so that nothing later meets
    a value it cannot use), or None."""
    from funcnet.checkpoint import tree as tree_lib

    for key, kind in (("metadata", dict), ("arrays", list), ("tree", dict), ("versions", dict)):
        if not isinstance(manifest.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}."
    if manifest.get("architecture") is not None and not isinstance(manifest["architecture"], dict):
        return "'architecture' is not an object."
    paths, files = set(), set()
    for i, entry in enumerate(manifest["arrays"]):
        required = _SHARDED_FIELDS if isinstance(entry, dict) and "shards" in entry else _ENTRY_FIELDS
        if not isinstance(entry, dict) or not required <= set(entry):
            return f"array entry {i} lacks some of {sorted(required)}."
        where = f"array entry {i} ({entry['path']!r})"
        if not isinstance(entry["path"], str) or entry["path"] in paths:
            return f"{where}: path is not a string or repeated."
        problem = _entry_problem(entry, files)
        if problem:
            return f"{where}: {problem}"
        paths.add(entry["path"])
        if "file" in entry:
            files.add(entry["file"])
    try:
        leaf_paths = tree_lib.leaf_paths(manifest["tree"])
    except CheckpointCorruptError as error:
        return str(error)
    if sorted(leaf_paths) != sorted(paths) or len(set(leaf_paths)) != len(leaf_paths):
        return "the tree's leaves and the array entries do not match."
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry: dict, files: set[str]) -> str | None:
    """What is wrong with one array entry (types checked first, then ranges and agreement), or None."""
    unknown = sorted(set(entry) - _ENTRY_FIELDS - _OPTIONAL_FIELDS - {"shards"})
    if unknown:
        return f"unknown fields {unknown}."
    if "shards" not in entry and (not isinstance(entry["file"], str) or not _FILE_NAME.match(entry["file"])
                                  or entry["file"] in files):
        return f"file name {entry['file']!r} is not of the form arrays/NNNNNN.bin or is repeated."
    dtype, kind, shape = entry["dtype"], entry["kind"], entry["shape"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return (f"dtype {dtype!r} is not allowed (one of {sorted(DTYPES)}; object and other non-numeric dtypes "
                "are never loaded).")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_is_int(d) and 0 <= d < 2**62 for d in shape):
        return f"shape {shape!r} is not a list of non-negative integers."
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if not _is_int(entry["nbytes"]) or entry["nbytes"] != expected:
        return f"claims {entry['nbytes']!r} bytes but shape {shape} of {dtype} needs {expected} (an integer)."
    if "shards" not in entry and (not isinstance(entry["sha256"], str) or not _SHA.match(entry["sha256"])):
        return "sha256 is not 64 hex digits."
    if not isinstance(kind, str) or kind not in _KINDS:
        return f"unknown kind {kind!r} (one of {list(_KINDS)})."
    if "shards" in entry:
        problem = shards.shards_problem(entry, DTYPES[dtype].itemsize)
        for i, shard in enumerate(entry["shards"] if problem is None else []):
            problem = _file_problem(shard, files)
            if problem:
                return f"shard {i}: {problem}"
            files.add(shard["file"])
        if problem:
            return problem
    if "numpy_scalar" in entry and (kind != "numpy" or entry["numpy_scalar"] is not True or shape != []):
        return "numpy_scalar must be true, and only for a 0-d NumPy value."
    if kind == "python":
        return _python_problem(entry)
    if kind == "key":
        return _key_problem(entry)
    if {"python_type", "key_impl", "key_dtype", "key_shape"} & set(entry):
        return f"a {kind} array has fields of another kind."
    return None


def _file_problem(record: dict, files: set[str]) -> str | None:
    """What is wrong with the file name or checksum of one shard, or None."""
    if not isinstance(record["file"], str) or not _FILE_NAME.match(record["file"]) or record["file"] in files:
        return f"file name {record['file']!r} is not of the form arrays/NNNNNN.bin or is repeated."
    if not isinstance(record["sha256"], str) or not _SHA.match(record["sha256"]):
        return "sha256 is not 64 hex digits."
    return None


def _python_problem(entry: dict) -> str | None:
    """A Python number has a known python_type, shape [] and that type's dtype (an int is int64)."""
    python_type = entry.get("python_type")
    if not isinstance(python_type, str) or python_type not in PYTHON_TYPES or entry["shape"] != []:
        return (f"a Python number needs python_type in {sorted(PYTHON_TYPES)} and shape [], got {python_type!r} "
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
