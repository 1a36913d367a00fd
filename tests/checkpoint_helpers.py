"""Shared pieces for the checkpoint tests: a small training state and ways to damage a checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcnet as fn
from funcnet.training import TrainState, make_optimizer

INPUT_SHAPE = (None, 3)


def small_model(width: int = 4) -> fn.Layer:
    return fn.serial(fn.Dense(width, activation="relu"), fn.BatchNorm(), fn.Dropout(0.2), fn.Dense(2, name="head"))


def abstract_init(model, input_shape=INPUT_SHAPE):
    def run(key):
        _, params, state = model.init(key, input_shape)
        return params, state

    return jax.eval_shape(run, jax.random.key(0))


def random_params(model, seed: int = 0, input_shape=INPUT_SHAPE):
    """Params and state with random values (no eager init: it compiles every initializer)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype),
                                  abstract_init(model, input_shape))


def optimizer():
    return make_optimizer("adamw", learning_rate=1e-2, freeze="dense_*")


def train_state(seed: int = 0, width: int = 4) -> TrainState:
    """A TrainState with non-trivial values everywhere, optax NamedTuples included."""
    model = small_model(width)
    params, state = random_params(model, seed)
    tx = optimizer()
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed + 1)
    opt_state = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 3, a.dtype)
                                       if jnp.issubdtype(a.dtype, jnp.floating) else a + 5, opt_state)
    return TrainState(params, state, opt_state, step=17, epoch=2, key=jax.random.key(seed + 42))


def leaves_equal(a, b) -> bool:
    """Bit-identical leaves and identical structure and leaf types (typed keys compared by data)."""
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if type(x) is not type(y) and not (isinstance(x, jax.Array) and isinstance(y, jax.Array)):
            return False
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            if x.dtype != y.dtype:
                return False
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


def snapshot(tree):
    """Host copies of every leaf, to check later that nothing changed."""
    return jax.tree_util.tree_map(
        lambda x: np.array(jax.random.key_data(x)) if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key) else (np.array(x) if hasattr(x, "shape") else x), tree)


def read_manifest(path: Path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def write_manifest(path: Path, manifest: dict | bytes) -> None:
    """Writes a (crafted) manifest with a matching checksum, as an attacker could."""
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (Path(path) / "manifest.json").write_bytes(data)
    (Path(path) / "manifest.json.sha256").write_text(hashlib.sha256(data).hexdigest())


def edit_manifest(path: Path, edit) -> None:
    manifest = read_manifest(path)
    edit(manifest)
    write_manifest(path, manifest)


def array_files(path: Path) -> list[Path]:
    return sorted((Path(path) / "arrays").iterdir())


def entry_for(path: Path, tree_path: str) -> dict:
    return next(e for e in read_manifest(path)["arrays"] if e["path"] == tree_path)
