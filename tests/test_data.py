"""funcnet.data: MNIST through TFDS from the original files, checked against a direct parse of
those files; every error path with its message."""

import hashlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from funcnet import data
from tests.mnist_cache import mnist_data_dir, reference  # noqa: F401  (fixture)

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def fingerprints(images, labels):
    """The examples as a sorted list of (image digest, label): TFDS shuffles them when preparing."""
    return sorted((hashlib.sha1(img.tobytes()).hexdigest(), int(lab)) for img, lab in zip(images, labels))


def test_importing_funcnet_imports_no_tensorflow():
    code = ("import sys, funcnet, funcnet.data; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_info_describes_mnist_without_preparing(tmp_path):
    described = data.info("mnist", data_dir=tmp_path)
    assert described.input_shape == (28, 28, 1)
    assert described.num_classes == 10
    assert described.class_names == tuple(str(d) for d in range(10))
    assert sorted(described.files) == sorted(FILES)
    assert not any(tmp_path.iterdir())


def test_raw_mnist_is_exactly_the_original_files(mnist_data_dir, mnist_dir):
    train, test = data.load("mnist", data_dir=mnist_data_dir, normalize=None)
    for split, prefix, n in ((train, "train", 60000), (test, "t10k", 10000)):
        assert split.x.shape == (n, 28, 28, 1) and split.x.dtype == np.uint8
        assert split.y.shape == (n,) and split.y.dtype == np.int32
        assert fingerprints(split.x, split.y) == fingerprints(*reference(mnist_dir, prefix))


def test_scale_and_standardize_match_float64_numpy(mnist_data_dir):
    raw_train, raw_test = data.load("mnist", data_dir=mnist_data_dir, normalize=None)
    test = data.load("mnist", split="test", data_dir=mnist_data_dir)
    assert test.x.dtype == np.float32 and test.x.min() == 0.0 and test.x.max() == 1.0
    np.testing.assert_allclose(test.x, raw_test.x / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(test.y, raw_test.y)

    # Standardization uses the train split's statistics, even when only "test" is asked for.
    standardized = data.load("mnist", split="test", data_dir=mnist_data_dir, normalize="standardize")
    mean, std = (raw_train.x / 255.0).mean(), (raw_train.x / 255.0).std()
    np.testing.assert_allclose(standardized.x, (raw_test.x / 255.0 - mean) / std, rtol=0, atol=1e-5)


def test_loading_is_deterministic_and_slices_follow_tfds(mnist_data_dir):
    first = data.load("mnist", split="train[:1000]", data_dir=mnist_data_dir)
    again = data.load("mnist", split="train[:1000]", data_dir=mnist_data_dir)
    whole = data.load("mnist", split="train", data_dir=mnist_data_dir)
    assert first.x.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.x, whole.x[:1000])
    np.testing.assert_array_equal(first.y, whole.y[:1000])


def test_a_loaded_split_is_read_again_without_tensorflow(mnist_data_dir, monkeypatch):
    expected = data.load("mnist", split="test", data_dir=mnist_data_dir)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    again = data.load("mnist", split="test", data_dir=mnist_data_dir)
    np.testing.assert_array_equal(again.x, expected.x)


# ---------------------------------------------------------------------------------------------
# Errors


def copy_of(mnist_dir, tmp_path, drop=None, truncate=None):
    folder = tmp_path / "mnist-files"
    folder.mkdir()
    for name in FILES:
        if name == drop:
            continue
        if name == truncate:
            (folder / name).write_bytes((mnist_dir / name).read_bytes()[:1000])
        else:
            shutil.copy(mnist_dir / name, folder / name)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)'.*nowhere' given for 'mnist' does not exist.*"
                                                r"train-images-idx3-ubyte.gz \(from https://"):
        data.load("mnist", data_dir=tmp_path / "cache", manual_dir=tmp_path / "nowhere")


def test_missing_file(tmp_path, mnist_dir):
    folder = copy_of(mnist_dir, tmp_path, drop="t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"^t10k-labels-idx1-ubyte.gz missing from .*mnist-files.*"
                                                r"Get t10k-labels-idx1-ubyte.gz \(from https://\S+\)\.$"):
        data.load("mnist", data_dir=tmp_path / "cache", manual_dir=folder)


def test_corrupt_file_is_named(tmp_path, mnist_dir):
    folder = copy_of(mnist_dir, tmp_path, truncate="train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=r"^train-labels-idx1-ubyte.gz in .*mnist-files is corrupt or "
                                         r"incomplete.*Download it again \(train-labels-idx1-ubyte.gz "):
        data.load("mnist", data_dir=tmp_path / "cache", manual_dir=folder)
    with pytest.raises(FileNotFoundError, match="is not prepared"):  # nothing half-prepared is used
        data.load("mnist", data_dir=tmp_path / "cache", download=False)


def test_unknown_name_suggests_close_ones(tmp_path):
    with pytest.raises(ValueError, match=r"no data set named 'mnits'.*Did you mean 'mnist'"):
        data.load("mnits", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"Did you mean 'fashion_mnist'"):
        data.info("fashionmnist")


def test_unknown_split(mnist_data_dir):
    with pytest.raises(ValueError, match=r"cannot read split 'tset' of 'mnist' \(splits: \['test', 'train'\]\)"):
        data.load("mnist", split="tset", data_dir=mnist_data_dir)


def test_data_sets_it_cannot_stack_are_refused_before_any_download(tmp_path):
    with pytest.raises(ValueError, match=r"'imagenette' has inputs of varying shape \(None, None, 3\)"):
        data.info("imagenette", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'coco' has no single \(input, label\) pair"):
        data.load("coco", data_dir=tmp_path)


def test_missing_dependencies_say_what_to_install(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"needs `tensorflow`.*pip install 'funcnet\[data\]'"):
        data.load("mnist", data_dir=tmp_path, manual_dir=mnist_dir)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"needs `tensorflow_datasets`.*pip install 'funcnet\[data\]'"):
        data.info("mnist")


def test_offline_without_files_fails_fast_with_instructions(tmp_path, monkeypatch):
    def unreachable(address, timeout=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ConnectionError, match=r"(?s)storage.googleapis.com is unreachable.*Without internet, put "
                                              r"t10k-images-idx3-ubyte.gz \(from .*manual_dir="):
        data.load("mnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'mnist' is not prepared in .*download=False"):
        data.load("mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"normalize": "minmax"}, r"`normalize` must be one of \('scale', 'standardize', None\), got 'minmax'"),
    ({"dtype": np.int32}, r"`dtype` must be a floating dtype, got int32"),
    ({"split": []}, r"`split` must name at least one split"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("mnist", **kwargs)
