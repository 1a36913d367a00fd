"""Checkpoints and the file system: what overwrite may replace, links and special files inside a
checkpoint, and readers and writers racing (each race injected between a writer's steps by
``storage.test_hook``, so every run takes the same path).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from funcnet import checkpoint as ck
from funcnet.checkpoint import storage
from tests.checkpoint_helpers import edit_manifest, read_manifest


def tree_for(step: int) -> dict:
    return {"w": np.full((3, 4), step, np.float32), "b": np.arange(step, step + 5), "step": step}


def contents(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (``root`` itself included) with its bytes, a link's target or "dir"."""
    found = {}
    for where in [root, *sorted(root.rglob("*"))] if root.is_dir() and not root.is_symlink() else [root]:
        key = str(where.relative_to(root.parent))
        found[key] = (f"link:{os.readlink(where)}" if where.is_symlink() else "dir" if where.is_dir()
                      else where.read_bytes())
    return found


def hook_on(monkeypatch, event: str, action) -> list:
    """Runs ``action(path)`` the first time the protocol reaches ``event``; returns what it returned."""
    results = []

    def hook(reached: str, path: Path) -> None:
        if reached == event and not results:
            results.append(None)
            results[0] = action(path)

    monkeypatch.setattr(storage, "test_hook", hook)
    return results


# ------------------------------------------------------------------------------------------------
# 1. overwrite=True replaces only a funcnet checkpoint


def user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("my thesis, chapter 3")
    (path / "sub" / "data.csv").write_bytes(b"1,2,3\n" * 100)
    return path


def user_file(path: Path) -> Path:
    path.write_bytes(b"\x00results\xff" * 50)
    return path


@pytest.mark.parametrize("make, why", [
    (user_folder, r"it is a directory without manifest.json, so not a funcnet checkpoint"),
    (user_file, r"it is a regular file, not a checkpoint directory"),
])
def test_overwrite_leaves_a_user_folder_or_file_untouched(tmp_path, make, why):
    target = make(tmp_path / "out")
    before = contents(target)
    with pytest.raises(FileExistsError, match=rf"cannot overwrite .*out: {why}\. overwrite=True replaces only a "
                                              r"funcnet checkpoint; nothing was touched"):
        ck.save(target, tree_for(1), overwrite=True)
    assert contents(target) == before
    assert os.listdir(tmp_path) == ["out"]  # no hidden leftovers either


def test_overwrite_leaves_a_checkpoint_with_user_files_added_and_a_link_untouched(tmp_path):
    ck.save(tmp_path / "ckpt", tree_for(1))
    (tmp_path / "ckpt" / "README.md").write_text("do not delete")
    before = contents(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match=r"ckpt: it holds entries a funcnet checkpoint never has \(README.md\)"):
        ck.save(tmp_path / "ckpt", tree_for(2), overwrite=True)
    assert contents(tmp_path / "ckpt") == before
    os.remove(tmp_path / "ckpt" / "README.md")
    os.symlink(tmp_path / "ckpt", tmp_path / "link")
    with pytest.raises(FileExistsError, match=r"cannot overwrite .*link: it is a symbolic link, not a checkpoint"):
        ck.save(tmp_path / "link", tree_for(2), overwrite=True)
    assert os.readlink(tmp_path / "link") == str(tmp_path / "ckpt")
    assert ck.restore(tmp_path / "ckpt").tree["step"] == 1


def test_overwrite_replaces_a_checkpoint_or_an_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("empty", "ckpt", "ckpt"):
        ck.save(tmp_path / name, tree_for(len(os.listdir(tmp_path))), overwrite=True)
    assert ck.restore(tmp_path / "empty").tree["step"] == 1
    assert ck.restore(tmp_path / "ckpt").tree["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "empty"]


def test_a_user_folder_put_at_the_path_during_the_save_is_left_untouched(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    ck.save(path, tree_for(1))

    def swap_in_user_folder(path: Path) -> None:  # after the up-front check, before the rename
        shutil.rmtree(path)
        user_folder(path)

    hook_on(monkeypatch, "written", swap_in_user_folder)
    with pytest.raises(FileExistsError, match=r"cannot overwrite .*ckpt: it is a directory without manifest.json"):
        ck.save(path, tree_for(2), overwrite=True)
    assert contents(path) == contents(user_folder(tmp_path / "copy" / "ckpt"))
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "copy"]


# ------------------------------------------------------------------------------------------------
# 2. Only regular files inside the checkpoint are read; links are refused, FIFOs never block


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt"
    ck.save(path, tree_for(7))
    return path


def move_out_and_link(path: Path, name: str) -> Path:
    """Moves ``path/name`` outside the checkpoint (same bytes) and puts a link to it in its place."""
    outside = path.parent / "outside" / name
    outside.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path / name, outside)
    os.symlink(outside, path / name)
    return outside


@pytest.mark.parametrize("name", ["arrays/000000.bin", "arrays", "manifest.json", "manifest.json.sha256"])
def test_a_link_in_place_of_a_checkpoint_entry_is_refused(saved, name):
    move_out_and_link(saved, name)  # the linked bytes are the right ones: only the link is wrong
    kind = "a symbolic link"
    with pytest.raises(ck.CheckpointCorruptError, match=rf"checkpoint .*ckpt is refused: .*ckpt/{name} is {kind}\. "
                                                         r"funcnet reads only regular files and directories inside a "
                                                         r"checkpoint and never follows links"):
        ck.restore(saved)


def point_first_array_at(path: Path, outside: Path) -> None:
    """A link to an outside file in place of the first array, with a manifest re-hashed to accept its bytes."""
    secret = outside.read_bytes() if outside.exists() else b"\0" * 8
    first = read_manifest(path)["arrays"][0]["file"]

    def accept(manifest):
        entry = manifest["arrays"][0]
        entry.update(dtype="uint8", shape=[len(secret)], nbytes=len(secret), sha256=hashlib.sha256(secret).hexdigest())
    edit_manifest(path, accept)
    os.remove(path / first)
    os.symlink(outside, path / first)


def test_a_linked_outside_file_is_never_read_nor_its_existence_or_size_revealed(tmp_path):
    secret = tmp_path / "private" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN KEY----- 1234567890")
    messages = []
    for name, outside in (("a", secret), ("b", tmp_path / "private" / "nothing-here")):
        ck.save(tmp_path / name, {"w": np.zeros(3, np.uint8)})
        point_first_array_at(tmp_path / name, outside)
        with pytest.raises(ck.CheckpointCorruptError, match=r"arrays/000000.bin is a symbolic link") as error:
            ck.restore(tmp_path / name)
        messages.append(str(error.value).replace(str(tmp_path / name), "CKPT"))
    assert messages[0] == messages[1]  # the same words whether the target exists or not
    assert "30" not in messages[0] and "id_rsa" not in messages[0]


def restore_with_timeout(path: Path, fifo: Path, seconds: float = 10.0):
    """Restores in a thread; if it is still blocked after ``seconds``, unblocks it and fails."""
    outcome = {}

    def run():
        try:
            outcome["value"] = ck.restore(path)
        except Exception as error:  # noqa: BLE001 -- handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):  # release the blocked reader
            pass
        thread.join(seconds)
        pytest.fail(f"restore blocked on the FIFO {fifo} for {seconds} s")
    return outcome


@pytest.mark.parametrize("name", ["manifest.json", "arrays/000001.bin"])
def test_a_fifo_in_place_of_a_file_never_blocks(saved, name):
    os.remove(saved / name)
    os.mkfifo(saved / name)
    outcome = restore_with_timeout(saved, saved / name)
    assert isinstance(outcome.get("error"), ck.CheckpointCorruptError), outcome
    assert f"ckpt/{name} is a FIFO (named pipe)" in str(outcome["error"])


# ------------------------------------------------------------------------------------------------
# 3. Several writers and readers


def test_a_restore_racing_an_overwrite_returns_the_whole_new_checkpoint(saved, monkeypatch):
    hook_on(monkeypatch, "manifest-read", lambda path: ck.save(path, tree_for(8), overwrite=True))
    restored = ck.restore(saved)  # read the old manifest, then found the new arrays
    assert restored.tree["step"] == 8 and np.all(restored.tree["w"] == 8) and restored.tree["b"][0] == 8


def failure_of_restore(path: Path) -> Exception | None:
    try:
        ck.restore(path)
    except Exception as error:  # noqa: BLE001 -- handed to the test
        return error
    return None


def test_a_restore_between_the_writers_two_renames_says_try_again(saved, monkeypatch):
    monkeypatch.setattr(ck.io, "RETRY_PAUSE_S", 0.001)
    outcomes = hook_on(monkeypatch, "moved-aside", failure_of_restore)
    ck.save(saved, tree_for(8), overwrite=True)
    error = outcomes[0]
    assert isinstance(error, ck.CheckpointBusyError)
    assert str(error).startswith(f"checkpoint {saved} is being written: another process (process {os.getpid()}) "
                                 "replaced or deleted it while it was read, 6 times; nothing was loaded. Try again")
    assert ck.restore(saved).tree["step"] == 8


def test_a_restore_racing_a_deletion_says_not_found_not_corrupt(saved, monkeypatch):
    hook_on(monkeypatch, "manifest-read", storage.remove)
    with pytest.raises(ck.CheckpointNotFoundError, match=r"no checkpoint at .*ckpt\.$"):
        ck.restore(saved)


def test_pruning_tolerates_a_checkpoint_another_writer_removed(tmp_path, monkeypatch):
    ours, theirs = ck.CheckpointManager(tmp_path, max_to_keep=1), ck.CheckpointManager(tmp_path, max_to_keep=1)
    theirs.save(1, tree_for(1))
    hook_on(monkeypatch, "removing", shutil.rmtree)  # the other writer prunes step 1 just before we do
    ours.save(2, tree_for(2))
    assert ours.steps() == [2] and sorted(os.listdir(tmp_path)) == ["step_000000002"]


def test_restore_latest_gives_way_to_the_newer_checkpoint_when_its_pick_is_pruned(tmp_path, monkeypatch):
    reader, writer = ck.CheckpointManager(tmp_path, max_to_keep=2), ck.CheckpointManager(tmp_path, max_to_keep=1)
    for step in (1, 2):
        reader.save(step, tree_for(step))
    hook_on(monkeypatch, "manifest-read", lambda path: writer.save(3, tree_for(3)))  # prunes 1 and 2
    assert reader.restore_latest().tree["step"] == 3


def test_two_writers_overwriting_one_path_both_commit_and_the_last_one_wins(saved, monkeypatch):
    # The other writer commits while this one has the old checkpoint moved aside.
    hook_on(monkeypatch, "moved-aside", lambda path: ck.save(path, tree_for(9), overwrite=True))
    ck.save(saved, tree_for(8), overwrite=True)
    assert ck.restore(saved).tree["step"] == 8
    assert os.listdir(saved.parent) == ["ckpt"]


def test_two_writers_creating_one_path_one_commits_the_other_is_told(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    hook_on(monkeypatch, "written", lambda path: ck.save(path, tree_for(9)))  # the other one commits first
    with pytest.raises(FileExistsError, match=r"checkpoint .*ckpt already exists; pass overwrite=True"):
        ck.save(path, tree_for(8))
    assert ck.restore(path).tree["step"] == 9
    assert os.listdir(tmp_path) == ["ckpt"]


def test_the_manager_reads_no_linked_manifest_for_its_best_metric(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "m", max_to_keep=1, best_metric="loss")
    manager.save(1, tree_for(1), metrics={"loss": 0.5})
    move_out_and_link(manager.path(1), "manifest.json")
    with pytest.raises(ck.CheckpointCorruptError, match=r"step_000000001/manifest.json is a symbolic link"):
        manager.metrics(1)
    assert manager.best() is None  # a refused checkpoint is not a candidate


def test_the_readers_themselves_refuse_a_link_swapped_in_after_the_checks(tmp_path):
    """format's readers check the descriptor they read from, so a link or FIFO put in place after
    restore's checks (a racing writer) is refused, not followed, and never blocks."""
    from funcnet.checkpoint import format as fmt

    path = ck.save(tmp_path / "c", tree_for(1))
    entry = read_manifest(path)["arrays"][0]
    outside = tmp_path / "outside.bin"
    outside.write_bytes((path / entry["file"]).read_bytes())
    (path / entry["file"]).unlink()
    os.symlink(outside, path / entry["file"])
    with pytest.raises(ck.CheckpointCorruptError, match=rf"{entry['file']} is a symbolic link"):
        fmt.read_array(path, entry)
    (path / "manifest.json").unlink()
    os.mkfifo(path / "manifest.json")
    with pytest.raises(ck.CheckpointCorruptError, match=r"manifest.json is a FIFO"):
        fmt.read_manifest(path)
