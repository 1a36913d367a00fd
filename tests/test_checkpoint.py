"""Checkpoints: exact round trips, templates, the rebuilt model, integrity, mismatch reports, the manager.

Fault cases (crafted files, full or read-only disks, wrong inputs) are in test_bad_input.py; the
kill-while-saving test is in test_checkpoint_kill.py and exact resume in test_resume.py.
"""

from __future__ import annotations

import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet import checkpoint as ck
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import storage
from funcnet.core import Layer
from funcnet.training import TrainState
from tests.checkpoint_helpers import (
    INPUT_SHAPE,
    abstract_init,
    array_files,
    edit_manifest,
    entry_for,
    leaves_equal,
    optimizer,
    random_params,
    read_manifest,
    small_model,
    snapshot,
    train_state,
)


def mixed_tree():
    """Every kind of leaf and container a checkpoint holds."""
    return {
        "train": train_state(),
        "numpy": np.arange(6, dtype=np.int16).reshape(2, 3),
        "scalars": [3, 2.5, True, np.float64(1.25)],
        "bf16": jnp.linspace(-1, 1, 5, dtype=jnp.bfloat16),
        "empty": jnp.zeros((0, 4)),
        "keys": (jax.random.split(jax.random.key(1), 3), jax.random.key(2, impl="rbg")),
        "nothing": None,
    }


def test_round_trip_without_like_restores_structure_types_and_bits(tmp_path):
    tree = mixed_tree()
    ck.save(tmp_path / "c", tree, metadata={"epoch": 2, "batch_index": np.int64(7), "loss": np.float32(0.25)})
    restored = ck.restore(tmp_path / "c")
    assert leaves_equal(restored.tree, tree)
    # The original classes, not look-alikes: the optax and TrainState NamedTuples themselves.
    assert type(restored.tree["train"]) is TrainState
    assert jax.tree_util.tree_structure(restored.tree["train"].opt_state) == jax.tree_util.tree_structure(
        optimizer().init(tree["train"].params))
    assert restored.tree["scalars"][:3] == [3, 2.5, True] and type(restored.tree["scalars"][0]) is int
    assert isinstance(restored.tree["numpy"], np.ndarray) and isinstance(restored.tree["bf16"], jax.Array)
    assert restored.metadata == {"epoch": 2, "batch_index": 7, "loss": 0.25}
    manifest = restored.manifest
    assert manifest["format_version"] == ck.FORMAT_VERSION
    assert manifest["versions"]["jax"] == jax.__version__ and manifest["versions"]["optax"] == optax.__version__
    assert manifest["versions"]["funcnet"] == fn.__version__


def test_round_trip_into_like_concrete_or_abstract(tmp_path):
    tree = train_state()
    ck.save(tmp_path / "c", tree)
    other = train_state(seed=5)
    assert not leaves_equal(other, tree)
    assert leaves_equal(ck.restore(tmp_path / "c", like=other).tree, tree)
    abstract = jax.eval_shape(lambda: other)
    abstract = abstract._replace(step=0, epoch=0, batch=0)  # Python ints stay Python ints
    assert leaves_equal(ck.restore(tmp_path / "c", like=abstract).tree, tree)


def test_restore_with_model_and_optimizer_templates(tmp_path):
    model = small_model()
    params, state = random_params(model)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))
    tree = {"params": params, "state": state, "opt_state": tx.init(params), "step": 4}
    ck.save(tmp_path / "c", tree, model=model, input_shape=INPUT_SHAPE)
    restored = ck.restore(tmp_path / "c", model=model, optimizer=tx)
    assert leaves_equal(restored.tree, tree)
    assert restored.model is model
    # The templates check the checkpoint: a model of another width does not fit.
    with pytest.raises(ck.CheckpointMismatchError, match=r"\['params'\]\['dense_0'\]\['w'\]: expected float32\[3,5\], "
                                                          r"found float32\[3,4\]"):
        ck.restore(tmp_path / "c", model=small_model(width=5))


def test_restored_model_is_rebuilt_without_user_code(tmp_path):
    model = fn.serial(fn.Flatten(), small_model(), fn.LogSoftmax())
    input_shape = (None, 1, 3)
    params, state = random_params(model, input_shape=input_shape)
    ck.save(tmp_path / "c", {"params": params, "state": state}, model=model, input_shape=input_shape)
    restored = ck.restore(tmp_path / "c")
    assert restored.input_shape == input_shape
    rebuilt = restored.model
    assert rebuilt is not model and arch.describe(rebuilt) == arch.describe(model)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 1, 3)), jnp.float32)
    for train, key in ((False, None), (True, jax.random.key(3))):
        want = jax.jit(model.apply, static_argnames="train")(params, state, x, key=key, train=train)
        got = jax.jit(rebuilt.apply, static_argnames="train")(restored.tree["params"], restored.tree["state"], x,
                                                               key=key, train=train)
        assert leaves_equal(got, want)


def Doubler(name=None):
    """A user's custom layer: funcnet cannot know its code."""
    return Layer(lambda key, spec, context=None: (spec, {}, {}),
                 lambda p, s, x, key=None, train=False, context=None: (2 * x, s), "Doubler",
                 {}, (), name)


def test_custom_layer_saves_but_needs_the_model_to_rebuild(tmp_path):
    model = fn.serial(fn.Dense(2), Doubler())
    params, state = random_params(model)
    ck.save(tmp_path / "c", {"params": params, "state": state}, model=model, input_shape=INPUT_SHAPE)
    restored = ck.restore(tmp_path / "c")
    assert leaves_equal(restored.tree["params"], params)
    with pytest.raises(arch.ArchitectureError, match=r"'model/doubler_0' \(Doubler\).*pass the model explicitly"):
        restored.model  # noqa: B018
    assert ck.restore(tmp_path / "c", model=model).model is model


def test_saving_never_mutates_the_callers_tree(tmp_path):
    tree = mixed_tree()
    before = snapshot(tree)
    leaves_before = jax.tree_util.tree_leaves(tree)
    writable = tree["numpy"].flags.writeable
    ck.save(tmp_path / "c", tree)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(tree), leaves_before, strict=True))
    assert leaves_equal(snapshot(tree), before)
    assert tree["numpy"].flags.writeable == writable
    # The restored NumPy arrays are the checkpoint's own copies.
    restored = ck.restore(tmp_path / "c").tree
    restored["numpy"][0, 0] = 99
    assert tree["numpy"][0, 0] == 0


def test_architecture_mismatch_lists_every_path_before_loading(tmp_path, monkeypatch):
    saved = train_state(width=4)
    ck.save(tmp_path / "c", saved)
    # Wider first layer, an extra layer, and no BatchNorm: every difference is listed.
    model = fn.serial(fn.Dense(6, activation="relu"), fn.Dense(3), fn.Dense(2, name="head"))
    params, state = random_params(model)
    target = TrainState(params, state, optimizer().init(params), 0, 0, jax.random.key(0))
    reads = []
    monkeypatch.setattr(fmt, "read_array", lambda *a: reads.append(a))
    with pytest.raises(ck.CheckpointMismatchError) as info:
        ck.restore(tmp_path / "c", like=target)
    message = str(info.value)
    assert reads == []  # nothing was read, let alone loaded
    expected_lines = [
        ".params['dense_0']['w']: expected float32[3,6], found float32[3,4]",
        ".params['dense_0']['b']: expected float32[6], found float32[4]",
        ".params['dense_1']['w']: expected float32[6,3], missing from the checkpoint",
        ".params['head']['w']: expected float32[3,2], found float32[4,2]",
        ".params['batchnorm_0']['scale']: unexpected: the checkpoint has float32[4], the target has nothing here",
        ".state['batchnorm_0']['mean']: unexpected: the checkpoint has float32[4]",
    ]
    for line in expected_lines:
        assert line in message
    n_problems = message.count("\n  ")
    assert f"({n_problems} differences; nothing was loaded)" in message


def test_dtype_mismatch_is_reported_not_cast(tmp_path):
    params = {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32), "k": jax.random.key(0)}
    ck.save(tmp_path / "c", params)
    target = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.float32), "k": jax.random.key(0, impl="rbg")}
    with pytest.raises(ck.CheckpointMismatchError) as info:
        ck.restore(tmp_path / "c", like=target)
    assert "['w']: expected bfloat16[2,3], found float32[2,3]" in str(info.value)
    assert "['k']: expected a PRNG key key<rbg>[], found a PRNG key key<fry>[]" in str(info.value)
    assert "['b']" not in str(info.value)


def test_every_array_file_is_checked_by_sha256(tmp_path):
    tree = train_state()
    ck.save(tmp_path / "c", tree)
    rng = random.Random(0)
    for file in array_files(tmp_path / "c"):
        data = bytearray(file.read_bytes())
        if not data:
            continue
        original = bytes(data)
        position = rng.randrange(len(data) * 8)
        data[position // 8] ^= 1 << (position % 8)
        file.write_bytes(bytes(data))
        with pytest.raises(ck.CheckpointCorruptError, match=rf"{file.name}: its SHA-256 does not match the manifest"):
            ck.restore(tmp_path / "c")
        file.write_bytes(original)
    assert leaves_equal(ck.restore(tmp_path / "c").tree, tree)


def test_truncated_and_missing_files_are_named(tmp_path):
    ck.save(tmp_path / "c", {"w": jnp.arange(10.0)})
    file = array_files(tmp_path / "c")[0]
    data = file.read_bytes()
    for cut, got in ((len(data) // 2, 20), (len(data) - 1, 39), (0, 0)):
        file.write_bytes(data[:cut])
        with pytest.raises(ck.CheckpointCorruptError,
                           match=rf"arrays/{file.name}: truncated: expected 40 bytes, got {got} \(array \['w'\]\)"):
            ck.restore(tmp_path / "c")
    file.unlink()
    with pytest.raises(ck.CheckpointCorruptError, match=rf"arrays/{file.name}: missing"):
        ck.restore(tmp_path / "c")


def test_a_flipped_bit_in_the_manifest_is_detected(tmp_path):
    ck.save(tmp_path / "c", {"w": jnp.arange(3.0)}, metadata={"step": 1000})
    path = tmp_path / "c" / "manifest.json"
    data = path.read_bytes().replace(b'"step": 1000', b'"step": 1001')
    path.write_bytes(data)
    with pytest.raises(ck.CheckpointCorruptError, match=r"manifest.json: its SHA-256 does not match"):
        ck.restore(tmp_path / "c")


def test_jax_version_change_warns(tmp_path):
    ck.save(tmp_path / "c", {"w": jnp.arange(3.0)})
    edit_manifest(tmp_path / "c", lambda m: m["versions"].update(jax="0.0.1"))
    with pytest.warns(RuntimeWarning, match=r"other versions \(jax 0.0.1 -> .*may not be bit-identical"):
        ck.restore(tmp_path / "c")


def test_existing_checkpoint_needs_overwrite(tmp_path):
    ck.save(tmp_path / "c", {"w": jnp.zeros(2)})
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True"):
        ck.save(tmp_path / "c", {"w": jnp.ones(2)})
    ck.save(tmp_path / "c", {"w": jnp.ones(3)}, overwrite=True)
    assert ck.restore(tmp_path / "c").tree["w"].tolist() == [1, 1, 1]
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_an_overwrite_interrupted_between_its_renames_is_recovered(tmp_path):
    ck.save(tmp_path / "c", {"w": jnp.arange(3.0)})
    # What a kill between "move the old one aside" and "move the new one in" leaves behind.
    os.rename(tmp_path / "c", tmp_path / ".c.old-999999999-0badc0de")
    os.mkdir(tmp_path / ".c.tmp-999999999-0badc0df")
    assert sorted(storage.clean_stale(tmp_path)) == [tmp_path / ".c.old-999999999-0badc0de",
                                                      tmp_path / ".c.tmp-999999999-0badc0df"]
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert ck.restore(tmp_path / "c").tree["w"].tolist() == [0, 1, 2]
    # restore does the same recovery itself when the checkpoint is missing.
    os.rename(tmp_path / "c", tmp_path / ".c.old-999999999-0badc0de")
    assert ck.restore(tmp_path / "c").tree["w"].tolist() == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_leftovers_are_cleaned_at_the_next_start_but_not_a_live_save(tmp_path):
    live = tmp_path / f".c.tmp-{os.getpid()}-01234567"
    dead = [tmp_path / ".c.tmp-999999999-89abcdef", tmp_path / ".d.del-999999998-89abcdef"]
    for path in [live, *dead]:
        path.mkdir()
        (path / "partial.bin").write_bytes(b"x" * 10)
    ck.save(tmp_path / "c", {"w": jnp.zeros(1)})  # cleans leftovers of "c" only
    assert not dead[0].exists() and dead[1].exists() and live.exists()
    ck.CheckpointManager(tmp_path)  # cleans the whole directory
    assert not dead[1].exists() and live.exists()


def test_restoring_an_unfinished_save_is_refused(tmp_path):
    with pytest.raises(ck.CheckpointNotFoundError, match=r"no checkpoint at .*nowhere"):
        ck.restore(tmp_path / "nowhere")
    (tmp_path / ".c.tmp-999999999-01234567").mkdir()
    with pytest.raises(ck.CheckpointNotFoundError, match=r"unfinished save's temporary directory"):
        ck.restore(tmp_path / ".c.tmp-999999999-01234567")


# ------------------------------------------------------------------------------------------------
# The manager


def tree_for(step: int):
    return {"w": np.full((2, 2), step, np.float32), "step": step}


def test_manager_keeps_the_last_n_and_the_best(tmp_path):
    manager = ck.CheckpointManager(tmp_path, max_to_keep=2, best_metric="val_loss", best_mode="min")
    losses = {10: 0.5, 20: 0.1, 30: 0.7, 40: 0.9, 50: 0.3, 60: 0.05}
    kept = []
    for step, loss in losses.items():
        manager.save(step, tree_for(step), metrics={"val_loss": loss})
        kept.append(manager.steps())
    assert kept == [[10], [10, 20], [20, 30], [20, 30, 40], [20, 40, 50], [50, 60]]
    assert manager.latest() == 60 and manager.best() == 60
    restored = manager.restore_latest()
    assert restored.metadata["step"] == 60 and restored.metadata["metrics"] == {"val_loss": 0.05}
    assert restored.tree["w"][0, 0] == 60
    assert manager.restore(50).tree["step"] == 50
    assert sorted(os.listdir(tmp_path)) == ["step_000000050", "step_000000060"]


def test_manager_max_mode_and_keep_all(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "a", max_to_keep=1, best_metric="acc", best_mode="max")
    for step, acc in ((1, 0.2), (2, 0.9), (3, 0.5)):
        manager.save(step, tree_for(step), metrics={"acc": acc})
    assert manager.steps() == [2, 3] and manager.best() == 2
    keep_all = ck.CheckpointManager(tmp_path / "b", max_to_keep=None)
    for step in range(4):
        keep_all.save(step, tree_for(step))
    assert keep_all.steps() == [0, 1, 2, 3]


def test_manager_never_deletes_before_the_new_checkpoint_is_committed(tmp_path, monkeypatch):
    manager = ck.CheckpointManager(tmp_path, max_to_keep=1)
    manager.save(1, tree_for(1))

    def full_disk(path, chunks):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(storage, "write_file", full_disk)
    with pytest.raises(ck.CheckpointWriteError, match="No space left on device"):
        manager.save(2, tree_for(2))
    assert manager.steps() == [1] and sorted(os.listdir(tmp_path)) == ["step_000000001"]
    assert manager.restore_latest().tree["w"][0, 0] == 1


def test_manager_restore_latest_is_loud_about_corruption(tmp_path):
    manager = ck.CheckpointManager(tmp_path, max_to_keep=3)
    assert manager.latest() is None and manager.restore_latest() is None
    for step in (1, 2):
        manager.save(step, tree_for(step))
    array_files(manager.path(2))[0].write_bytes(b"\0" * 16)
    with pytest.raises(ck.CheckpointCorruptError, match=r"step_000000002/arrays/000000.bin: its SHA-256"):
        manager.restore_latest()
    with pytest.warns(RuntimeWarning, match=r"skipping corrupt checkpoint .*step_000000002"):
        restored = manager.restore_latest(fallback=True)
    assert restored.metadata["step"] == 1


def test_manager_lists_only_committed_checkpoints(tmp_path):
    manager = ck.CheckpointManager(tmp_path)
    manager.save(3, tree_for(3))
    os.mkdir(tmp_path / f".step_000000004.tmp-{os.getpid()}-01234567")  # a save in progress
    os.mkdir(tmp_path / "step_000000005")  # not a checkpoint: no manifest
    (tmp_path / "notes.txt").write_text("hi")
    assert manager.steps() == [3] and manager.latest() == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_to_keep": 0}, r"`max_to_keep` must be a positive integer or None, got 0"),
    ({"best_mode": "biggest"}, r"`best_mode` must be 'min' or 'max', got 'biggest'"),
])
def test_manager_bad_config(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ck.CheckpointManager(tmp_path, **kwargs)


def test_manager_rejects_bad_steps(tmp_path):
    manager = ck.CheckpointManager(tmp_path)
    for step in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="step must be a non-negative integer"):
            manager.save(step, tree_for(0))
    manager.save(np.int64(7), tree_for(7))
    manager.save(jnp.asarray(8), tree_for(8))
    assert manager.steps() == [7, 8]


def test_manifest_records_what_the_issue_asks_for(tmp_path):
    model = small_model()
    state = train_state()
    ck.save(tmp_path / "c", state, metadata={"epoch": state.epoch, "batch_index": 0}, model=model,
            input_shape=INPUT_SHAPE)
    manifest = read_manifest(tmp_path / "c")
    assert set(manifest["versions"]) >= {"funcnet", "jax", "jaxlib", "optax"}
    assert manifest["architecture"]["model"] == arch.describe(model)
    key_entry = entry_for(tmp_path / "c", ".key")
    assert key_entry["kind"] == "key" and key_entry["key_impl"] == "threefry2x32" and key_entry["shape"] == [2]
    assert all(len(entry["sha256"]) == 64 for entry in manifest["arrays"])
    params_paths = {e["path"] for e in manifest["arrays"] if e["path"].startswith(".params")}
    assert params_paths == {".params['dense_0']['w']", ".params['dense_0']['b']", ".params['batchnorm_0']['scale']",
                            ".params['batchnorm_0']['bias']", ".params['head']['w']", ".params['head']['b']"}
    assert jax.tree_util.tree_structure(abstract_init(model)) == jax.tree_util.tree_structure(
        (state.params, state.state))


# ------------------------------------------------------------------------------------------------
# Inside fit


def test_checkpoint_callback_saves_every_n_epochs_and_the_last(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3)).astype(np.float32), rng.integers(0, 2, 12).astype(np.int32)
    model = small_model()
    params, state = random_params(model)
    callback = ck.CheckpointCallback(tmp_path, every_epochs=2, max_to_keep=None, model=model,
                                     input_shape=INPUT_SHAPE)
    result = fn.fit(model, params, state, x, y, loss="sparse_categorical_crossentropy", optimizer="sgd",
                    batch_size=4, epochs=3, verbose=0, mode="step", callbacks=[callback])
    manager = callback.manager
    assert manager.steps() == [6, 9]  # after epoch 2 (3 steps an epoch), and after the last one
    last = manager.restore(9)
    assert type(last.tree) is TrainState and (last.tree.step, last.tree.epoch) == (9, 3)
    assert last.metadata["epoch"] == 3 and last.metadata["history"]["loss"] == result.history["loss"]
    assert leaves_equal(last.tree.params, result.params)
    assert arch.describe(last.model) == arch.describe(model)
    # A new callback on the same directory picks up the state and the history.
    again = ck.CheckpointCallback(tmp_path)
    resumed = again.restore_latest()
    assert resumed.epoch == 3 and again.history["loss"] == result.history["loss"]
    with pytest.raises(ValueError, match=r"`every_epochs` must be a positive integer or None, got 0"):
        ck.CheckpointCallback(tmp_path, every_epochs=0)
