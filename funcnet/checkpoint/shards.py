"""Arrays split across processes: which shards a checkpoint holds, their validation and reassembly.

An array that one process can read whole (``is_fully_addressable``: one device, or several devices
of one process) is saved whole, as a plain entry of :mod:`funcnet.checkpoint.format`, whatever its
sharding: a single-process checkpoint of a sharded array is the same as one of the array on one
device, and restores onto any device count. An array spread over several processes is saved as
its distinct shards (replicas are written once, by the process holding replica 0), each in its
own file with its own size and SHA-256::

    {"path": ..., "kind": "jax" | "key", "dtype": "float32", "shape": [8, 4], "nbytes": 128,
     "shards": [{"index": [[0, 4], [0, 4]], "file": "arrays/000003.bin", "nbytes": 64, "sha256": "<hex>"},
                {"index": [[4, 8], [0, 4]], "file": "arrays/000004.bin", "nbytes": 64, "sha256": "<hex>"}]}

``index`` gives ``[start, stop)`` per axis. Validation is as strict as for whole arrays: every
shard's file name, byte count and checksum, and the shards must tile the array exactly (a grid:
per axis, intervals that partition it, every combination present once), so no byte is missing or
read twice. Restoring reads only the shards that overlap the parts of the target sharding that
this process holds.
"""

from __future__ import annotations

import math

import jax
import numpy as np

#: A shard's position: ``((start, stop), ...)`` per axis.
Index = tuple[tuple[int, int], ...]
#: More shards than this in one array is refused as a crafted manifest (a pod has fewer devices).
MAX_SHARDS = 1 << 16
_SHARD_FIELDS = {"index", "file", "nbytes", "sha256"}


def normalize(index: tuple, shape: tuple) -> Index:
    """A shard index of slices (``array.addressable_shards[i].index``) as ``((start, stop), ...)``."""
    return tuple(tuple(s.indices(n)[:2]) for s, n in zip(index, shape, strict=True))


def whole(shape: tuple) -> Index:
    """The index of the whole array."""
    return tuple((0, n) for n in shape)


def distinct_indices(sharding: jax.sharding.Sharding, shape: tuple) -> list[Index]:
    """The distinct shards of an array of ``shape`` under ``sharding`` (over all processes), sorted."""
    return sorted({normalize(index, shape) for index in sharding.devices_indices_map(tuple(shape)).values()})


def local_indices(sharding: jax.sharding.Sharding, shape: tuple) -> list[Index]:
    """The distinct parts of an array of ``shape`` that this process's devices hold under ``sharding``."""
    return sorted({normalize(i, shape) for i in sharding.addressable_devices_indices_map(tuple(shape)).values()})


def volume(index: Index) -> int:
    return math.prod(stop - start for start, stop in index)


def overlap(a: Index, b: Index) -> Index | None:
    """The intersection of two indices, or None if they do not meet."""
    both = tuple((max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(a, b, strict=True))
    return both if all(start < stop for start, stop in both) else None


def tiling_problem(shape: list[int], indices: list[Index]) -> str | None:
    """What keeps ``indices`` from tiling an array of ``shape`` exactly as a grid, or None."""
    per_axis = [sorted({index[axis] for index in indices}) for axis in range(len(shape))]
    for axis, intervals in enumerate(per_axis):
        edges = [0]
        for start, stop in intervals:
            if start != edges[-1]:
                return f"the shards' intervals along axis {axis} do not partition [0, {shape[axis]}) ({intervals})."
            edges.append(stop)
        if edges[-1] != shape[axis]:
            return f"the shards' intervals along axis {axis} do not partition [0, {shape[axis]}) ({intervals})."
    if len(set(indices)) != len(indices) or len(indices) != math.prod(len(i) for i in per_axis):
        return "the shards repeat a part of the array or leave one out."
    return None


def shards_problem(entry: dict, itemsize: int) -> str | None:
    """What is wrong with a sharded entry's ``shards`` (fields, indices, byte counts, tiling), or None.

    Each shard's file name and checksum are checked by :mod:`funcnet.checkpoint.validation` as whole
    arrays' are.
    """
    shape, shards = entry["shape"], entry["shards"]
    if "file" in entry or "sha256" in entry:
        return "a sharded array has 'shards' and no 'file' or 'sha256' of its own."
    if entry["kind"] not in ("jax", "key") or not shape or math.prod(shape) == 0:
        return "only non-empty JAX arrays and PRNG keys are saved in shards."
    if not isinstance(shards, list) or not 1 < len(shards) <= MAX_SHARDS:
        return f"'shards' must be a list of 2 to {MAX_SHARDS} shards."
    indices = []
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or set(shard) != _SHARD_FIELDS:
            return f"shard {i} must have exactly the fields {sorted(_SHARD_FIELDS)}."
        index = shard["index"]
        if (not isinstance(index, list) or len(index) != len(shape)
                or not all(isinstance(r, list) and len(r) == 2 and all(type(v) is int for v in r) and
                           0 <= r[0] < r[1] <= n for r, n in zip(index, shape, strict=False))):
            return f"shard {i}: index {index!r} is not a [start, stop) pair within the shape {shape} per axis."
        index = tuple(map(tuple, index))
        if type(shard["nbytes"]) is not int or shard["nbytes"] != volume(index) * itemsize:
            return f"shard {i} claims {shard['nbytes']!r} bytes but its index {list(map(list, index))} needs " \
                   f"{volume(index) * itemsize}."
        indices.append(index)
    return tiling_problem(shape, indices)


def assemble(region: Index, pieces: list[tuple[Index, np.ndarray]], dtype: np.dtype) -> np.ndarray:
    """The part ``region`` of an array, copied from the ``pieces`` (shards) that overlap it.

    The pieces come from a validated tiling, so together they cover ``region`` exactly once.
    """
    out = np.empty([stop - start for start, stop in region], dtype)
    for index, data in pieces:
        common = overlap(region, index)
        if common is None:
            continue
        into = tuple(slice(a - r, b - r) for (a, b), (r, _) in zip(common, region, strict=True))
        take = tuple(slice(a - s, b - s) for (a, b), (s, _) in zip(common, index, strict=True))
        out[into] = data[take]
    return out


def global_pieces(array: jax.Array) -> list[tuple[Index | None, np.ndarray | None]]:
    """The pieces to save of an array spread over several processes: ``[(index, data), ...]`` for
    its distinct shards, with ``data`` for those this process holds replica 0 of (None for the others),
    or ``[(None, data)]`` when every device holds the whole array (a replicated array is saved whole).
    """
    shape = tuple(array.shape)
    mine = {normalize(s.index, shape): s.data for s in array.addressable_shards if s.replica_id == 0}
    indices = distinct_indices(array.sharding, shape)
    if len(indices) == 1 or math.prod(shape) == 0:
        data = mine.get(whole(shape))
        return [(None, None if data is None else np.asarray(data))]
    return [(index, None if index not in mine else np.asarray(mine[index])) for index in indices]
