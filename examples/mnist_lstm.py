"""Example 7: an LSTM on MNIST, reading each image as 28 steps of 28 pixels (one row per step).

The Keras / PyTorch "RNN on MNIST" tutorial: ``LSTM(128)`` over the rows, its last state into
``Dense(10)``, Adam (here with a cosine decay of the learning rate), sparse categorical
cross-entropy on integer labels. Run ``python examples/mnist_lstm.py`` (``--data-dir
path/to/mnist-files`` offline).
"""

import argparse
import math
import time

import jax
import optax

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=2e-3, help="the learning rate it starts from")
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder with the original MNIST files (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

train, test = data.load("mnist", manual_dir=args.data_dir, data_dir=args.cache_dir)
x_train, y_train = train.x[: args.train_size], train.y[: args.train_size]

model = fn.Sequential([
    fn.Reshape((28, 28)),                  # (N, 28, 28, 1) -> (N, 28 steps, 28 features)
    fn.LSTM(128),                          # -> (N, 128): the state after the last row
    fn.Dense(10),
])
_, params, state = model.init(jax.random.key(0), (None, 28, 28, 1))
print(fn.summary(model, (None, 28, 28, 1)))

steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
started = time.perf_counter()
result = fn.fit(model, params, state, x_train, y_train,
                loss="sparse_categorical_crossentropy", optimizer="adam",
                learning_rate=optax.cosine_decay_schedule(args.lr, steps),
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)
print(f"trained in {time.perf_counter() - started:.0f}s")

scores = fn.evaluate(model, result.params, result.state, test.x, test.y,
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
