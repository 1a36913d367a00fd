"""The bad-input and fault battery: every case is a clear error (matched on its message) or a
documented handling, and nothing already saved is lost.

Numbers in the comments refer to the fault table in ../shared/notes/reliability.md, section 6.
Layer and loss cases use the public API of funcnet.core's layers, funcnet.losses and
funcnet.training; checkpoint cases use funcnet.checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import checkpoint as ck
from funcnet import losses
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import storage
from funcnet.training import NonFiniteError, check_labels, fit, get_optimizer, make_optimizer
from tests.checkpoint_helpers import (
    array_files,
    edit_manifest,
    leaves_equal,
    snapshot,
    train_state,
    write_manifest,
)

# ================================================================================================
# Layers: shapes, ranks, dtypes, parameters


def mlp():
    return fn.serial(fn.Dense(8, activation="relu"), fn.Dense(3, name="head"))


def mlp_params(input_dim=6, seed=0):
    rng = np.random.default_rng(seed)
    model = mlp()
    params = jax.eval_shape(lambda k: model.init(k, (None, input_dim))[1], jax.random.key(0))
    return model, jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), params)


def test_dense_applied_to_the_wrong_feature_count():  # 1
    model, params = mlp_params(input_dim=6)
    with pytest.raises(fn.ShapeError, match=r"Layer 'dense_0' \(Dense, position 0 .*built for inputs of shape "
                                            r"\(N, 6\).*got \(4, 5\)"):
        model.apply(params, {}, jnp.ones((4, 5)))


def test_images_into_an_mlp_without_flatten_hint():  # 2
    with pytest.raises(fn.ShapeError, match=r"expected input of rank 2.*got shape \(N, 28, 28, 1\)"
                                            r"[\s\S]*Hint: add Flatten\(\) before Dense"):
        mlp().init(jax.random.key(0), (None, 28, 28, 1))


def test_unbatched_input_names_the_expected_rank():  # 3
    with pytest.raises(fn.ShapeError, match=r"the shape \(784,\) has a single axis, which is the batch axis\.\n"
                                            r"Hint: .*write \(None, 784\) if 784 is the number of features"):
        mlp().init(jax.random.key(0), (784,))


def test_integer_images_are_refused_with_a_hint():  # 10
    model, params = mlp_params()
    with pytest.raises(fn.InputTypeError, match=r"expected a floating-point input, got dtype uint8[\s\S]*"
                                                r"x.astype\('float32'\) / 255"):
        model.apply(params, {}, jnp.ones((2, 6), jnp.uint8))


def test_params_from_another_model():  # 4
    model, _ = mlp_params(input_dim=6)
    _, other = mlp_params(input_dim=9)
    with pytest.raises(fn.ShapeError, match=r"'dense_0'.*w has shape \(9, 8\).*got \(2, 6\)"):
        model.apply(other, {}, jnp.ones((2, 6)))


def test_missing_and_extra_param_keys():  # 5
    model, params = mlp_params()
    missing = {**params, "head": {"w": params["head"]["w"]}}
    with pytest.raises(fn.ParamsError, match=r"'head'.*missing \['b'\], unexpected \[\]"):
        model.apply(missing, {}, jnp.ones((2, 6)))
    extra = {**params, "ghost": {"w": jnp.ones(3)}}
    with pytest.raises(fn.ParamsError, match=r"params has entries \['ghost'\] that match no layer here"):
        model.apply(extra, {}, jnp.ones((2, 6)))


def test_conv_on_a_flat_input():  # 3
    with pytest.raises(fn.ShapeError, match=r"Conv2D.*rank 4"):
        fn.serial(fn.Conv2D(4, 3)).init(jax.random.key(0), (None, 784))


def test_dropout_training_without_a_key():  # 14
    with pytest.raises(fn.MissingKeyError, match=r"train=True needs a random key"):
        fn.Dropout(0.5).apply({}, {}, jnp.ones((2, 3)), train=True)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: fn.Dense(0), r"Dense: `units` must be a positive integer, got 0"),
    (lambda: fn.Dropout(1.0), r"Dropout: `rate` .* must be in \[0, 1\), got 1.0"),
    (lambda: fn.Dense(3, activation="relux"), r"unknown activation 'relux'; choose one of"),
])
def test_bad_layer_configuration(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ================================================================================================
# Losses and labels


def test_labels_of_shape_n_by_1():  # 6
    with pytest.raises(ValueError, match=r"expects labels of shape \(4,\).*got \(4, 1\). Flatten them with "
                                         r"y.reshape\(-1\)"):
        check_labels(np.zeros((4, 1), np.int32), (None, 3), "class_index", loss_name="sparse_categorical_crossentropy")
    with pytest.raises((ValueError, TypeError), match=r"\(4, 1\)"):
        losses.sparse_categorical_crossentropy(jnp.zeros((4, 1), jnp.int32), jnp.zeros((4, 3)))


def test_float_labels():  # 7
    with pytest.raises(TypeError, match=r"expects integer class indices, got labels of dtype float32; they are "
                                        r"whole numbers: convert them with y.astype\('int32'\)"):
        check_labels(np.array([0.0, 2.0], np.float32), (None, 3), "class_index")


@pytest.mark.parametrize("labels", [[0, 3], [-1, 2]])
def test_labels_out_of_range(labels):  # 8
    with pytest.raises(ValueError, match=rf"class indices in \[0, 3\).*got min {min(labels)}, max {max(labels)}"):
        check_labels(np.array(labels), (None, 3), "class_index")


def test_binary_targets_outside_0_1():
    with pytest.raises(ValueError, match=r"expects targets in \[0, 1\], got min 0, max 2"):
        check_labels(np.array([0, 2]), (None, 1), "binary", loss_name="binary_crossentropy")


def test_one_hot_rows_into_the_sparse_loss():
    with pytest.raises(ValueError, match=r"These look like one-hot rows: use loss='categorical_crossentropy'"):
        check_labels(np.eye(3, dtype=np.int32), (None, 3), "class_index")


def test_unknown_loss_name():
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropy'; choose one of"):
        losses.get_loss("crossentropy")


# ================================================================================================
# Data and training


def tiny_data(n=12):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def tiny_fit(x, y, **kwargs):
    model, params = mlp_params()
    options = {"loss": "sparse_categorical_crossentropy", "optimizer": "sgd", "learning_rate": 0.1,
               "batch_size": 4, "verbose": 0, "mode": "step", **kwargs}
    return fit(model, params, {}, x, y, **options)


def test_mismatched_x_and_y_lengths():  # 9
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"`x` has 12 examples but `y` has 11; their first axes must match"):
        tiny_fit(x, y[:-1])


def test_empty_data():  # 13
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"`x` is empty \(0 examples\)"):
        tiny_fit(x[:0], y[:0])


def test_labels_out_of_range_reach_fit_as_an_error():  # 8
    x, y = tiny_data()
    y[3] = 7
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\).*max 7"):
        tiny_fit(x, y)


def test_nan_in_one_batch_is_skipped_and_counted():  # 15, 31 (documented handling)
    x, y = tiny_data()
    x[0, 0] = np.nan  # with shuffle=False, in the first of 3 batches
    result = tiny_fit(x, y, shuffle=False, epochs=1)
    assert result.history["skipped"] == [1]
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(result.params))


def test_nan_everywhere_stops_training_without_writing_nan():  # 31
    x, y = tiny_data()
    x[:] = np.nan
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps had a non-finite loss or gradient"
                                             r".*max_bad_steps=3") as info:
        tiny_fit(x, y, max_bad_steps=3, epochs=2)
    params = info.value.train_state.params
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(params))


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; choose one of \['adam', "):
        get_optimizer("adamm")


@pytest.mark.parametrize("rate", [-0.1, float("nan"), "fast"])
def test_bad_learning_rate(rate):  # 17
    with pytest.raises(ValueError, match=r"`learning_rate` must be (finite and non-negative|a number or an optax "
                                         r"schedule)"):
        make_optimizer("adam", learning_rate=rate)


# ================================================================================================
# Checkpoints: every case also checks that the checkpoint saved before it is intact.


@pytest.fixture
def saved(tmp_path):
    """A good checkpoint, saved before the fault, and a way to check it is still whole."""
    tree = train_state()
    path = tmp_path / "good"
    ck.save(path, tree, metadata={"step": 17})

    def intact():
        restored = ck.restore(path)
        assert leaves_equal(restored.tree, tree) and restored.metadata == {"step": 17}
        return True

    return path, tree, intact


class Payload:
    """A pickle that, when loaded, creates the file it names: proof that loading ran code."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def live_payload(tmp_path) -> bytes:
    """The payload bytes, after checking on a decoy path that unpickling them really runs code."""
    decoy = tmp_path / "decoy_ran"
    pickle.loads(pickle.dumps(Payload(decoy))).close()
    assert decoy.exists()
    return pickle.dumps(Payload(tmp_path / "payload_ran"))


def test_read_only_directory(tmp_path, saved, monkeypatch):  # 23
    _path, tree, intact = saved
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores permissions: make the file system refuse instead
        real_mkdir = os.mkdir

        def refuse(target, *args, **kwargs):
            if str(target).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(target))
            return real_mkdir(target, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refuse)
        monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(str(locked)))
    try:
        with pytest.raises(ck.CheckpointWriteError, match=r"cannot save checkpoint .*locked/c: Permission denied"):
            ck.save(locked / "c", tree)
        with pytest.raises(ck.CheckpointWriteError, match=r"checkpoint directory .*locked.*not writable"):
            ck.CheckpointManager(locked)
    finally:
        locked.chmod(0o755)
    assert intact()


def test_full_disk_mid_save(tmp_path, saved, monkeypatch):  # 22, 38
    path, tree, intact = saved
    before = snapshot(tree)
    calls = []
    real_write = storage.write_file

    def fill_up(target, chunks):
        calls.append(target)
        if len(calls) == 5:  # the disk fills up part-way through the arrays
            with open(target, "xb") as f:
                f.write(b"\0" * 7)
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_write(target, chunks)

    monkeypatch.setattr(storage, "write_file", fill_up)
    with pytest.raises(ck.CheckpointWriteError, match=r"cannot save checkpoint .*good: No space left on device "
                                                      r"\(.*arrays/000004.bin\). Nothing was committed"):
        ck.save(path, train_state(seed=3), overwrite=True)
    assert len(calls) == 5
    assert sorted(os.listdir(tmp_path)) == ["good"]  # no leftovers
    assert leaves_equal(snapshot(tree), before)
    assert intact()


def test_newer_format_version(saved):  # 30
    path, tree, intact = saved
    newer = path.parent / "newer"
    ck.save(newer, tree)
    edit_manifest(newer, lambda m: m.update(format_version=ck.FORMAT_VERSION + 1))
    with pytest.raises(ck.CheckpointVersionError, match=rf"format version {ck.FORMAT_VERSION + 1} \(written by "
                                                        rf"funcnet .*\); this funcnet reads format versions up to "
                                                        rf"{ck.FORMAT_VERSION}. Upgrade funcnet"):
        ck.restore(newer)
    assert intact()


def test_pickle_payload_as_the_manifest_never_runs(tmp_path, saved):  # 29
    _path, tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, tree)
    write_manifest(crafted, live_payload(tmp_path))
    with pytest.raises(ck.CheckpointCorruptError, match=r"crafted/manifest.json: not valid JSON"):
        ck.restore(crafted)
    assert not (tmp_path / "payload_ran").exists()
    assert intact()


def test_pickle_payload_as_an_array_is_only_bytes(tmp_path, saved):  # 29
    _path, _tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, {"w": np.zeros(3, np.float32)})
    payload = live_payload(tmp_path)
    array_files(crafted)[0].write_bytes(payload)
    with pytest.raises(ck.CheckpointCorruptError, match=r"arrays/000000.bin: longer than recorded: expected 12 "
                                                        rf"bytes, got {len(payload)}"):
        ck.restore(crafted)
    # Even a manifest rewritten to match the payload only ever yields its bytes, never its objects.
    def match_payload(m):
        m["arrays"][0].update(dtype="uint8", shape=[len(payload)], nbytes=len(payload),
                              sha256=hashlib.sha256(payload).hexdigest())

    edit_manifest(crafted, match_payload)
    loaded = ck.restore(crafted).tree["w"]
    assert loaded.dtype == np.uint8 and loaded.tobytes() == payload
    assert not (tmp_path / "payload_ran").exists()
    assert intact()


def test_object_dtype_arrays_are_refused(tmp_path, saved):  # 29
    _path, _tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, {"w": np.zeros(3, np.float32)})
    # An .npy of pickled objects in place of the raw data: caught by the size check, never unpickled.
    with open(array_files(crafted)[0], "wb") as f:
        np.save(f, np.array([Payload(tmp_path / "payload_ran")], dtype=object), allow_pickle=True)
    with pytest.raises(ck.CheckpointCorruptError, match=r"arrays/000000.bin: longer than recorded"):
        ck.restore(crafted)
    # A manifest claiming an object dtype is refused before any file is opened.
    edit_manifest(crafted, lambda m: m["arrays"][0].update(dtype="object", nbytes=8))
    with pytest.raises(ck.CheckpointCorruptError, match=r"dtype 'object' is not allowed"):
        ck.restore(crafted)
    assert not (tmp_path / "payload_ran").exists()
    # And saving one is refused too, naming its path.
    with pytest.raises(TypeError, match=r"cannot save \['bad'\]: dtype object is not supported"):
        ck.save(tmp_path / "obj", {"bad": np.array([object()])})
    assert not (tmp_path / "obj").exists()
    assert intact()


def test_a_header_claiming_a_huge_length(tmp_path, saved, monkeypatch):  # 29
    _path, _tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, {"w": np.zeros(3, np.float32)})
    edit_manifest(crafted, lambda m: m["arrays"][0].update(shape=[2**40], nbytes=4 * 2**40))
    allocations = []
    real_empty = np.empty
    monkeypatch.setattr(np, "empty", lambda *a, **k: allocations.append(a) or real_empty(*a, **k))
    with pytest.raises(ck.CheckpointCorruptError, match=rf"arrays/000000.bin: truncated: expected {4 * 2**40} "
                                                        r"bytes, got 12"):
        ck.restore(crafted)
    assert allocations == []  # the claim was checked against the file before allocating anything
    edit_manifest(crafted, lambda m: m["arrays"][0].update(shape=[3], nbytes=2**62))
    with pytest.raises(ck.CheckpointCorruptError, match=r"claims 4611686018427387904 bytes but shape \[3\] of "
                                                        r"float32 needs 12"):
        ck.restore(crafted)
    assert intact()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["arrays"][0].update(file="../../good/manifest.json"), r"is not of the form arrays/NNNNNN.bin"),
    (lambda m: m["arrays"][0].update(shape="3"), r"shape '3' is not a list of non-negative integers"),
    (lambda m: m["arrays"][0].update(kind="pickle"), r"unknown kind 'pickle'"),
    (lambda m: m["arrays"][0].pop("sha256"), r"lacks some of"),
    (lambda m: m.pop("arrays"), r"'arrays' is missing or not a list"),
    (lambda m: m.update(format="something else"), r"not a funcnet checkpoint manifest"),
    (lambda m: m["tree"].update(t="eval"), r"unknown tree node 'eval'"),
    (lambda m: m["tree"].update(t="namedtuple", name="os.system", fields=["w"]), (r"'os.system' is not a plain "
                                                                                 r"identifier")),
    (lambda m: m["arrays"].append(dict(m["arrays"][0])), r"path is not a string or repeated"),
], ids=["path_traversal", "bad_shape", "unknown_kind", "no_checksum", "no_arrays", "not_funcnet", "bad_node",
        "namedtuple_injection", "duplicate_entry"])
def test_malformed_manifest_fields(tmp_path, saved, edit, message):  # 26
    _path, _tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, {"w": np.zeros(3, np.float32)})
    edit_manifest(crafted, edit)
    with pytest.raises(ck.CheckpointCorruptError, match=rf"crafted/manifest.json: .*{message}"):
        ck.restore(crafted)
    assert intact()


@pytest.mark.parametrize(("data", "message"), [
    (b"{\"format\": ", r"not valid JSON"),
    (b"[1, 2, 3]", r"not a funcnet checkpoint manifest"),
    (b"[" * 100_000 + b"]" * 100_000, r"not valid JSON"),
    (b"{\"format\": \"funcnet.checkpoint\", \"format_version\": 1" + b"0" * 5000 + b"}", r"not valid JSON"),
    (b"\xff\xfe\x00garbage", r"not valid JSON"),
], ids=["truncated_json", "json_list", "deep_nesting", "huge_number", "not_utf8"])
def test_unparseable_manifest(tmp_path, saved, data, message):  # 26
    _path, _tree, intact = saved
    crafted = tmp_path / "crafted"
    ck.save(crafted, {"w": np.zeros(3, np.float32)})
    write_manifest(crafted, data)
    with pytest.raises(ck.CheckpointCorruptError, match=rf"crafted/manifest.json: {message}"):
        ck.restore(crafted)
    assert intact()


def test_oversized_manifest_is_not_read(tmp_path, saved, monkeypatch):  # 29
    path, _tree, intact = saved
    monkeypatch.setattr(fmt, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(ck.CheckpointCorruptError, match=r"good/manifest.json: \d+ bytes, more than the limit of 1000"):
        ck.restore(path)
    monkeypatch.undo()
    assert intact()


@pytest.mark.parametrize(("cut", "message"), [
    ("half", r"truncated: expected \d+ bytes, got \d+"),
    ("empty", r"truncated: expected \d+ bytes, got 0"),
    ("missing", r"missing"),
])
def test_truncated_or_missing_array_file(saved, cut, message):  # 24
    path, tree, intact = saved
    copy = path.parent / "copy"
    ck.save(copy, tree)
    file = max(array_files(copy), key=lambda f: f.stat().st_size)
    data = file.read_bytes()
    if cut == "missing":
        file.unlink()
    else:
        file.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    with pytest.raises(ck.CheckpointCorruptError, match=rf"copy/arrays/{file.name}: {message}"):
        ck.restore(copy)
    assert intact()


def test_bit_flip_in_a_tensor_payload(saved):  # 25
    path, tree, intact = saved
    copy = path.parent / "copy"
    ck.save(copy, tree)
    file = max(array_files(copy), key=lambda f: f.stat().st_size)
    data = bytearray(file.read_bytes())
    data[len(data) // 3] ^= 0x10
    file.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointCorruptError, match=rf"copy/arrays/{file.name}: its SHA-256 does not match"):
        ck.restore(copy)
    assert intact()


def test_restore_into_another_architecture(saved):  # 27
    path, _tree, intact = saved
    wider = train_state(width=5)
    with pytest.raises(ck.CheckpointMismatchError, match=r"differences; nothing was loaded\):[\s\S]*"
                                                         r"\.params\['dense_0'\]\['w'\]: expected float32\[3,5\], "
                                                         r"found float32\[3,4\]"):
        ck.restore(path, like=wider)
    assert intact()


def test_restore_into_another_dtype(saved):  # 28
    path, tree, intact = saved
    half = tree._replace(params=jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), tree.params))
    with pytest.raises(ck.CheckpointMismatchError, match=r"\['head'\]\['w'\]: expected bfloat16\[4,2\], found "
                                                         r"float32\[4,2\]"):
        ck.restore(path, like=half)
    assert intact()


def test_saving_over_an_existing_checkpoint_needs_overwrite(saved):  # 36
    path, _tree, intact = saved
    with pytest.raises(FileExistsError, match=r"good already exists; pass overwrite=True"):
        ck.save(path, train_state(seed=9))
    assert intact()


@pytest.mark.parametrize(("tree", "message"), [
    ({"name": "adam"}, r"str at \['name'\] is not supported"),
    ({3: np.zeros(2)}, r"dict keys must be strings, got 3 at <root>"),
    ({"a": {"b": object()}}, r"object at \['a'\]\['b'\] is not supported"),
    ({"big": 2**70}, r"cannot save \['big'\]: the integer 1180591620717411303424 does not fit in 64 bits"),
])
def test_unsupported_values_are_named(tmp_path, saved, tree, message):
    _path, _, intact = saved
    with pytest.raises((TypeError, ValueError), match=message):
        ck.save(tmp_path / "bad", tree)
    assert not (tmp_path / "bad").exists() and intact()


def test_non_json_metadata(tmp_path, saved):
    _path, tree, intact = saved
    with pytest.raises(TypeError, match=r"`metadata` must hold JSON values.*object is not JSON"):
        ck.save(tmp_path / "bad", tree, metadata={"model": object()})
    assert not (tmp_path / "bad").exists() and intact()


def test_saving_a_donated_array(tmp_path, saved):  # 34
    _path, _, intact = saved
    x = jnp.ones(4)
    jax.jit(lambda a: a + 1, donate_argnums=0)(x)
    if not x.is_deleted():  # the CPU backend may decline the donation
        pytest.skip("this backend did not donate the buffer")
    with pytest.raises(ValueError, match=r"cannot save \['x'\]: the array was deleted \(donated to a jitted step\?\)"):
        ck.save(tmp_path / "bad", {"x": x})
    assert intact()

