"""``save`` and ``restore``: a whole training state in one call each."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import architecture as arch
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import layout, storage
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
        CheckpointWriteError: the file system refused (read-only, disk full); nothing is committed.
    """
    path = Path(path)
    skeleton, leaves = tree_lib.encode(tree)
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


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A placeholder leaf for a target built from the manifest itself (restore with no ``like``)."""

    kind: str
    shape: tuple
    dtype: str
    python_type: str | None = None
    numpy_scalar: bool = False


def _spec(leaf: Any, path: str) -> tuple:
    """``(kind, shape, dtype)`` of a target leaf; kind is ``array``, ``key`` or ``python:<type>``."""
    if isinstance(leaf, _Spec):
        if leaf.kind == "python":
            return ("python:" + str(leaf.python_type), (), None)
        return ("array", leaf.shape, leaf.dtype)
    if type(leaf) in (bool, int, float):
        return ("python:" + type(leaf).__name__, (), None)
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return ("key", tuple(leaf.shape), str(leaf.dtype))
        return ("array", tuple(leaf.shape), np.dtype(leaf.dtype).name)
    raise TypeError(f"restore: `like` has a {type(leaf).__name__} at {path}; expected arrays, "
                    "jax.ShapeDtypeStruct, PRNG keys or Python numbers as leaves.")


def _found(entry: dict) -> tuple:
    if entry["kind"] == "python":
        return ("python:" + entry["python_type"], (), None)
    if entry["kind"] == "key":
        return ("key", tuple(entry["key_shape"]), entry["key_dtype"])
    return ("array", tuple(entry["shape"]), entry["dtype"])


def _show(spec: tuple) -> str:
    kind, shape, dtype = spec
    if kind.startswith("python:"):
        return f"a Python {kind[7:]}"
    dims = ",".join(map(str, shape))
    return f"{dtype}[{dims}]" if kind == "array" else f"a PRNG key {dtype}[{dims}]"


def _mismatches(targets: list[tuple[str, Any]], entries: dict[str, dict]) -> list[str]:
    problems = []
    for path, leaf in targets:
        expected = _spec(leaf, path)
        entry = entries.get(path)
        if entry is None:
            problems.append(f"{path}: expected {_show(expected)}, missing from the checkpoint")
        elif _found(entry) != expected:
            problems.append(f"{path}: expected {_show(expected)}, found {_show(_found(entry))}")
    wanted = {path for path, _ in targets}
    for path, entry in entries.items():
        if path not in wanted:
            problems.append(f"{path}: unexpected: the checkpoint has {_show(_found(entry))}, the target has nothing "
                            "here")
    return problems


def _convert(value: np.ndarray, entry: dict, target: Any, path: str, directory: Path) -> Any:
    kind = _spec(target, path)[0]
    if kind.startswith("python:"):
        return fmt.python_type(entry)(value.item())
    if kind == "key":
        return jax.random.wrap_key_data(jnp.asarray(value), impl=entry["key_impl"])
    if isinstance(target, np.generic) or (isinstance(target, _Spec) and target.numpy_scalar):
        return value[()]
    if isinstance(target, np.ndarray) or (isinstance(target, _Spec) and target.kind == "numpy"):
        return value
    if jax.dtypes.canonicalize_dtype(value.dtype) != value.dtype:
        raise CheckpointMismatchError(
            f"checkpoint {directory}: {path} is a {value.dtype} JAX array, but 64-bit types are disabled here "
            "and it would be truncated; enable them (jax.config.update('jax_enable_x64', True)) to restore it."
        )
    sharding = getattr(target, "sharding", None)
    return jax.device_put(value, sharding) if isinstance(sharding, jax.sharding.Sharding) else jax.device_put(value)


def _placeholder(entry: dict) -> Any:
    if entry["kind"] == "jax":
        return jax.ShapeDtypeStruct(tuple(entry["shape"]), fmt._DTYPES[entry["dtype"]])
    if entry["kind"] == "key":
        data = jax.ShapeDtypeStruct(tuple(entry["shape"]), np.uint32)
        return jax.eval_shape(functools.partial(jax.random.wrap_key_data, impl=entry["key_impl"]), data)
    return _Spec(entry["kind"], tuple(entry["shape"]), entry["dtype"], entry.get("python_type"),
                 entry.get("numpy_scalar") is True)


def _abstract_init(model: Layer, input_shape: Any) -> tuple[Any, Any]:
    def run(key: jax.Array) -> tuple[Any, Any]:
        _, params, state = model.init(key, input_shape)
        return params, state

    return jax.eval_shape(run, jax.random.key(0))


def _opt_state_init(optimizer: Any, saved: dict) -> Any:
    """``params -> opt_state`` in the saved layout: a train step's ``OptState`` (the optimizer's
    state beside the guard's counters) or the bare optax state of a hand-written loop."""
    from funcnet.training.guard import OptState

    if saved.get("t") == "namedtuple" and saved.get("name") == OptState.__name__:
        return lambda params: OptState.create(optimizer, params)
    return optimizer.init


def _target_from_manifest(manifest: dict, directory: Path, model: Layer | None, optimizer: Any) -> Any:
    """The target tree when no ``like`` is given: the saved structure, with params/state templates
    from ``model`` and an optimizer-state template from ``optimizer.init`` where given."""
    entries = {e["path"]: e for e in manifest["arrays"]}
    placeholders = {path: _placeholder(entry) for path, entry in entries.items()}
    skeleton = manifest["tree"]
    replace: dict[tuple, Any] = {}
    if model is not None:
        recorded = arch.input_spec(manifest.get("architecture"))
        if recorded is None:
            raise ValueError(f"restore: checkpoint {directory} records no input shape for the model; pass `like=` "
                             "instead of `model=`.")
        params, state = _abstract_init(model, recorded)
        for key, template in (("params", params), ("state", state)):
            if tree_lib.child(skeleton, key) is not None:
                replace[(key,)] = template
    if optimizer is not None:
        if tree_lib.child(skeleton, "opt_state") is None or tree_lib.child(skeleton, "params") is None:
            raise ValueError(f"restore: `optimizer=` needs a checkpoint with 'params' and 'opt_state' entries; "
                             f"{directory} has none.")
        params = replace.get(("params",))
        if params is None:
            params = tree_lib.build(tree_lib.child(skeleton, "params"), placeholders)
        replace[("opt_state",)] = jax.eval_shape(_opt_state_init(optimizer, tree_lib.child(skeleton, "opt_state")),
                                                 params)
    return tree_lib.build(skeleton, placeholders, replace)


def restore(
    path: str | Path,
    like: Any = None,
    *,
    model: Layer | None = None,
    optimizer: Any = None,
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
            return _restore_once(directory, like, model, optimizer)
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


def _restore_once(directory: Path, like: Any, model: Layer | None, optimizer: Any) -> Restored:
    """One attempt of :func:`restore`: fails if a writer replaces the checkpoint meanwhile."""
    if not directory.exists():
        # An overwriting save killed between its two renames leaves the previous checkpoint under a
        # hidden name; put it back (only leftovers of processes that are gone are touched).
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
    layout.check_manifest_files(directory)
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
        target = _target_from_manifest(manifest, directory, model, optimizer)
    else:
        if model is not None or optimizer is not None:
            raise ValueError("restore: pass either `like=` or `model=`/`optimizer=`, not both.")
        target = like
    targets, treedef = tree_lib.flatten_with_paths(target)
    problems = _mismatches(targets, entries)
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {directory} does not match the target ({len(problems)} difference"
            f"{'s' if len(problems) > 1 else ''}; nothing was loaded):\n  " + "\n  ".join(problems)
            + "\nHint: restore into the architecture, dtypes and optimizer that were saved; restore without `like=` "
            "to see what the checkpoint holds."
        )
    # Every file is read and verified before any value is handed on.
    layout.check_arrays_directory(directory)
    values = {p: _read_array(directory, entries[p]) for p, _ in targets}
    leaves = [_convert(values[p], entries[p], leaf, p, directory) for p, leaf in targets]
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    metadata = manifest["metadata"]
    if not isinstance(metadata, dict):
        raise CheckpointCorruptError(f"checkpoint {directory}: metadata is not an object.")
    return Restored(tree, metadata, directory, manifest, model)


def _read_array(directory: Path, entry: dict) -> np.ndarray:
    if "file" in entry:  # an entry a migration added carries its value inline
        layout.check_array_file(directory, entry["file"])
    return fmt.read_array(directory, entry)
