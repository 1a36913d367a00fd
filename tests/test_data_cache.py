"""funcnet's NumPy copy of a prepared split is verified (issue 11, item 8): a flipped bit, a
truncation or a replaced file is named in one line, discarded and rebuilt from TFDS."""

import hashlib
import json
import re
import sys
import types

import numpy as np
import pytest

from funcnet import data
from tests.mnist_cache import mnist_data_dir  # noqa: F401  (fixture)

X = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28, 1)
Y = np.array([3, 7], np.int32)


@pytest.fixture
def tfds_reads(tmp_path, monkeypatch):
    """A stand-in builder over ``tmp_path`` whose TFDS reads are counted (no TensorFlow)."""
    reads = []

    def read_tfds(builder, split):
        reads.append(split)
        return data.Split(X.copy(), Y.copy())

    monkeypatch.setattr(data, "_read_tfds", read_tfds)
    return types.SimpleNamespace(name="mnist", data_path=tmp_path), reads


def cache_files(builder):
    folder = builder.data_path / "funcnet-numpy"
    (record,) = folder.glob("*.json")
    return record, folder / json.loads(record.read_text())["file"]


def test_the_copy_is_recorded_beside_it_and_read_back(tfds_reads):
    builder, reads = tfds_reads
    first = data._read(builder, "train")
    again = data._read(builder, "train")
    assert reads == ["train"]
    np.testing.assert_array_equal(again.x, X)
    np.testing.assert_array_equal(again.y, Y)
    assert again.y.dtype == first.y.dtype == np.int32
    record, npz = cache_files(builder)
    content = npz.read_bytes()
    assert json.loads(record.read_text()) == {"file": npz.name, "size": len(content),
                                              "sha256": hashlib.sha256(content).hexdigest(), "split": "train"}
    assert [p.name for p in npz.parent.iterdir() if ".tmp" in p.name] == []


def flip_a_bit(record, npz):
    content = bytearray(npz.read_bytes())
    content[len(content) // 2] ^= 0x10
    npz.write_bytes(bytes(content))


def truncate(record, npz):
    npz.write_bytes(npz.read_bytes()[:-100])


def replace(record, npz):
    np.savez(npz, x=X[:1], y=Y[:1])  # a valid file, the wrong data


def replace_with_pickled(record, npz):
    np.save(npz.with_suffix(".tmp.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    npz.write_bytes(npz.with_suffix(".tmp.npy").read_bytes())


def garble_the_record(record, npz):
    record.write_text("{not json")


DAMAGE = {flip_a_bit: r"its SHA-256 does not match its record", truncate: r"\d+ bytes, its record says \d+",
          replace: r"(\d+ bytes, its record says \d+|its SHA-256 does not match its record)",
          replace_with_pickled: r"(\d+ bytes, its record says \d+|its SHA-256 does not match its record)",
          garble_the_record: r"its record is not valid JSON"}


@pytest.mark.parametrize("damage", DAMAGE, ids=[f.__name__ for f in DAMAGE])
def test_a_damaged_copy_is_named_discarded_and_rebuilt(tfds_reads, capsys, damage):
    builder, reads = tfds_reads
    data._read(builder, "train")
    record, npz = cache_files(builder)
    damage(record, npz)
    capsys.readouterr()

    rebuilt = data._read(builder, "train")
    np.testing.assert_array_equal(rebuilt.x, X)
    np.testing.assert_array_equal(rebuilt.y, Y)
    assert reads == ["train", "train"]
    err = capsys.readouterr().err
    named = npz if damage is not garble_the_record else record
    assert re.fullmatch(rf"funcnet: the NumPy copy of mnist 'train' at {re.escape(str(named))} is damaged "
                        rf"\({DAMAGE[damage]}\); discarded it, rebuilding it from TFDS's prepared files\.\n", err), err
    # The rebuilt copy is whole again: the next read uses it, silently.
    np.testing.assert_array_equal(data._read(builder, "train").x, X)
    assert reads == ["train", "train"]
    assert capsys.readouterr().err == ""


def test_a_copy_without_its_record_is_never_trusted(tfds_reads, capsys):
    builder, reads = tfds_reads
    data._read(builder, "test")
    record, npz = cache_files(builder)
    record.unlink()
    assert data._read(builder, "test").y.tolist() == Y.tolist()
    assert reads == ["test", "test"]
    assert capsys.readouterr().err == ""
    record, npz = cache_files(builder)
    assert sorted(p.name for p in npz.parent.iterdir()) == sorted([record.name, npz.name])


def test_a_flipped_bit_in_the_copy_of_real_mnist(mnist_data_dir, capsys):
    expected = data.load("mnist", split="test[:500]", data_dir=mnist_data_dir, normalize=None)
    folder = next(mnist_data_dir.glob("mnist/*/funcnet-numpy"))
    key = hashlib.sha256(b"test[:500]").hexdigest()[:16]
    record = json.loads((folder / f"{key}.json").read_text())
    npz = folder / record["file"]
    flip_a_bit(None, npz)
    capsys.readouterr()
    again = data.load("mnist", split="test[:500]", data_dir=mnist_data_dir, normalize=None)
    np.testing.assert_array_equal(again.x, expected.x)
    assert f"the NumPy copy of mnist 'test[:500]' at {npz} is damaged" in capsys.readouterr().err
    assert "tensorflow" in sys.modules
