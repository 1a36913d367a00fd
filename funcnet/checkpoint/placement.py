"""Where restored arrays go: each leaf's target sharding, and the bytes each process reads for it.

A target sharding comes from the ``shardings=`` argument of :func:`funcnet.checkpoint.restore`
(one sharding for every JAX leaf, or a pytree like the target's with a sharding or None per leaf),
else from the ``like`` leaf's own ``.sharding`` (a ``jax.Array`` or a ``jax.ShapeDtypeStruct``
made with ``sharding=``). Shardings apply to JAX arrays and PRNG keys only; NumPy and Python
leaves stay on the host.

A sharding this process can hold whole (one process) gets the whole array, read and verified,
then placed with ``jax.device_put``. One spread over several processes is built with
``jax.make_array_from_callback``: each process reads only the files that overlap the parts its
own devices hold (every file read whole and its SHA-256 verified), so the device count and
layout of the restore are free of those of the save.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import shards

__all__ = ["LocalParts", "read", "target_shardings"]


class LocalParts:
    """The parts of one array that this process's devices hold under a sharding spread over processes.

    Attributes:
        shape: the global shape (for a PRNG key: its key data's, with the words axis).
        dtype: the NumPy dtype.
        sharding: the target sharding.
        parts: ``{index: np.ndarray}`` for each distinct part this process holds.
    """

    def __init__(self, shape: tuple, dtype: np.dtype, sharding: jax.sharding.Sharding,
                 parts: dict[shards.Index, np.ndarray]):
        self.shape, self.dtype, self.sharding, self.parts = shape, dtype, sharding, parts

    def global_array(self) -> jax.Array:
        """The global ``jax.Array`` (every process calls this, each with its own parts)."""
        return jax.make_array_from_callback(self.shape, self.sharding, self.part)

    def part(self, index: tuple) -> np.ndarray:
        """The part at ``index`` (a tuple of slices, as ``jax.make_array_from_callback`` asks)."""
        return self.parts[shards.normalize(index, self.shape)]


def target_shardings(targets: list[tuple[str, Any]], treedef: Any, shardings: Any) -> list[Any]:
    """Each target leaf's sharding (None: the default device, or the host for NumPy and Python leaves).

    Raises:
        ValueError: ``shardings`` is neither a sharding nor a pytree of the target's structure.
    """
    if shardings is None:
        given = [None] * len(targets)
    elif isinstance(shardings, jax.sharding.Sharding):
        given = [shardings] * len(targets)
    else:
        try:
            given = treedef.flatten_up_to(shardings)
        except (ValueError, TypeError) as error:
            raise ValueError(f"restore: `shardings` must be one jax.sharding.Sharding or a pytree of the target's "
                             f"structure with a Sharding or None per leaf: {error}") from None
    out = []
    for (path, leaf), sharding in zip(targets, given, strict=True):
        if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
            raise ValueError(f"restore: `shardings` has a {type(sharding).__name__} at {path}; expected a "
                             "jax.sharding.Sharding or None.")
        if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
            out.append(None)  # NumPy, Python and manifest placeholders of host leaves stay on the host
            continue
        own = getattr(leaf, "sharding", None)
        out.append(sharding if sharding is not None else own if isinstance(own, jax.sharding.Sharding) else None)
    return out


def read(directory: Path, entry: dict, sharding: jax.sharding.Sharding | None) -> np.ndarray | LocalParts:
    """The verified data of one entry for ``sharding``: the whole array, or this process's parts.

    Raises:
        CheckpointCorruptError: naming the file, as :func:`funcnet.checkpoint.format.read_array`.
    """
    if sharding is None or sharding.is_fully_addressable:
        return fmt.read_array(directory, entry)
    if "shards" not in entry:  # one file (or a migration's constant): read whole, keep this process's parts
        return _parts_of(fmt.read_array(directory, entry), entry, sharding)
    shape, dtype = tuple(entry["shape"]), fmt._DTYPES[entry["dtype"]]
    wanted = shards.local_indices(sharding, shape)
    pieces = [(tuple(map(tuple, s["index"])), s) for s in entry["shards"]]
    data = [(index, fmt.read_file(directory, record, entry)) for index, record in pieces
            if any(shards.overlap(index, region) is not None for region in wanted)]
    return LocalParts(shape, dtype, sharding, {region: shards.assemble(region, data, dtype) for region in wanted})


def _parts_of(value: np.ndarray, entry: dict, sharding: jax.sharding.Sharding) -> LocalParts:
    shape = tuple(entry["shape"])
    wanted = shards.local_indices(sharding, shape)
    return LocalParts(shape, value.dtype, sharding, {r: shards.assemble(r, [(shards.whole(shape), value)], value.dtype)
                                                     for r in wanted})
