"""The main job end to end: ``funcnet train mnist`` on the real data, as a user runs it.

Each run's printed test accuracy is checked against an independent count: the saved checkpoint
is restored (model rebuilt from its recorded architecture) and its predictions on the original
test files, parsed here without TFDS, are compared with the labels in NumPy.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from funcnet import checkpoint, predict_fn
from tests.mnist_cache import mnist_data_dir, reference  # noqa: F401  (fixture)

TARGETS = {"mlp": 0.975, "cnn": 0.988}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TARGETS))
def test_train_mnist_reaches_its_target_accuracy(model, mnist_dir, mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "funcnet", "train", "mnist", "--model", model, "--data-dir", str(mnist_dir),
               "--cache-dir", str(mnist_data_dir), "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = float(re.search(r"Test accuracy: (\d\.\d+) \((\d+)/10000\)", run.stdout).group(1))
    seconds = float(re.search(r"Trained in (\d+\.\d)s", run.stdout).group(1))
    print(f"{model}: test accuracy {printed:.4f}, trained in {seconds:.0f}s")

    # An independent count from the saved parameters and the original test files.
    restored = checkpoint.restore(out / "checkpoint")
    images, labels = reference(mnist_dir, "t10k")
    logits = predict_fn(restored.model, restored.tree["state"])(restored.tree["params"],
                                                                 images.astype(np.float32) / 255)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))
    assert accuracy == pytest.approx(printed, abs=1e-4)
    assert accuracy >= TARGETS[model]
    assert restored.metadata["test_accuracy"] == pytest.approx(printed, abs=1e-4)

    history = json.loads((out / "history.json").read_text())["history"]
    assert len(history["loss"]) == restored.metadata["epochs"]
    assert history["loss"][-1] < history["loss"][0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
