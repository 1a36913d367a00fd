"""Checkpoints of arrays spread over devices and processes (2 processes x 2 CPU devices, on 127.0.0.1).

One 2-process run (tests/distributed_worker.py, scenario "checkpoint") saves a tree whose ``w`` is
split by rows over the 4 devices, restores it in both processes onto the same and onto another
layout, and fails a save on purpose in process 1; the tests here check what each process
reported, and restore the same checkpoint in this single-device process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from funcnet import checkpoint as ck
from tests.checkpoint_helpers import edit_manifest, read_manifest, write_manifest
from tests.multiprocess import run_workers

WORKER = Path(__file__).with_name("distributed_worker.py")
W = np.arange(32, dtype=np.float32).reshape(8, 4)
B = np.linspace(0, 1, 4, dtype=np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("two_processes")
    return directory, run_workers(WORKER, "checkpoint", directory, processes=2, devices=2, timeout=90)


def _rows(parts: dict) -> dict:
    return {name: np.array(values) for name, values in parts.items()}


def test_each_process_restores_its_own_rows_reading_only_their_shards(run):
    directory, results = run
    manifest = read_manifest(directory / "ckpts" / "ckpt")
    files = [s["file"] for s in {e["path"]: e for e in manifest["arrays"]}["['w']"]["shards"]]
    for process, result in enumerate(results):
        expected = {f"{2 * d + 4 * process}:{2 * d + 4 * process + 2},0:4": W[2 * d + 4 * process:][:2]
                    for d in range(2)}
        got = _rows(result["same_w"])
        assert sorted(got) == sorted(expected)
        for name, rows in expected.items():
            np.testing.assert_array_equal(got[name], rows)
        # w's two shards on this process's devices; b, key, step and host are whole files, read by all.
        own = {files[2 * process], files[2 * process + 1]}
        assert own <= set(result["read_same"]) and not (set(files) - own) & set(result["read_same"])
        np.testing.assert_array_equal(np.array(result["same_b"]["0:4"]), B)
        assert result["same_step"] == 5 and result["same_host"] == [1, 2, 3]
        np.testing.assert_array_equal(result["same_key"], jax.random.key_data(jax.random.key(3)))


def test_restore_onto_another_layout_of_the_same_devices(run):
    _, results = run
    for process, result in enumerate(results):
        assert result["other_shardings"] == ["P(None, 'data')", "P('data',)"]
        for name, values in result["other_w"].items():
            col = int(name.split(",")[1].split(":")[0])
            np.testing.assert_array_equal(np.array(values), W[:, col:col + 1])
        assert sorted(result["other_w"]) == [f"0:8,{c}:{c + 1}" for c in (2 * process, 2 * process + 1)]
        # Columns need rows from every shard: all four files of w were read.
        assert len([f for f in result["read_other"] if f in result["read_same"]]) >= 2


def test_the_manifest_holds_each_distinct_shard_once_with_its_checksum(run):
    directory, _ = run
    manifest = read_manifest(directory / "ckpts" / "ckpt")
    entries = {e["path"]: e for e in manifest["arrays"]}
    w = entries["['w']"]
    assert [s["index"] for s in w["shards"]] == [[[r, r + 2], [0, 4]] for r in (0, 2, 4, 6)]
    assert all(s["nbytes"] == 2 * 4 * 4 for s in w["shards"]) and "file" not in w
    assert "shards" not in entries["['b']"] and "shards" not in entries["['key']"]  # replicated: saved whole
    assert manifest["format_version"] == ck.FORMAT_VERSION


def test_one_device_restores_the_two_process_checkpoint(run):
    directory, _ = run
    restored = ck.restore(directory / "ckpts" / "ckpt")
    np.testing.assert_array_equal(np.asarray(restored.tree["w"]), W)
    np.testing.assert_array_equal(np.asarray(restored.tree["b"]), B)
    np.testing.assert_array_equal(jax.random.key_data(restored.tree["key"]), jax.random.key_data(jax.random.key(3)))
    assert restored.tree["step"] == 5 and restored.metadata == {"step": 5}


def test_a_failed_write_in_one_process_commits_nothing_anywhere(run):
    _, results = run
    for result in results:
        assert result["failure"] is not None
        assert "process 1: OSError: [Errno 28] No space left on device" in result["failure"]
        assert "Nothing was committed; the previous checkpoint, if any, is untouched." in result["failure"]
        assert result["kept_step"] == 5
        assert result["leftovers"] == ["ckpt"]  # process 0 removed the staging directory


def test_restore_latest_restores_the_same_step_in_every_process(run):
    """Step 2 is corrupt in a shard only process 1 reads: both processes refuse it, or both fall back to step 1."""
    _, results = run
    for result in results:
        assert result["latest_refused"] is not None and "its SHA-256 does not match the manifest" in \
            result["latest_refused"]
        assert result["latest_fallback"] == 1
        assert len(result["latest_warnings"]) == 1 and "skipping corrupt checkpoint" in result["latest_warnings"][0]
        assert "step_000000002" in result["latest_warnings"][0]
    assert results[0]["latest_refused"].startswith("process 1: ")  # process 0 read nothing wrong itself


def test_a_flipped_bit_in_one_shard_names_that_file(run, tmp_path):
    directory, _ = run
    copy = tmp_path / "ckpt"
    shutil.copytree(directory / "ckpts" / "ckpt", copy)
    shard = {e["path"]: e for e in read_manifest(copy)["arrays"]}["['w']"]["shards"][2]
    data = bytearray((copy / shard["file"]).read_bytes())
    data[5] ^= 1
    (copy / shard["file"]).write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointCorruptError, match=rf"{shard['file']}: its SHA-256 does not match the manifest "
                                                        r"\(array \['w'\]\)"):
        ck.restore(copy)


# --------------------------------------------------------------------------------------------
# One process, four devices


def test_four_devices_to_two_and_one_and_one_to_two(tmp_path):
    """A process with 4 devices saves an FSDP-sharded train state and restores it onto 2 devices
    and onto 1, and restores onto 2 devices a checkpoint this one-device process saved."""
    from tests.distributed_worker import train_state

    reference = train_state()
    ck.save(tmp_path / "one", reference)
    (result,) = run_workers(WORKER, "four_devices", tmp_path, processes=1, devices=4, timeout=60)
    assert result["equal"] == [True, True, True]
    w = "['params']['dense_0']['w']"  # (6, 8): FSDP splits the 8 columns
    assert result["saved"][w] == [4, "P(None, 'data')"]
    assert result["two"][w] == result["from_one"][w] == [2, "P(None, 'data')"]
    assert result["one"][w] == [1, "None"] and result["one_device"] == "cpu:3"
    assert result["two"]["['key']"] == [2, "P()"]
    # Saved whole from one process: the same manifest entries as a one-device save, restorable here.
    four, one = read_manifest(tmp_path / "four"), read_manifest(tmp_path / "one")
    by_path = sorted(four["arrays"], key=lambda e: e["path"]), sorted(one["arrays"], key=lambda e: e["path"])
    assert [{**e, "file": None} for e in by_path[0]] == [{**e, "file": None} for e in by_path[1]]
    restored = ck.restore(tmp_path / "four", like=reference).tree
    for a, b in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(reference["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------
# Sharded entries, crafted in this process (no subprocess): reassembly and strict validation


def _shard_rows(path: Path, rows: list[tuple[int, int]]) -> None:
    """Rewrites ``w`` (8, 4) of the checkpoint at ``path`` as row shards, the way several processes save it."""
    import hashlib

    manifest = read_manifest(path)
    entry = next(e for e in manifest["arrays"] if e["path"] == "['w']")
    (path / entry.pop("file")).unlink()
    entry.pop("sha256")
    entry["shards"] = []
    for i, (start, stop) in enumerate(rows):
        raw = W[start:stop].astype("<f4").tobytes()
        name = f"arrays/{100 + i:06d}.bin"
        (path / name).write_bytes(raw)
        entry["shards"].append({"index": [[start, stop], [0, 4]], "file": name, "nbytes": len(raw),
                                "sha256": hashlib.sha256(raw).hexdigest()})
    write_manifest(path, manifest)


@pytest.fixture
def sharded(tmp_path):
    path = ck.save(tmp_path / "c", {"w": jax.numpy.asarray(W), "b": B})
    _shard_rows(path, [(0, 2), (2, 5), (5, 8)])
    return path


def test_shards_are_reassembled_on_one_device(sharded):
    restored = ck.restore(sharded).tree
    np.testing.assert_array_equal(np.asarray(restored["w"]), W)
    assert isinstance(restored["w"], jax.Array)


def _edit_w(path: Path, edit) -> None:
    def change(manifest):
        edit(next(e for e in manifest["arrays"] if e["path"] == "['w']"))

    edit_manifest(path, change)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda e: e["shards"][1].update(index=[[1, 5], [0, 4]], nbytes=64), (r"the shards' intervals along axis 0 do "
                                                                          r"not partition \[0, 8\)")),
    (lambda e: e["shards"].pop(), (r"the shards' intervals along axis 0 do not partition \[0, 8\) \(\[\(0, 2\), "
                                  r"\(2, 5\)\]\)")),
    (lambda e: e["shards"][1].update(nbytes=40), (r"shard 1 claims 40 bytes but its index \[\[2, 5\], \[0, 4\]\] "
                                                 r"needs 48")),
    (lambda e: e["shards"][1].update(nbytes=48.0), r"shard 1 claims 48.0 bytes"),
    (lambda e: e["shards"][2].update(file=e["shards"][0]["file"]), r"shard 2: file name .* is repeated"),
    (lambda e: e["shards"][0].update(file="../outside.bin"), r"shard 0: file name '../outside.bin' is not of the form"),
    (lambda e: e["shards"][0]["index"].__setitem__(1, [0, 5]), (r"shard 0: index .* is not a \[start, stop\) pair "
                                                               r"within the shape \[8, 4\]")),
    (lambda e: e.update(file="arrays/000009.bin"), r"a sharded array has 'shards' and no 'file' or 'sha256'"),
    (lambda e: e.update(kind="numpy"), r"only non-empty JAX arrays and PRNG keys are saved in shards"),
    (lambda e: e["shards"][0].update(extra=1), r"shard 0 must have exactly the fields"),
], ids=["overlap", "missing", "nbytes", "nbytes_float", "repeated_file", "path_escape", "out_of_bounds", "file_too",
        "numpy_kind", "unknown_field"])
def test_crafted_shards_are_refused_naming_the_problem(sharded, edit, message):
    _edit_w(sharded, edit)
    with pytest.raises(ck.CheckpointCorruptError, match=r"manifest.json: array entry \d \(\"\['w'\]\"\): " + message):
        ck.restore(sharded)


def test_a_missing_or_truncated_shard_names_its_file(sharded):
    shard = next(e for e in read_manifest(sharded)["arrays"] if e["path"] == "['w']")["shards"]
    (sharded / shard[1]["file"]).write_bytes((sharded / shard[1]["file"]).read_bytes()[:-4])
    with pytest.raises(ck.CheckpointCorruptError, match=rf"{shard[1]['file']}: truncated: expected 48 bytes, got 44 "
                                                        r"\(array \['w'\]\)"):
        ck.restore(sharded)
    (sharded / shard[1]["file"]).unlink()
    with pytest.raises(ck.CheckpointCorruptError, match=rf"{shard[1]['file']}: missing \(array \['w'\]\)"):
        ck.restore(sharded)
