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
(docs: "Safety and concurrency").

Why not orbax-checkpoint for the storage. Orbax (0.12.8, tried first) does give atomic commits,
but it could not meet the other requirements without re-implementing them around it: a flipped
bit in its compressed OCDBT data files loaded silently wrong values (it keeps no per-array
checksum); a truncated or crafted data file surfaced as a TensorStore error several screens long
that names an internal spec, not the damaged file, and several arrays share one data file, so a
per-file message is impossible; it casts dtypes silently on restore; and a crafted binary is
parsed by C++ code whose rejection we cannot specify or test. The format here is small (one JSON
manifest, one raw little-endian file per array), every byte read is checked, and every failure
names the file. Orbax remains the right tool for multi-host sharded arrays, which this format
refuses with a message saying so.
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
