"""Data sets from tensorflow-datasets (TFDS), as NumPy arrays ready for a model.

::

    from funcnet import data

    train, test = data.load("mnist")                        # downloads once, then reads the cache
    train, test = data.load("mnist", manual_dir="~/mnist")  # offline: a folder with the original files
    train.x.shape, train.x.dtype                            # (60000, 28, 28, 1) float32, in [0, 1]
    train.y.shape, train.y.dtype                            # (60000,) int32

Any supervised TFDS data set whose input is a fixed-shape array loads this way: the image
classification ones (``mnist``, ``fashion_mnist``, ``kmnist``, ``cifar10``, ``cifar100``,
``svhn_cropped``, ...) and tabular ones alike. Images are ``(N, height, width, channels)``
(channels-last, as every funcnet layer expects), labels are ``int32`` class indices.

TFDS prepares a data set once into ``data_dir`` (TFDS's default, ``~/tensorflow_datasets``, when
not given) and reads it from there afterwards. Without internet, hand it the data set's original
files with ``manual_dir``: they are checked against TFDS's registered checksums, so a truncated
or corrupt file is named in the error instead of yielding wrong data.

Each split read is also kept as a NumPy copy beside TFDS's files, verified against the size and
SHA-256 recorded with it each time it is read; a damaged copy is reported, discarded and rebuilt.

Preparing and reading need TensorFlow (``pip install 'funcnet[data]'``); it is imported only
when a data set is loaded, never by ``import funcnet``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import socket
import urllib.parse
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from funcnet._quiet_tfds import quiet_preparation, quiet_tfds_logs
from funcnet._split_cache import read_cached, write_cached

__all__ = ["DatasetInfo", "Split", "info", "load", "prepare"]

NORMALIZE = ("scale", "standardize", None)
_INSTALL = "pip install 'funcnet[data]'"


class Split(NamedTuple):
    """One split of a data set: inputs and integer labels, aligned on the first axis.

    Attributes:
        x: inputs, ``(N, height, width, channels)`` for images (``(N, features)`` for vectors).
        y: labels, ``(N,)`` int32 class indices.
    """

    x: np.ndarray
    y: np.ndarray


class DatasetInfo(NamedTuple):
    """What a data set holds, read from its TFDS builder without loading any example.

    Attributes:
        name: the TFDS name.
        input_shape: the shape of one input, without the batch axis (``(28, 28, 1)``).
        num_classes: the number of label classes.
        class_names: one name per class (``("0", ..., "9")`` for MNIST).
        splits: examples per split, ``{"train": 60000, "test": 10000}``; empty when TFDS does
            not know them before the data set is prepared.
        files: the original files TFDS downloads, ``{file name: url}``; ``manual_dir`` must hold
            them all.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    splits: dict[str, int]
    files: dict[str, str]


# ---------------------------------------------------------------------------------------------
# Public functions


@quiet_tfds_logs()
def info(name: str, *, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Describes a supervised data set from its TFDS builder; nothing is downloaded.

    Raises:
        ValueError: ``name`` is not in the TFDS catalogue (the message suggests close names), names
            a version or configuration TFDS does not have (the message lists those it has), or
            the data set has no fixed-shape ``(input, label)`` pair.
    """
    return _describe(_builder(name, data_dir))


@quiet_tfds_logs()
def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> str:
    """Makes sure the data set is prepared in ``data_dir``; returns the folder it lives in.

    Does nothing when it is already there. Otherwise it prepares it from ``manual_dir`` when
    given (no network), else downloads the original files (``download=True``), showing one line
    and one progress bar on stderr in place of TFDS's messages.

    Args:
        name: the TFDS name (``"mnist"``, ``"cifar10"``, ``"mnist:3.0.1"``).
        data_dir: where TFDS keeps prepared data sets; TFDS's default when None.
        manual_dir: a folder holding the data set's original files (see ``info(name).files``).
        download: whether to download the files when neither the cache nor ``manual_dir`` has them.

    Raises:
        FileNotFoundError: ``manual_dir`` does not exist or lacks a file (the message names them
            and where to get them), or the data set is not prepared and ``download=False``.
        ValueError: a file in ``manual_dir`` fails TFDS's checksum (the message names the file).
        ConnectionError: downloading was needed but the servers cannot be reached.
        ImportError: TensorFlow is not installed.
    """
    tfds = _tfds()
    builder = _builder(name, data_dir)
    if builder.is_prepared():
        return os.fspath(builder.data_path)
    described = _describe(builder)
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
        _check_manual_dir(described, manual_dir)
    elif not download:
        raise FileNotFoundError(
            f"{name!r} is not prepared in {builder.data_dir}, and download=False. Pass manual_dir= (a "
            f"folder holding {_file_list(described)}) or allow downloading.")
    else:
        _check_reachable(described)
    _require("tensorflow")
    download_manager = importlib.import_module("tensorflow_datasets.core.download.download_manager")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    line = (f"funcnet: preparing {described.name} once from the original files in {manual_dir}" if manual_dir
            else f"funcnet: downloading the original files of {described.name} and preparing it once")
    try:
        with quiet_preparation(tfds, line):
            builder.download_and_prepare(download_config=config)
    except download_manager.NonMatchingChecksumError as error:
        bad = [f for f in described.files if f in str(error)] or ["a file"]
        where = manual_dir or "TFDS's downloads folder"
        raise ValueError(
            f"{', '.join(bad)} in {where} is corrupt or incomplete: its size or sha256 checksum "
            f"does not match the original. Download it again ({_file_list(described, only=bad)}) "
            "and replace it.") from error
    except (OSError, tfds.download.DownloadError) as error:
        if builder.is_prepared():  # another process prepared it meanwhile
            return os.fspath(builder.data_path)
        if manual_dir is not None:
            raise
        raise ConnectionError(f"could not download {name!r}: {error}\n{_offline_hint(described)}") from error
    return os.fspath(builder.data_path)


@quiet_tfds_logs()
def load(
    name: str,
    *,
    split: str | Sequence[str] = ("train", "test"),
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
    normalize: str | None = "scale",
    dtype: Any = np.float32,
) -> Split | tuple[Split, ...]:
    """Loads a supervised data set into NumPy arrays, preparing it first if needed.

    Args:
        name: the TFDS name (``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``, ``"cifar10"``, ...).
        split: one split or several, in TFDS's split syntax (``"train"``, ``"test"``,
            ``"train[:90%]"``).
        data_dir: where TFDS keeps prepared data sets; TFDS's default when None.
        manual_dir: a folder holding the original files, for use without internet (see
            :func:`prepare`).
        download: whether to download the original files when they are needed.
        normalize: ``"scale"`` divides integer inputs by their type's maximum (255 for 8-bit
            images), giving values in [0, 1]; ``"standardize"`` then subtracts the per-channel
            (last axis) mean and divides by the standard deviation, both computed on the
            ``"train"`` split so that every split gets the same transform; ``None`` keeps the
            stored values and dtype.
        dtype: the floating dtype of ``x`` when normalizing.

    Returns:
        A :class:`Split` ``(x, y)`` for one split, or a tuple of them for several, in order:
        ``x`` is ``(N, *info(name).input_shape)``, ``y`` is ``(N,)`` int32.

    Raises:
        ValueError: bad ``normalize``/``dtype``, an unknown name or split, or a corrupt file.
        FileNotFoundError, ConnectionError, ImportError: see :func:`prepare`.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"load: `normalize` must be one of {NORMALIZE}, got {normalize!r}.")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"load: `dtype` must be a floating dtype, got {np.dtype(dtype)}.")
    names = [split] if isinstance(split, str) else list(split)
    if not names:
        raise ValueError("load: `split` must name at least one split.")
    builder = _builder(name, data_dir)
    _describe(builder)  # a supervised classification data set with fixed-shape inputs
    if not builder.is_prepared():
        prepare(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
        builder = _builder(name, data_dir)  # a builder made before preparing knows no splits
    raw = [_read(builder, s) for s in names]
    if normalize is not None:
        train_x = None
        if normalize == "standardize":
            train_x = raw[names.index("train")].x if "train" in names else _read(builder, "train").x
        raw = [Split(_normalize(s.x, normalize, dtype, train_x), s.y) for s in raw]
    return raw[0] if isinstance(split, str) else tuple(raw)


# ---------------------------------------------------------------------------------------------
# Helpers


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"funcnet.data needs `{module}` to prepare and read TFDS data sets, and it is "
                          f"not installed: {_INSTALL}") from error


def _tfds() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    return _require("tensorflow_datasets")


def _builder(name: str, data_dir: str | os.PathLike | None) -> Any:
    tfds = _tfds()
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a TFDS data set name such as 'mnist', got {name!r}.")
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError as error:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False), n=3,
                                        cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"no data set named {name!r} in the TFDS catalogue.{hint} "
                         "`tfds.list_builders()` lists them all.") from error
    except (AssertionError, ValueError) as error:  # TFDS asserts on an unknown version
        raise ValueError(_variant_message(tfds, name, error)) from error


def _variant_message(tfds: Any, name: str, error: Exception) -> str:
    """What is wrong with the version or configuration in ``name``, and which ones exist."""
    base, _, version = name.partition(":")
    base, _, config = base.partition("/")
    cls = tfds.builder_cls(base)
    versions = [str(cls.VERSION)] + [str(v) for v in getattr(cls, "SUPPORTED_VERSIONS", ())]
    configs = [c.name for c in getattr(cls, "BUILDER_CONFIGS", None) or ()]
    if version and version not in versions:
        return (f"no version {version} of {base!r} in this TFDS (it has {', '.join(versions)}): write {base!r} "
                f"for the newest, or {base}:{versions[0]}.")
    if config and config not in configs:
        known = f"it has {', '.join(configs)}" if configs else "it has no configurations"
        return f"no configuration {config!r} of {base!r} in TFDS ({known})."
    return f"TFDS cannot build {name!r}: {str(error).splitlines()[0]}"


def _describe(builder: Any) -> DatasetInfo:
    """Checks that ``builder`` is a classification data set with fixed-shape inputs."""
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{builder.name!r} has no single (input, label) pair (supervised_keys: {keys}); "
                         "funcnet.data loads supervised classification data sets.")
    features = builder.info.features
    label = features[keys[1]]
    if getattr(label, "num_classes", None) is None:
        raise ValueError(f"{builder.name!r} has labels of type {type(label).__name__}, not class indices; "
                         "funcnet.data loads classification data sets (a ClassLabel target).")
    shape = tuple(features[keys[0]].shape)
    if any(d is None for d in shape):
        raise ValueError(f"{builder.name!r} has inputs of varying shape {shape}; funcnet.data stacks "
                         "inputs into one array, so it needs a fixed shape (resize with tf.data first).")
    splits = {str(k): v.num_examples for k, v in builder.info.splits.items()}
    files = {u.filename: url for url, u in (builder.url_infos or {}).items() if u.filename}
    return DatasetInfo(builder.name, shape, int(label.num_classes), tuple(label.names), splits, files)


def _read(builder: Any, split: str) -> Split:
    """Reads a whole split, through a verified NumPy copy kept beside TFDS's files (no TensorFlow
    needed the next time)."""
    folder = os.path.join(os.fspath(builder.data_path), "funcnet-numpy")
    cached = read_cached(folder, split, builder.name)
    if cached is not None:
        return Split(*cached)
    split_arrays = _read_tfds(builder, split)
    write_cached(folder, split, split_arrays.x, split_arrays.y)
    return split_arrays


def _read_tfds(builder: Any, split: str) -> Split:
    _require("tensorflow")
    tfds = _tfds()
    try:
        dataset = builder.as_dataset(split=split, batch_size=-1, as_supervised=True, shuffle_files=False)
    except ValueError as error:
        raise ValueError(f"cannot read split {split!r} of {builder.name!r} (splits: "
                         f"{sorted(builder.info.splits)}): {error}") from error
    x, y = tfds.as_numpy(dataset)
    return Split(np.asarray(x), np.asarray(y).astype(np.int32))


def _normalize(x: np.ndarray, how: str, dtype: Any, train_x: np.ndarray | None) -> np.ndarray:
    def scaled(a: np.ndarray) -> np.ndarray:
        if np.issubdtype(a.dtype, np.integer):
            return a.astype(dtype) / np.asarray(np.iinfo(a.dtype).max, dtype)
        return a.astype(dtype)

    x = scaled(x)
    if how == "standardize":
        reference = scaled(train_x).astype(np.float64)
        axes = tuple(range(reference.ndim - 1))
        mean, std = reference.mean(axes), reference.std(axes)
        x = ((x - mean.astype(dtype)) / np.maximum(std, 1e-12).astype(dtype)).astype(dtype)
    return x


def _file_list(described: DatasetInfo, only: Sequence[str] | None = None) -> str:
    files = {k: v for k, v in described.files.items() if only is None or k in only}
    return ", ".join(f"{f} (from {url})" for f, url in files.items()) or "the data set's original files"


def _offline_hint(described: DatasetInfo) -> str:
    return (f"Without internet, put {_file_list(described)} in one folder and pass it as "
            "manual_dir= (`--data-dir` on the command line).")


def _check_manual_dir(described: DatasetInfo, manual_dir: str) -> None:
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"the folder {manual_dir!r} given for {described.name!r} does not exist. "
                                f"It should hold {_file_list(described)}.")
    missing = [f for f in described.files if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing from {manual_dir!r}, which should hold the original files of "
            f"{described.name!r}. Get {_file_list(described, missing)}.")


def _check_reachable(described: DatasetInfo, timeout: float = 10.0) -> None:
    """Fails fast offline: TFDS itself retries for minutes before giving up."""
    for url in list(described.files.values())[:1]:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
        except OSError as error:
            raise ConnectionError(f"cannot download {described.name!r}: {parts.hostname} is unreachable "
                                  f"({error}).\n{_offline_hint(described)}") from error
