"""``save`` and ``restore``: a whole training state in one call each."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from pathlib import Path
from typing import Any

import jax

from funcnet import architecture as arch
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import layout, multihost, placement, storage
from funcnet.checkpoint import targets as target_lib
from funcnet.checkpoint import tree as tree_lib
from funcnet.checkpoint.errors import (
    CheckpointBusyError,
    CheckpointCorruptError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)
from funcnet.core import Layer

#: How many more times :func:`restore` reads a checkpoint that another process replaced while it
#: was read, pausing ``RETRY_PAUSE_S``, then twice as long each time (0.31 s in all).
RETRIES = 5
RETRY_PAUSE_S = 0.01


def save(
    path: str | Path,
    tree: Any,
    *,
    metadata: dict[str, Any] | None = None,
    model: Layer | None = None,
    input_shape: Any = None,
    overwrite: bool = False,
) -> Path:
    """Saves ``tree`` (params, layer state, optimizer state, step, key, ...) as a checkpoint directory.

    The save is atomic: the checkpoint is written to a hidden temporary directory beside ``path``,
    flushed to disk and renamed; a crash leaves the previous state intact (see
    :mod:`funcnet.checkpoint.storage`). ``tree`` is only read, never modified.

    Arrays on several devices of this process are saved whole, as from one device. In a run of
    several processes (``jax.distributed``) every process must call ``save`` with the same tree:
    each writes the shards it holds of the arrays spread over processes, and process 0 writes the
    leaves every process holds whole (NumPy arrays, Python numbers, process-local JAX arrays:
    they must be equal in all processes) and commits (:mod:`funcnet.checkpoint.multihost`).

    Args:
        path: the checkpoint directory to create.
        tree: a pytree of dicts, lists, tuples, NamedTuples (optax states) and None, with JAX or
            NumPy arrays, typed PRNG keys (stored as ``jax.random.key_data`` plus the impl) and
            Python numbers as leaves. A train-state-like tree with entries ``params``, ``state``
            and ``opt_state`` lets :func:`restore` rebuild templates from a model and optimizer.
        metadata: JSON-able facts to keep with it: ``step``, the data position (``epoch``,
            ``batch_index``), metrics. NumPy and 0-d JAX scalars are converted.
        model: the model, recorded as an architecture description (:mod:`funcnet.architecture`)
            from which :func:`restore` can rebuild it with no user code. Models with custom
            layers are recorded too; only rebuilding them needs the code.
        input_shape: the model's input spec (:func:`funcnet.spec`, any pytree of them) or shape (batch
            axis included, read as float32), recorded with it.
        overwrite: replace an existing checkpoint at ``path`` (atomically, too). Only a funcnet
            checkpoint (or an empty directory) is replaced: a folder holding other files, a
            regular file or a link at ``path`` is an error and is left untouched.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: naming the tree path of a value that cannot be stored (a string, an object
            array, a custom pytree node), or for metadata that is not JSON.
        FileExistsError: ``path`` exists and ``overwrite`` is false, or ``path`` is not a funcnet
            checkpoint (the message says why); nothing is touched.
        CheckpointWriteError: the file system refused (read-only, disk full), in any of the
            processes; nothing is committed.
    """
    path = Path(path)
    skeleton, leaves = tree_lib.encode(tree)  # every process checks the same tree: errors are raised in all
    records = [fmt.leaf_record(leaf_path, leaf) for leaf_path, leaf in leaves]
    if input_shape is not None and model is None:
        raise ValueError("save: `input_shape` describes the model; pass `model=` with it.")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save: `metadata` must be a dict, got {type(metadata).__name__}.")
    manifest = {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "versions": fmt.versions(),
        "backend": jax.default_backend(),
        "created": time.time(),
        "metadata": metadata or {},
        "architecture": arch.document(model, input_shape) if model is not None else None,
        "tree": skeleton,
        "arrays": [],
    }
    try:
        fmt.dumps(manifest)
    except (TypeError, ValueError) as error:
        raise TypeError(f"save: `metadata` must hold JSON values (numbers, strings, lists, dicts): {error}.") from error

    if jax.process_count() > 1:
        multihost.commit(path, records, manifest, overwrite=overwrite)
        return path

    def write(directory: Path) -> None:
        manifest["arrays"] = fmt.write_arrays(directory, records)
        fmt.write_manifest(directory, manifest)

    storage.commit_directory(path, write, overwrite=overwrite)
    return path


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :func:`restore` returns.

    Attributes:
        tree: the saved pytree, in ``like``'s structure when one was given.
        metadata: the caller's metadata (``step``, ``epoch``, ``batch_index``, metrics).
        path: the checkpoint directory.
        manifest: everything else recorded: ``versions``, ``backend``, ``format_version``,
            ``architecture``, per-array ``sha256``.
    """

    tree: Any
    metadata: dict[str, Any]
    path: Path
    manifest: dict[str, Any] = dataclasses.field(repr=False)
    _model: Layer | None = dataclasses.field(default=None, repr=False)

    @property
    def input_spec(self) -> Any:
        """The model's recorded input spec, if any (None otherwise)."""
        return arch.input_spec(self.manifest.get("architecture"))

    @property
    def input_shape(self) -> Any:
        """The recorded input's shape (``(None, 784)``) for a model of one input, else its spec."""
        recorded = self.input_spec
        return tuple(recorded.shape) if isinstance(recorded, jax.ShapeDtypeStruct) else recorded

    @functools.cached_property
    def model(self) -> Layer | None:
        """The model: the one passed to :func:`restore`, else rebuilt from the description (None if
        none was saved).

        Raises:
            funcnet.architecture.ArchitectureError: the model has layers funcnet cannot rebuild
                (custom layers, activations given as functions); pass ``model=`` to restore.
        """
        if self._model is not None:
            return self._model
        description = self.manifest.get("architecture")
        return None if description is None else arch.rebuild(description)


def restore(
    path: str | Path,
    like: Any = None,
    *,
    model: Layer | None = None,
    optimizer: Any = None,
    shardings: Any = None,
) -> Restored:
    """Loads a checkpoint written by :func:`save`, after checking everything it can first.

    Order of checks: the manifest (a regular file, never a link; size, SHA-256, JSON, format
    version, every entry), then the target's structure against it (every mismatching path is
    listed, nothing is loaded yet), then every array file's kind, size and SHA-256; only then are
    arrays handed to JAX. Nothing in the checkpoint is executed or imported, and no link inside it
    is followed (see :mod:`funcnet.checkpoint.layout`).

    A checkpoint that another process replaces or deletes while it is read is read again (up to
    :data:`RETRIES` times): the result is a whole checkpoint, the old one or the new one, never a
    mix, and such a race is never reported as corruption.

    Args:
        path: a checkpoint directory.
        like: a target pytree (arrays or ``jax.ShapeDtypeStruct`` objects, e.g. from
            ``jax.eval_shape``): the result has its exact structure and container types (optax
            NamedTuples included), NumPy leaves stay NumPy, JAX leaves follow its sharding.
        model: without ``like``: params/state templates come from this model's ``init``
            (checking the checkpoint fits it), and :attr:`Restored.model` returns it. Needed
            for models with custom layers.
        optimizer: without ``like``: an optax ``GradientTransformation`` (from
            ``make_optimizer`` with the train step's arguments); the optimizer state is restored
            into the structure of ``funcnet.training.init_opt_state(params, optimizer)`` (an
            ``OptState``) when it was saved as one, else of ``optimizer.init(params)``.
        shardings: where JAX leaves go: one ``jax.sharding.Sharding`` for all of them, or a
            pytree of the target's structure with a sharding or None per leaf (e.g.
            ``fn.sharding.param_shardings(like, mesh)``); None takes each ``like`` leaf's ``.sharding``, else
            the default device. Any device count and layout, whatever the saved one; with a
            sharding spread over processes, each process reads only the files its devices need
            (call ``restore`` in every process).

    Without ``like``, the structure is the saved one: dicts, lists, tuples, and NamedTuples as
    their original optax/funcnet classes (a stand-in NamedTuple for other classes).

    Returns:
        A :class:`Restored`: ``tree``, ``metadata``, ``model``, ``manifest``.

    Raises:
        CheckpointNotFoundError: no checkpoint at ``path``.
        CheckpointCorruptError: naming the file: missing, truncated, failed SHA-256, malformed or
            crafted, or a symbolic link, FIFO or other special file in place of one.
        CheckpointBusyError: another process kept replacing the checkpoint while it was read; try
            again.
        CheckpointVersionError: written in a newer format.
        CheckpointMismatchError: the target differs; lists every path with expected vs found.
    """
    directory = Path(path)
    attempt = 0
    while True:
        before = storage.identity(directory)
        try:
            return _restore_once(directory, like, model, optimizer, shardings)
        except (CheckpointCorruptError, CheckpointNotFoundError, FileNotFoundError, NotADirectoryError) as error:
            writer = storage.live_writer(directory)
            if storage.identity(directory) == before and writer is None:
                raise  # nothing changed while it was read: the failure is the checkpoint's own
            if attempt == RETRIES:
                by = f" (process {writer})" if writer is not None else ""
                raise CheckpointBusyError(
                    f"checkpoint {directory} is being written: another process{by} replaced or deleted it while it "
                    f"was read, {RETRIES + 1} times; nothing was loaded. Try again in a moment.") from error
        time.sleep(RETRY_PAUSE_S * 2**attempt)
        attempt += 1


def _restore_once(directory: Path, like: Any, model: Layer | None, optimizer: Any, shardings: Any) -> Restored:
    """One attempt of :func:`restore`: fails if a writer replaces the checkpoint meanwhile."""
    if not directory.exists() and jax.process_index() == 0:
        # An overwriting save killed between its two renames leaves the previous checkpoint under a
        # hidden name; put it back (only leftovers of processes that are gone are touched; only by
        # process 0, the only writer of a multi-process run, whose process ids these are).
        try:
            storage.clean_stale(directory.parent, directory.name)
        except OSError:
            pass
    if not directory.is_dir():
        hint = ""
        if storage.is_hidden(directory.name):
            hint = " (this is an unfinished save's temporary directory, not a checkpoint)"
        raise CheckpointNotFoundError(f"no checkpoint at {directory}{hint}.")
    if storage.is_hidden(directory.name):
        raise CheckpointNotFoundError(f"{directory} is an unfinished save's temporary directory, not a checkpoint.")
    manifest = fmt.read_manifest(directory)
    storage.reached("manifest-read", directory)
    saved = manifest["versions"]
    current = fmt.versions()
    changed = [f"{name} {saved.get(name)} -> {current[name]}" for name in ("jax", "jaxlib")
               if saved.get(name) != current[name]]
    if changed:
        warnings.warn(f"checkpoint {directory} was written with other versions ({', '.join(changed)}): random streams "
                      "and numerics may differ, so resumed training may not be bit-identical.", RuntimeWarning,
                      stacklevel=3)
    entries = {e["path"]: e for e in manifest["arrays"]}
    if like is None:
        target = target_lib.target_from_manifest(manifest, directory, model, optimizer)
    else:
        if model is not None or optimizer is not None:
            raise ValueError("restore: pass either `like=` or `model=`/`optimizer=`, not both.")
        target = like
    targets, treedef = tree_lib.flatten_with_paths(target)
    problems = target_lib.mismatches(targets, entries)
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {directory} does not match the target ({len(problems)} difference"
            f"{'s' if len(problems) > 1 else ''}; nothing was loaded):\n  " + "\n  ".join(problems)
            + "\nHint: restore into the architecture, dtypes and optimizer that were saved; restore without `like=` "
            "to see what the checkpoint holds."
        )
    # Every file is read and verified before any value is handed on.
    places = placement.target_shardings(targets, treedef, shardings)
    layout.check_arrays_directory(directory)
    values = {p: placement.read(directory, entries[p], place) for (p, _), place in zip(targets, places, strict=True)}
    leaves = [target_lib.convert(values[p], entries[p], leaf, p, directory, place)
              for (p, leaf), place in zip(targets, places, strict=True)]
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    metadata = manifest["metadata"]
    if not isinstance(metadata, dict):
        raise CheckpointCorruptError(f"checkpoint {directory}: metadata is not an object.")
    return Restored(tree, metadata, directory, manifest, model)
