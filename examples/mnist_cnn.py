"""Example 3: a CNN on MNIST, Conv32-MaxPool-Conv64-MaxPool-Conv64-Flatten-Dense64-Dense10.

The TensorFlow "convolutional neural network" tutorial's stack: 3x3 kernels with valid padding,
relu, Adam, sparse categorical cross-entropy on integer labels. Run
``python examples/mnist_cnn.py`` (``--data-dir path/to/mnist-files`` offline).
"""

import argparse

import jax

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder with the original MNIST files (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

train, test = data.load("mnist", manual_dir=args.data_dir, data_dir=args.cache_dir)

model = fn.Sequential([
    fn.Conv2D(32, 3, activation="relu"),   # (N, 28, 28, 1) -> (N, 26, 26, 32); padding="VALID"
    fn.MaxPool2D(2),                       # -> (N, 13, 13, 32)
    fn.Conv2D(64, 3, activation="relu"),   # -> (N, 11, 11, 64)
    fn.MaxPool2D(2),                       # -> (N, 5, 5, 64)
    fn.Conv2D(64, 3, activation="relu"),   # -> (N, 3, 3, 64)
    fn.Flatten(),                          # -> (N, 576)
    fn.Dense(64, activation="relu"),
    fn.Dense(10),
])
_, params, state = model.init(jax.random.key(0), (None, 28, 28, 1))
print(fn.summary(model, (None, 28, 28, 1)))

result = fn.fit(model, params, state, train.x[: args.train_size], train.y[: args.train_size],
                loss="sparse_categorical_crossentropy", optimizer="adam",
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)

scores = fn.evaluate(model, result.params, result.state, test.x, test.y,
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
