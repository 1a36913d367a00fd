"""Checkpoints: the whole training state saved and restored in one call each, safely.

::

    from funcnet import checkpoint

    checkpoint.save("runs/ckpt", {"params": params, "state": state, "opt_state": opt_state,
                                  "step": step, "key": key},
                    metadata={"epoch": 3, "batch_index": 120}, model=model, input_shape=(None, 784))
    restored = checkpoint.restore("runs/ckpt", optimizer=optimizer)   # or like=<a template tree>
    restored.tree["opt_state"], restored.metadata["epoch"], restored.model   # model rebuilt, no user code

    manager = checkpoint.CheckpointManager("runs/ckpts", max_to_keep=3)
    manager.save(step, tree, metadata=...)
    latest = manager.restore_latest(like=tree)

    ckpt = checkpoint.CheckpointCallback("runs/fit", every_epochs=1)    # inside fit
    resume = ckpt.restore_latest()                                      # None on the first run
    fit(model, None if resume else params, None if resume else state, x, y, epochs=10,
        callbacks=[ckpt], resume=resume)

Guarantees (each has a test): loading never executes code (a JSON manifest and raw array bytes;
no pickle, no ``np.load``, no imports by name); a save is atomic (temporary directory, ``fsync``,
rename; leftovers are cleaned at the next start); each array's SHA-256 is checked on load and a
flipped bit or truncated file is an error naming the file; restoring into a different
architecture or dtype lists every mismatching path before anything is loaded; saving never
modifies the caller's arrays; a newer format version is a clear error; ``overwrite=True``
replaces only a funcnet checkpoint, never a folder or file of the user's; no link or special file
inside a checkpoint is followed or read (:mod:`funcnet.checkpoint.layout`); a restore racing a
writer returns a whole checkpoint or :class:`CheckpointBusyError`, never a false corruption report
(docs: "Safety and concurrency"); every guarantee holds for each shard of a sharded array.

Many devices and processes: an array on several devices of one process is saved whole (the
checkpoint is the same as from one device); in a ``jax.distributed`` run every process calls
``save`` with the same tree, each writes the shards it holds of the arrays spread over processes,
and process 0 commits (:mod:`funcnet.checkpoint.multihost`). ``restore(..., shardings=...)`` (or
``like`` leaves with shardings) places the arrays on any device count and layout, each process
reading only what its devices hold (:mod:`funcnet.checkpoint.placement`)::

    restored = checkpoint.restore("runs/ckpt", like=state,
                                  shardings=fn.sharding.param_shardings(state, mesh, param_sharding="fsdp"))

Why not orbax-checkpoint for the storage. Orbax (0.12.8, tried first) does give atomic commits,
but it could not meet the other requirements without re-implementing them around it: a flipped
bit in its compressed OCDBT data files loaded silently wrong values (it keeps no per-array
checksum); a truncated or crafted data file surfaced as a TensorStore error several screens long
that names an internal spec, not the damaged file, and several arrays share one data file, so a
per-file message is impossible; it casts dtypes silently on restore; and a crafted binary is
parsed by C++ code whose rejection we cannot specify or test. The format here is small (one JSON
manifest, one raw little-endian file per array), every byte read is checked, and every failure
names the file. Arrays spread over processes are saved as one file per distinct shard, each with
its checksum (:mod:`funcnet.checkpoint.shards`), which keeps those guarantees; orbax remains the
tool for asynchronous saves and for arrays too large for one file per shard.
"""

from funcnet.checkpoint.callback import CheckpointCallback
from funcnet.checkpoint.errors import (
    CheckpointBusyError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    CheckpointWriteError,
)
from funcnet.checkpoint.format import FORMAT_VERSION
from funcnet.checkpoint.io import Restored, restore, save
from funcnet.checkpoint.manager import CheckpointManager
from funcnet.checkpoint.storage import clean_stale

__all__ = [
    "FORMAT_VERSION",
    "CheckpointBusyError",
    "CheckpointCallback",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointVersionError",
    "CheckpointWriteError",
    "Restored",
    "clean_stale",
    "restore",
    "save",
]
