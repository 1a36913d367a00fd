"""What a restore loads into: the target tree, and how each saved entry is checked against it.

:func:`target_from_manifest` builds the target when the caller gives no ``like=`` (the saved
structure, with templates from a model and an optimizer where given); :func:`mismatches` lists
every difference between a target and the saved entries; :func:`convert` turns a verified array
into the target leaf's type.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np

from funcnet import architecture as arch
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import placement
from funcnet.checkpoint import tree as tree_lib
from funcnet.checkpoint.errors import CheckpointMismatchError
from funcnet.core import Layer

__all__ = ["convert", "mismatches", "target_from_manifest"]


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


def mismatches(targets: list[tuple[str, Any]], entries: dict[str, dict]) -> list[str]:
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


def convert(value: Any, entry: dict, target: Any, path: str, directory: Path,
            sharding: jax.sharding.Sharding | None = None) -> Any:
    """A verified value (a NumPy array, or this process's parts of it) as the target leaf's type, placed
    with ``sharding`` (None: the default device) when it is a JAX array or key."""
    kind = _spec(target, path)[0]
    if kind.startswith("python:"):
        return fmt.python_type(entry)(value.item())
    if isinstance(target, np.generic) or (isinstance(target, _Spec) and target.numpy_scalar):
        return value[()]
    if isinstance(target, np.ndarray) or (isinstance(target, _Spec) and target.kind == "numpy"):
        return value
    dtype = np.dtype(value.dtype)
    if kind != "key" and jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise CheckpointMismatchError(
            f"checkpoint {directory}: {path} is a {dtype} JAX array, but 64-bit types are disabled here "
            "and it would be truncated; enable them (jax.config.update('jax_enable_x64', True)) to restore it."
        )
    if isinstance(value, placement.LocalParts):
        array = value.global_array()
    else:
        array = jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)
    return jax.random.wrap_key_data(array, impl=entry["key_impl"]) if kind == "key" else array


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


def target_from_manifest(manifest: dict, directory: Path, model: Layer | None, optimizer: Any) -> Any:
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
