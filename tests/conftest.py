"""Shared test set-up: CPU only, no network, a fresh key per test."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

#: The four original MNIST files, beside the project root (see ../shared/data/mnist/README.md).
MNIST_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the MNIST files are missing from {MNIST_DIR}; see the README's set-up.")
    return MNIST_DIR
