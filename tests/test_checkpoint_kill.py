"""A process killed (SIGKILL) at random moments while saving never loses the previous checkpoint.

A server process imports funcnet once, then forks a fresh saver per round; the saver saves
without pause (through a CheckpointManager, and by overwriting one fixed path) until this test
kills it after a random delay. After every kill the test checks that each visible checkpoint is
complete and self-consistent (every array holds its own step), that the latest one only moves
forward, and finally that the leftovers of interrupted saves are cleaned at the next start.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from funcnet import checkpoint as ck
from funcnet.checkpoint import storage

SERVER = textwrap.dedent("""
    import os, sys, traceback
    import numpy as np
    from funcnet import checkpoint as ck

    root = sys.argv[1]

    def save_forever():
        manager = ck.CheckpointManager(os.path.join(root, "managed"), max_to_keep=2)
        step = (manager.latest() or 0) + 1
        while True:
            tree = {"big": np.full(300_000, step, np.float32), "ints": np.arange(step, step + 5000),
                    "nested": {"step": step, "f": np.float32(step)}}
            manager.save(step, tree, metadata={"check": step})
            ck.save(os.path.join(root, "single"), tree, metadata={"check": step}, overwrite=True)
            step += 1

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                save_forever()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")

BUDGET_S = 12.0


def check_consistent(restored) -> int:
    step = restored.metadata["check"]
    tree = restored.tree
    assert np.all(tree["big"] == step) and tree["big"].shape == (300_000,)
    assert np.array_equal(tree["ints"], np.arange(step, step + 5000))
    assert tree["nested"] == {"step": step, "f": np.float32(step)}
    return step


def leftovers(path: Path) -> list[str]:
    return [name for name in os.listdir(path) if storage.is_hidden(name)] if path.exists() else []


def test_sigkill_during_saves_never_loses_the_previous_checkpoint(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    rng = random.Random(1234)
    managed, single = tmp_path / "managed", tmp_path / "single"
    kills, kills_mid_save, latest_seen, single_seen = 0, 0, 0, 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < BUDGET_S or kills < 5:
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            if kills == 0:  # the first round waits for the first commits; later ones hit anywhere
                deadline = time.monotonic() + 30
                while not (single / "manifest.json").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().strip() == "reaped"
            kills += 1
            kills_mid_save += bool(leftovers(managed) or leftovers(tmp_path))

            # Every visible checkpoint is whole and loads; the latest never goes back.
            names = os.listdir(managed) if managed.exists() else []
            steps = [int(name[5:]) for name in names if name.startswith("step_")]
            for step in steps:
                path = managed / f"step_{step:09d}"
                if (path / "manifest.json").exists():
                    assert check_consistent(ck.restore(path)) == step
            latest = max(steps, default=0)
            assert latest >= latest_seen
            latest_seen = latest
            if kills >= 1:
                assert latest_seen > 0, "no checkpoint was ever committed"
                # restore() recovers an overwrite interrupted between its two renames by itself.
                single_step = check_consistent(ck.restore(single))
                assert single_step >= single_seen
                single_seen = single_step
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        server.stdout.close()

    assert kills >= 5 and latest_seen > 1
    assert kills_mid_save >= 1, "no kill landed inside a save; the test would prove nothing"
    # The next start cleans every leftover, and the manager still restores the latest.
    manager = ck.CheckpointManager(managed, max_to_keep=2)
    assert leftovers(managed) == []
    assert len(manager.steps()) <= 3
    assert check_consistent(manager.restore_latest()) == manager.latest()
    ck.clean_stale(tmp_path)
    assert leftovers(tmp_path) == []
    print(f"{kills} kills, {kills_mid_save} left a partial save behind, reached step {latest_seen}")
