"""Example 4: a CNN on MNIST trained with SGD (lr 0.01, momentum 0.9, batch 64).

The PyTorch-tutorial style network Conv32-MaxPool-Conv64-MaxPool-Dense64-Dense10, trained with
plain momentum SGD, here an optax optimizer passed to ``fit`` as it is. Run
``python examples/mnist_cnn_sgd.py`` (``--data-dir path/to/mnist-files`` offline).
"""

import argparse

import jax
import optax

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder with the original MNIST files (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

train, test = data.load("mnist", manual_dir=args.data_dir, data_dir=args.cache_dir)

model = fn.Sequential([
    fn.Conv2D(32, 3, activation="relu"),
    fn.MaxPool2D(2),
    fn.Conv2D(64, 3, activation="relu"),
    fn.MaxPool2D(2),
    fn.Flatten(),                          # (N, 5, 5, 64) -> (N, 1600)
    fn.Dense(64, activation="relu"),
    fn.Dense(10),
])
_, params, state = model.init(jax.random.key(0), (None, 28, 28, 1))
print(fn.summary(model, (None, 28, 28, 1)))

result = fn.fit(model, params, state, train.x[: args.train_size], train.y[: args.train_size],
                loss="sparse_categorical_crossentropy", optimizer=optax.sgd(0.01, momentum=0.9),
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)

scores = fn.evaluate(model, result.params, result.state, test.x, test.y,
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
