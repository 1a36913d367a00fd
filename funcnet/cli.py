"""The ``funcnet`` command: ``funcnet train mnist --model cnn``.

::

    funcnet train mnist --model mlp                                  # downloads MNIST once
    funcnet train mnist --model cnn --data-dir path/to/mnist-files   # offline: the original files
    python -m funcnet train fashion_mnist --model cnn --epochs 5

It loads the data set with :mod:`funcnet.data`, trains one of the recipes below with
:func:`funcnet.training.fit`, prints progress and the test accuracy, and writes to ``--out``:
``checkpoint/`` (parameters, layer state and the architecture, by :mod:`funcnet.checkpoint`),
``curves.png`` (the training curves) and ``history.json`` (every logged value per epoch).

Every argument and path is checked before any data is loaded (:mod:`funcnet._cli_checks`), so a
mistake costs seconds, not a training run. Each error is one line on stderr that says what to do
(``--debug`` adds the traceback); the exit status is 2 for a malformed command line, 1 for the rest.

The recipes (Adam, a short linear warm-up then cosine decay of the learning rate) were chosen to
train MNIST comfortably past 97.5% (MLP) and 98.8% (CNN) test accuracy in a minute or two on two
CPU cores, and 98.5% (LSTM over the image rows, 98.8% measured) in about three. The CNN uses strided convolutions
rather than max pooling: the same accuracy for a fraction of the compute on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple, NoReturn

from funcnet._cli_checks import CommandError, check_cache_dir, check_data_dir, check_out

__all__ = ["RECIPES", "Recipe", "build_model", "main"]


class Recipe(NamedTuple):
    """Training defaults of one model, overridable from the command line."""

    epochs: int
    batch_size: int
    learning_rate: float
    description: str


RECIPES = {
    "mlp": Recipe(6, 128, 2e-3, "Flatten - Dense(512, relu) - Dense(classes)"),
    "cnn": Recipe(5, 128, 3e-3, "Conv2D(16, 5x5, stride 2, relu) - Conv2D(32, 3x3, stride 2, relu) - Flatten "
                               "- Dense(128, relu) - Dense(classes)"),
    "lstm": Recipe(8, 128, 2e-3, "Reshape(rows as steps) - LSTM(128) - Dense(classes)"),
}


def build_model(name: str, num_classes: int, image_shape: Sequence[int] | None = None):
    """The recipe's model for ``num_classes`` outputs (logits).

    The MLP and CNN take images of any shape; the LSTM reads an image ``(H, W, C)`` as ``H`` steps
    of ``W * C`` features, so it is built for ``image_shape`` (required for it).
    """
    import funcnet as fn

    if name == "mlp":
        return fn.serial(fn.Flatten(), fn.Dense(512, activation="relu"), fn.Dense(num_classes))
    if name == "cnn":
        return fn.serial(
            fn.Conv2D(16, 5, strides=2, padding="SAME", activation="relu"),   # (N, H/2, W/2, 16)
            fn.Conv2D(32, 3, strides=2, padding="SAME", activation="relu"),   # (N, H/4, W/4, 32)
            fn.Flatten(),
            fn.Dense(128, activation="relu"),
            fn.Dense(num_classes),
        )
    if name == "lstm":
        if image_shape is None or len(image_shape) != 3:
            raise ValueError(f"the lstm recipe reads images (H, W, C) row by row: give image_shape, got "
                             f"{image_shape!r}.")
        rows, width, channels = image_shape
        return fn.serial(fn.Reshape((rows, width * channels)),                # (N, H steps, W * C features)
                         fn.LSTM(128), fn.Dense(num_classes))
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(RECIPES)}.")


class _Parser(argparse.ArgumentParser):
    """argparse, with each usage error on one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"funcnet: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="funcnet", description="funcnet: functional neural networks on JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    train = commands.add_parser(
        "train", help="train a model on an image classification data set and report its test accuracy",
        description="Train a model on a TFDS image classification data set (mnist, fashion_mnist, kmnist, "
        "cifar10, ...), print its test accuracy and save the parameters and training curves.")
    train.add_argument("dataset", help="a TFDS data set name, e.g. mnist")
    train.add_argument("--model", choices=sorted(RECIPES), default="cnn", help="the model recipe (default: cnn)")
    train.add_argument("--epochs", type=_positive_int, help="epochs (default: the recipe's)")
    train.add_argument("--batch-size", type=_positive_int, help="examples per step (default: the recipe's)")
    train.add_argument("--lr", type=_positive_float, help="peak learning rate (default: the recipe's)")
    train.add_argument("--data-dir", help="a folder with the data set's original files, to prepare it with no "
                       "network (for MNIST: train-images-idx3-ubyte.gz and the three others)")
    train.add_argument("--cache-dir", help="where TFDS keeps prepared data sets (default: TFDS's, "
                       "~/tensorflow_datasets)")
    train.add_argument("--out", help="output folder (default: runs/<dataset>-<model>)")
    train.add_argument("--seed", type=_seed, default=0, help="seed of the initialisation and shuffling (default: 0)")
    train.add_argument("--validation-split", type=float, default=0.0,
                       help="fraction of the training examples held out for validation curves (default: 0)")
    train.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    train.add_argument("--debug", action="store_true", help="on an error, show the whole traceback")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _check_arguments(args: argparse.Namespace) -> str:
    """Checks every path and the data set before any work; returns the output folder.

    Raises:
        CommandError: a path that cannot serve its purpose.
        ValueError: an unknown data set, version or configuration.
    """
    from funcnet import data

    out = args.out or os.path.join("runs", f"{args.dataset}-{args.model}")
    check_cache_dir(args.cache_dir)
    described = data.info(args.dataset, data_dir=args.cache_dir)
    check_data_dir(args.data_dir and os.path.expanduser(args.data_dir), described.files)
    check_out(out)
    return out


def train(args: argparse.Namespace) -> int:
    """``funcnet train``: returns the exit status."""
    import jax
    import optax

    import funcnet as fn
    from funcnet import checkpoint, data
    from funcnet.training import evaluate, fit, plot_history

    recipe = RECIPES[args.model]
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    lr = args.lr or recipe.learning_rate
    started = time.perf_counter()
    out = _check_arguments(args)

    print(f"Loading {args.dataset}" + (f" (original files from {args.data_dir})" if args.data_dir else "") + " ...",
          flush=True)
    train_split, test_split = data.load(args.dataset, split=("train", "test"), data_dir=args.cache_dir,
                                        manual_dir=args.data_dir)
    described = data.info(args.dataset, data_dir=args.cache_dir)
    print(f"  train {train_split.x.shape}, test {test_split.x.shape}, {described.num_classes} classes "
          f"({time.perf_counter() - started:.1f}s)")

    model = build_model(args.model, described.num_classes, train_split.x.shape[1:])
    input_shape = (None, *train_split.x.shape[1:])
    key_init, key_fit = jax.random.split(jax.random.key(args.seed))
    _, params, state = model.init(key_init, input_shape)
    print(f"\nModel '{args.model}': {recipe.description}")
    print(fn.summary(model, input_shape))

    n_train = round(len(train_split.x) * (1 - args.validation_split))
    steps = epochs * math.ceil(n_train / batch_size)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps)
    print(f"\nTraining: {epochs} epochs, batch {batch_size}, Adam, peak learning rate {lr:g} "
          f"(warm-up, cosine decay), on {jax.default_backend().upper()}")
    verbose = 2 if args.quiet or not sys.stderr.isatty() else 1
    trained_at = time.perf_counter()
    result = fit(model, params, state, train_split.x, train_split.y, loss="sparse_categorical_crossentropy",
                 optimizer="adam", learning_rate=schedule, epochs=epochs, batch_size=batch_size,
                 metrics=["accuracy"], key=key_fit, validation_split=args.validation_split, verbose=verbose)
    train_seconds = time.perf_counter() - trained_at
    scores = evaluate(model, result.params, result.state, test_split.x, test_split.y,
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    accuracy = float(scores["accuracy"])
    correct = round(accuracy * len(test_split.y))

    summary = {"dataset": args.dataset, "model": args.model, "epochs": epochs, "batch_size": batch_size,
               "learning_rate": lr, "seed": args.seed, "test_accuracy": accuracy, "test_loss": float(scores["loss"]),
               "train_seconds": train_seconds}
    saved = checkpoint.save(os.path.join(out, "checkpoint"), {"params": result.params, "state": result.state},
                            metadata=summary, model=model, input_shape=input_shape, overwrite=True)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump({"summary": summary, "history": _jsonable(result.history)}, f, indent=1)
    curves = _plot(plot_history, result.history, os.path.join(out, "curves.png"))

    print(f"\nTest accuracy: {accuracy:.4f} ({correct}/{len(test_split.y)}), test loss {float(scores['loss']):.4f}")
    print(f"Trained in {train_seconds:.1f}s ({time.perf_counter() - started:.1f}s in all).")
    print(f"Saved: {saved} (parameters and architecture), {os.path.join(out, 'history.json')}"
          + (f", {curves}" if curves else ""))
    return 0


def _jsonable(history: dict) -> dict:
    import numpy as np

    return {k: [np.asarray(v).tolist() for v in values] for k, values in history.items()}


def _plot(plot_history, history: dict, path: str) -> str | None:
    try:
        return plot_history(history, path)
    except ImportError as error:
        print(f"(no curves: {error})", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``funcnet`` command's entry point; returns the exit status.

    Exit status 0 on success; 2 for a malformed command line (unknown option, a value of the wrong
    type or range), after one line on stderr; 1 for every other error, after one line on stderr
    saying what to do (the traceback too with ``--debug``).
    """
    args = _parser().parse_args(argv)
    if args.command != "train":  # pragma: no cover - argparse rejects other commands
        return 2
    if not 0 <= args.validation_split < 1:
        print(f"funcnet: error: --validation-split must be in [0, 1), got {args.validation_split:g} "
              "(see `funcnet train --help`)", file=sys.stderr)
        return 2
    try:
        return train(args)
    except KeyboardInterrupt:
        print("funcnet: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every error reaches the user as one line; --debug shows where it arose
        if args.debug:
            raise
        print(f"funcnet: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _one_line(error: Exception) -> str:
    """The error's message on one line; the type's name where the message alone would not say what broke."""
    text = " ".join(str(error).split())
    if isinstance(error, (CommandError, ValueError, FileNotFoundError, ConnectionError, ImportError)) and text:
        return text
    return f"{type(error).__name__}: {text or 'no message'} (run again with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
