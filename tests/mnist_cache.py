"""MNIST prepared once per test run, shared by every test and every pytest-xdist worker.

Test modules that need it import the fixture: ``from tests.mnist_cache import mnist_data_dir``.
:func:`reference` parses the original files directly, as an independent reference.
Preparing reads the four original files from the ``mnist_dir`` fixture (no network) and takes
about half a minute; a lock file makes workers wait for the first one instead of repeating it.
"""

import fcntl
import gzip
import os
import pathlib

import numpy as np
import pytest


def _run_root(tmp_path_factory) -> pathlib.Path:
    """The temporary folder of this whole run: shared by xdist workers, fresh each run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory, mnist_dir) -> pathlib.Path:
    """A TFDS ``data_dir`` holding MNIST, prepared from the original files."""
    from funcnet import data

    root = _run_root(tmp_path_factory)
    data_dir = root / "tfds"
    with open(root / "tfds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data.prepare("mnist", data_dir=data_dir, manual_dir=mnist_dir, download=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data_dir


def read_idx(path, offset):
    """The IDX format by hand: a big-endian header of ``offset`` bytes, then uint8 values."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def reference(mnist_dir, prefix):
    """``(images (N, 28, 28, 1) uint8, labels (N,) uint8)`` parsed from the original files, no TFDS."""
    images = read_idx(mnist_dir / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
    labels = read_idx(mnist_dir / f"{prefix}-labels-idx1-ubyte.gz", 8)
    return images, labels
